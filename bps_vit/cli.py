"""Argument parsing shared by every script: `HfArgumentParser` dataclasses from a file and/or flags.

`python scripts/train.py configs/demo.yaml --num_train_epochs 2`: the YAML/JSON file gives the
defaults, flags after it override them (they are parsed after the file's values, and argparse
keeps the last), so a config stays reusable while one value is varied.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"error: config file {path} does not exist.")
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path} must hold a mapping of argument names to values.")
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
