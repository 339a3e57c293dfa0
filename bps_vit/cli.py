"""Argument parsing shared by every script: `HfArgumentParser` dataclasses from a file and/or flags.

`python scripts/train.py configs/demo.yaml --num_train_epochs 2`: the YAML/JSON file gives the
defaults, flags after it override them (they are parsed after the file's values, and argparse
keeps the last), so a config stays reusable while one value is varied.

Relative paths, in a config file as on the command line, are relative to the current folder (the
README's commands run from the repository root); a path that does not exist there but does beside
the config file is reported with both places.

Every script exits with the same codes (README, "Exit codes"): 0 ok, 1 runtime failure (the
command was well formed but could not finish: unreadable data, network, a refused push), 2 usage
error (an unknown flag or config key, a bad value, a missing file or folder named on the command
line), each as one `error:` line without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from .distributed import PeerLostError, process_group_teardown

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# Config keys that name an input path (checked as described in the module docstring).
INPUT_PATH_KEYS = ("data_dir", "config_name", "model", "images", "raw_dir")


class UsageError(SystemExit):
    """A bad command line or config file: one `error:` line on stderr, exit status 2."""

    def __init__(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        super().__init__(EXIT_USAGE)
        self.message = message

    def __str__(self) -> str:
        return self.message


_CTRL_C_SEEN = threading.Event()


@contextlib.contextmanager
def ctrl_c_remembered():
    """Ctrl-C raises KeyboardInterrupt as Python's default handler does, and is also remembered.

    A KeyboardInterrupt that lands while the interpreter runs a finalizer or a guarded callback is printed as
    "Exception ignored in ..." and dropped, and the run goes on as if Ctrl-C had never been pressed (seen here: a
    training interrupted just after a checkpoint finished all its epochs). Long loops call `raise_if_ctrl_c_seen`
    (training does after every step). Outside the main thread, where no handler can be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def remember(signum, frame):
        _CTRL_C_SEEN.set()
        raise KeyboardInterrupt

    _CTRL_C_SEEN.clear()
    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _CTRL_C_SEEN.clear()


