"""Argument parsing shared by every script: `HfArgumentParser` dataclasses from a file and/or flags.

`python scripts/train.py configs/demo.yaml --num_train_epochs 2`: the YAML/JSON file gives the
defaults, flags after it override them (they are parsed after the file's values, and argparse
keeps the last), so a config stays reusable while one value is varied.

Every script exits with the same codes (README, "Exit codes"): 0 ok, 1 runtime failure (the
command was well formed but could not finish: unreadable data, network, a refused push), 2 usage
error (an unknown flag, a bad value, a missing file or folder named on the command line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _usage_exit(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(EXIT_USAGE)


def run_main(
    body: Callable[[], int | None],
    usage_errors: tuple[type[BaseException], ...] = (),
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a script's body; a usage error exits 2 and a runtime failure 1, each as one `error:` line (no traceback).

    `usage_errors` are checked first, so a usage subclass of a failure class still counts as usage.
    """
    try:
        code = body()
    except usage_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except failures as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if code is None else code


def _load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _usage_exit(f"config file {path} does not exist.")
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise _usage_exit(f"{path} must hold a mapping of argument names to values.")
    return data


def _as_flags(config: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = json.dumps(value)
        if isinstance(value, (list, tuple)):
            flags += [f"--{key}", *[str(v) for v in value]]
        else:
            flags += [f"--{key}", str(value)]
    return flags


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse into the dataclasses; an unknown key in the file or a bad flag stops with argparse's message."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix in CONFIG_SUFFIXES:
        argv = _as_flags(_load_config_file(Path(argv[0]))) + argv[1:]
    return tuple(parser.parse_args_into_dataclasses(args=argv))
