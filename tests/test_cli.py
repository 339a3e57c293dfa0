"""The exit-code convention shared by every script: 0 ok, 1 runtime failure, 2 usage error."""

from __future__ import annotations

import pytest

from bps_vit.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parse_args, run_main


class _Usage(ValueError):
    pass


class _UsageFailure(RuntimeError):
    """A usage error that subclasses a failure class (as PublishArgumentError subclasses PublishError)."""


def _raise(error: BaseException):
    def body():
        raise error

    return body


def test_exit_codes_and_one_error_line(capsys):
    assert (EXIT_OK, EXIT_FAILURE, EXIT_USAGE) == (0, 1, 2)
    assert run_main(lambda: None) == 0
    assert run_main(lambda: 1) == 1
    assert run_main(_raise(_Usage("--x 3: must be even")), usage_errors=(_Usage,), failures=(OSError,)) == 2
    assert capsys.readouterr().err == "error: --x 3: must be even\n"
    assert run_main(_raise(OSError("disk full")), usage_errors=(_Usage,), failures=(OSError,)) == 1
    assert capsys.readouterr().err == "error: disk full\n"
    usage_first = run_main(_raise(_UsageFailure("bad flag")), usage_errors=(_UsageFailure,), failures=(RuntimeError,))
    assert usage_first == 2
    with pytest.raises(KeyError):  # anything unexpected is a bug: it keeps its traceback
        run_main(_raise(KeyError("x")), usage_errors=(_Usage,), failures=(OSError,))


def test_a_missing_config_file_is_a_usage_error(tmp_path, capsys):
    from dataclasses import dataclass

    @dataclass
    class Args:
        value: int = 1

    with pytest.raises(SystemExit) as exit_info:
        parse_args([Args], [str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2 and "missing.yaml does not exist" in capsys.readouterr().err