def raise_if_ctrl_c_seen() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that an earlier one was swallowed for (see `ctrl_c_remembered`)."""
    if _CTRL_C_SEEN.is_set():
        _CTRL_C_SEEN.clear()
        raise KeyboardInterrupt


def run_main(
    body: Callable[[], int | None],
    usage_errors: tuple[type[BaseException], ...] = (),
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a script's body; a usage error exits 2 and a runtime failure 1, each as one `error:` line (no traceback).

    `usage_errors` are checked first, so a usage subclass of a failure class still counts as usage. Under a
    multi-process launch the body's process group is ended on every way out, success, error or Ctrl-C
    (`distributed.process_group_teardown`); a peer that died before the end is a runtime failure.
    """
    try:
        with process_group_teardown(), ctrl_c_remembered():
            code = body()
    except usage_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (*failures, PeerLostError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if code is None else code


def _load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist (looked at {path.resolve()}).")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except ValueError as err:  # json.JSONDecodeError and yaml.YAMLError's messages name line and column
        raise UsageError(f"{path} is not valid {path.suffix[1:].upper()}: {err}") from None
    except Exception as err:  # yaml.YAMLError does not derive from ValueError
        raise UsageError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of argument names to values.")
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


def _field_names(dataclass_types: Sequence[type]) -> list[str]:
    return sorted({name for cls in dataclass_types for name in cls.__dataclass_fields__})


def _check_config_keys(path: Path, config: dict[str, Any], dataclass_types: Sequence[type]) -> None:
    valid = _field_names(dataclass_types)
    unknown = [key for key in config if key not in valid]
    if unknown:
        guesses = {key: difflib.get_close_matches(key, valid, n=1, cutoff=0.75) for key in unknown}
        hint = "".join(f" Did you mean {close[0]} (for {key})?" for key, close in guesses.items() if close)
        raise UsageError(f"{path}: unknown key(s) {', '.join(unknown)}.{hint} Valid keys: {', '.join(valid)}.")


def _flags_given(argv: Sequence[str]) -> set[str]:
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def _apply_alternatives(path: Path, config: dict[str, Any], argv: Sequence[str],
                        dataclass_types: Sequence[type]) -> dict[str, Any]:
    """A flag beats the config's value of an alternative to it (`--model_name_or_path` drops the file's
    `config_name`): flags override the config, also where the file sets another key that would win over the flag.

    Each dataclass names its groups of mutually exclusive keys in `ALTERNATIVE_FLAGS`. Two of one group on the
    command line are refused: there is no order in which a user meant both.
    """
    given = _flags_given(argv)
    config = dict(config)
    for group in (g for cls in dataclass_types for g in getattr(cls, "ALTERNATIVE_FLAGS", ())):
        on_command_line = [key for key in group if key in given]
        if len(on_command_line) > 1:
            raise UsageError(f"--{on_command_line[0]} and --{on_command_line[1]} exclude each other: give one.")
        if not on_command_line:
            continue
        for key in group:
            if key != on_command_line[0] and config.get(key) not in (None, ""):
                print(f"note: --{on_command_line[0]} given, so {path}'s {key}: {config.pop(key)} is not used.",
                      file=sys.stderr)
    return config


def _check_config_paths(path: Path, config: dict[str, Any]) -> None:
    for key in INPUT_PATH_KEYS:
        value = config.get(key)
        if not isinstance(value, str) or Path(value).is_absolute() or Path(value).exists():
            continue
        beside = path.parent / value
        if beside.exists():
            raise UsageError(
                f"{path}: {key}: {value} does not exist relative to the current folder (looked at "
                f"{Path(value).resolve()}), but {beside} does. Relative paths are relative to the folder you run "
                "from: run from the repository root or give an absolute path."
            )


#: A script whose arguments take image paths too (predict) names them in its usage line.
POSITIONAL_USAGE = " [IMAGE_OR_FOLDER ...]"


def _hidden_in_short_help(cls: type) -> set[str]:
    """The fields a dataclass inherits from a library's arguments (the Trainer's ~150), less those it lists in
    `HELP_SHOWN_INHERITED` (train.py: the ~20 this project uses). `--help_all` shows them too."""
    library = {name for base in cls.__mro__ if base.__module__.split(".")[0] == "transformers"
               for name in base.__dict__.get("__annotations__", {})}
    own = {name for base in cls.__mro__ if base.__module__.split(".")[0] != "transformers"
           for name in base.__dict__.get("__annotations__", {})}
    return library - own - set(getattr(cls, "HELP_SHOWN_INHERITED", ()))


def build_parser(dataclass_types: Sequence[type], *, positional: bool = False, help_all: bool = False):
    """`HfArgumentParser` with a usage line that shows the config file (and image paths, with `positional`), help
    without repeats, and only the project's flags unless `help_all` (`--help_all`) when a dataclass inherits many."""
    from transformers import HfArgumentParser  # deferred: importers of cli's constants need not load transformers

    parser = HfArgumentParser(dataclass_types)
    parser.usage = "%(prog)s [CONFIG.yaml|CONFIG.json] [--flag value ...]" + (POSITIONAL_USAGE if positional else "")
    parser.description = (
        "Arguments come from an optional YAML/JSON config file (first argument) and flags after it, "
        "which override the file's values. Relative paths are relative to the current folder."
    )
    hidden = set() if help_all else set().union(*(_hidden_in_short_help(cls) for cls in dataclass_types))
    for action in parser._actions:
        flags = [s for s in action.option_strings if s.startswith("--no_")]
        if action.dest in hidden:
            action.help = argparse.SUPPRESS
        elif flags:
            action.help = f"Turn off --{flags[0][len('--no_'):]}.%(default).0s"
        elif action.help and "(default" in action.help:
            action.help += "%(default).0s"  # the text says its default: no second "(default: ...)"
    if hidden:
        parser.epilog = f"{len(hidden)} more options (the Trainer's) are accepted: --help_all lists every one."
    return parser


def _did_you_mean(parser, unknown: Sequence[str]) -> str:
    """' (did you mean --output_dir?)' for misspelled flags, else ''. A flag is suggested when difflib finds it close
    (--ouput_dir, --num_epochs) or when it contains the unknown name (--batch_size: --per_device_train_batch_size)."""
    flags = list(dict.fromkeys("--" + flag[2:].replace("-", "_") for action in parser._actions
                               for flag in action.option_strings if flag.startswith("--")))  # --output-dir too
    guesses = {}
    for arg in dict.fromkeys(a.split("=", 1)[0] for a in unknown if a.startswith("--")):
        close = difflib.get_close_matches(arg, flags, n=2, cutoff=0.75)
        containing = [flag for flag in flags if len(arg) > 5 and arg[2:] in flag and flag not in close]
        if close or containing:
            guesses[arg] = " or ".join([*close, *containing][:2])
    if len(guesses) == 1 and len(unknown) <= 2:
        return f" (did you mean {next(iter(guesses.values()))}?)"
    return "".join(f" ({arg}: did you mean {guess}?)" for arg, guess in guesses.items())


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None, *,
               allow_positional: bool = False) -> tuple:
    """Parse into the dataclasses. With `allow_positional`, leftover non-flag arguments are returned last.

    Unknown keys in the file, unknown flags, a config file that is not first, and flags argparse
    rejects all end in one `error:` line and exit status 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help_all" in argv:
        build_parser(dataclass_types, positional=allow_positional, help_all=True).print_help()
        raise SystemExit(EXIT_OK)
    parser = build_parser(dataclass_types, positional=allow_positional)
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix in CONFIG_SUFFIXES:
        path = Path(argv[0])
        config = _load_config_file(path)
        _check_config_keys(path, config, dataclass_types)
        _check_config_paths(path, config)
        config = _apply_alternatives(path, config, argv[1:], dataclass_types)
        argv = _as_flags(config) + argv[1:]
    else:
        _apply_alternatives(Path("."), {}, argv, dataclass_types)  # no file: only two flags of one group to refuse
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as err:  # raised by a dataclass's __post_init__ (TrainingArguments validates there)
        raise UsageError(str(err).strip().splitlines()[0]) from None
    misplaced = [a for a in remaining if Path(a).suffix in CONFIG_SUFFIXES and Path(a).is_file()]
    if misplaced:
        raise UsageError(f"the config file {misplaced[0]} must come first, before any flag: "
                         f"{Path(sys.argv[0]).name} {misplaced[0]} [--flag value ...]")
    unknown = [a for a in remaining if a.startswith("-")] if allow_positional else remaining
    if unknown:
        raise UsageError(f"unrecognized argument(s): {' '.join(unknown)}{_did_you_mean(parser, unknown)}; "
                         "see --help for the valid flags.")
    return (*parsed, remaining) if allow_positional else tuple(parsed)


#: The help of every script's progress switch: one name, the Trainer's (train.py cannot rename it).
DISABLE_TQDM_HELP = "Hide progress bars, the libraries' own (model loading, Hub transfers) included."


@dataclass(kw_only=True)
class ProgressArguments:
    """The one progress switch of the inference scripts (predict, explain), and their old one, kept one release."""

    disable_tqdm: bool = field(default=False, metadata={"help": DISABLE_TQDM_HELP})
    progress: bool = field(
        default=True,
        metadata={"help": "Deprecated, to be removed in the next release: use --disable_tqdm (--no_progress or "
                          "--progress false is --disable_tqdm true)."},
    )

    @property
    def show_progress(self) -> bool:
        return self.progress and not self.disable_tqdm

    def warn_if_deprecated(self, logger: logging.Logger) -> None:
        """The old switch's note, once per run. A method the scripts call, not `__post_init__`: that runs at parse
        time, before the script sets up logging, and on every `ExplainArguments(...)` a library caller builds."""
        if not self.progress:
            logger.warning("--progress/--no_progress is deprecated and goes in the next release; use --disable_tqdm.")


def _library_bar_switches() -> list[tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]]:
    """(is on, turn on, turn off) for the bars of transformers ("Loading weights"), huggingface_hub (downloads,
    uploads) and datasets ("Decoding train", maps)."""
    import datasets  # deferred: these libraries load only to switch their bars
    import huggingface_hub.utils  # deferred: as above
    import transformers  # deferred: as above

    hub, tf = huggingface_hub.utils, transformers.utils.logging
    return [(tf.is_progress_bar_enabled, tf.enable_progress_bar, tf.disable_progress_bar),
            (lambda: not hub.are_progress_bars_disabled(), hub.enable_progress_bars, hub.disable_progress_bars),
            (datasets.is_progress_bar_enabled, datasets.enable_progress_bars, datasets.disable_progress_bars)]


def set_library_progress_bars(enabled: bool) -> None:
    """`--disable_tqdm` reaches the libraries' bars too, so one flag silences every bar a script can show."""
    for _, turn_on, turn_off in _library_bar_switches():
        (turn_on if enabled else turn_off)()


@contextlib.contextmanager
def library_progress_bars_off(off: bool = True):
    """The libraries' bars off for a block, then as they were (a library call such as `train.run_training` must not
    leave its caller's bars off). Does nothing when `off` is False."""
    switches = _library_bar_switches()
    before = [is_on() for is_on, _, _ in switches]
    if off:
        set_library_progress_bars(False)
    try:
        yield
    finally:
        if off:
            for was_on, (_, turn_on, turn_off) in zip(before, switches):
                (turn_on if was_on else turn_off)()
