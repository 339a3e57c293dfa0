"""The test suite. A package, so that `tests.support` imports the same way under `make test`, under
`pytest tests/test_x.py` and from `bench/` (which puts the repository root on sys.path)."""
