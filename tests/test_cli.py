"""The exit-code convention shared by every script: 0 ok, 1 runtime failure, 2 usage error."""

from __future__ import annotations

import pytest

from bps_vit.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parse_args, run_main
from tests.support.paths import REPO


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


def _parse_error(dataclass_types, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(dataclass_types, argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("error: "), error  # one line, no traceback
    return error


def test_config_key_and_argument_order_errors_are_one_line(tmp_path, capsys):
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    types = (ModelArguments, DataArguments, BPSTrainingArguments)
    config = tmp_path / "run.yaml"
    config.write_text("data_dir: data/bps\nnum_epochs: 3\n")
    error = _parse_error(types, [str(config)], capsys)
    assert "unknown key(s) num_epochs" in error and "num_train_epochs" in error and "data_dir" in error
    config.write_text("num_train_epochs: 3\n")
    error = _parse_error(types, ["--seed", "3", str(config)], capsys)
    assert f"the config file {config} must come first" in error
    error = _parse_error(types, ["--no_such_flag", "3"], capsys)
    assert "unrecognized argument(s): --no_such_flag 3" in error


def test_a_relative_path_found_only_beside_the_config_says_where_it_looked(tmp_path, capsys, monkeypatch):
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    (tmp_path / "configs" / "bps").mkdir(parents=True)
    (tmp_path / "configs" / "run.yaml").write_text("data_dir: bps\n")
    monkeypatch.chdir(tmp_path)
    error = _parse_error((ModelArguments, DataArguments, BPSTrainingArguments), ["configs/run.yaml"], capsys)
    assert f"looked at {tmp_path / 'bps'}" in error and "configs/bps" in error


def test_help_has_no_repeats():
    from bps_vit.cli import build_parser
    from bps_vit.predict import PredictArguments

    text = build_parser([PredictArguments]).format_help()
    assert text.startswith("usage: ") and "[CONFIG.yaml|CONFIG.json]" in text.splitlines()[0]
    assert "Turn off --include_sham." in text
    assert "(default: None)" not in text.split("--num_workers", 1)[1].split("--", 1)[0]
    assert "With --data_dir: also score the sham control. (default: False)" not in text


def test_model_not_found_advice_names_the_failing_scripts_flags(tmp_path, monkeypatch):
    from bps_vit.model import ModelLoadError, ensure_resolvable

    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as typo:
        ensure_resolvable("outputs/demoo", "--model")
    assert "no such model folder" in str(typo.value) and "Did you mean outputs/demo?" in str(typo.value)
    with pytest.raises(ModelLoadError) as hub_id:
        ensure_resolvable("someone/bps-vit", "--model")
    assert "--model outputs/demo" in str(hub_id.value)
    assert "--model_name_or_path" not in str(hub_id.value) and "--config_name" not in str(hub_id.value)
    with pytest.raises(ModelLoadError, match="--config_name"):
        ensure_resolvable("someone/bps-vit", "--model_name_or_path")


def test_a_flag_beats_the_configs_alternative_to_it(tmp_path, capsys):
    """Issue 23 item 1: `train.py configs/demo.yaml --model_name_or_path CKPT` trained the config's tiny ViT,
    because the file's config_name won over the flag."""
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    types = (ModelArguments, DataArguments, BPSTrainingArguments)
    config = tmp_path / "run.yaml"
    config.write_text("config_name: configs/model/vit_tiny.json\noutput_dir: out\n")
    model_args, _, _ = parse_args(types, [str(config), "--model_name_or_path", "my/ckpt"])
    assert (model_args.model_name_or_path, model_args.config_name) == ("my/ckpt", None)
    assert f"{config}'s config_name: configs/model/vit_tiny.json is not used" in capsys.readouterr().err
    model_args, _, _ = parse_args(types, [str(config), "--model_name_or_path=my/ckpt"])
    assert model_args.config_name is None and "is not used" in capsys.readouterr().err
    model_args, _, _ = parse_args(types, [str(config)])  # without the flag the file's choice stands
    assert model_args.config_name == "configs/model/vit_tiny.json" and capsys.readouterr().err == ""
    error = _parse_error(types, [str(config), "--model_name_or_path", "a/b", "--config_name", "c.json"], capsys)
    assert "--model_name_or_path and --config_name exclude each other" in error
    error = _parse_error(types, ["--config_name", "c.json", "--model_name_or_path", "a/b"], capsys)
    assert "exclude each other" in error


@pytest.mark.parametrize("script, argv, suggestion", [
    ("train", ["--ouput_dir", "x"], "unrecognized argument(s): --ouput_dir x (did you mean --output_dir?)"),
    ("train", ["--num_epochs", "3"], "(did you mean --num_train_epochs?)"),
    ("publish", ["--model", "m", "--dryrun"], "unrecognized argument(s): --dryrun (did you mean --dry_run?)"),
    ("train", ["--ouput_dir=x", "--num_epochs", "3"],
     "(--ouput_dir: did you mean --output_dir?) (--num_epochs: did you mean --num_train_epochs?)"),
])
def test_a_misspelled_flag_gets_a_did_you_mean(script, argv, suggestion, capsys):
    """Issue 23 item 12: `--ouput_dir`, `--num_epochs`, `--dryrun` were only 'unrecognized'."""
    from bps_vit.publish import PublishArguments
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    types = {"train": (ModelArguments, DataArguments, BPSTrainingArguments), "publish": (PublishArguments,)}[script]
    assert suggestion in _parse_error(types, argv, capsys)


def test_a_misspelled_config_key_gets_a_did_you_mean(tmp_path, capsys):
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    config = tmp_path / "run.yaml"
    config.write_text("ouput_dir: x\n")
    error = _parse_error((ModelArguments, DataArguments, BPSTrainingArguments), [str(config)], capsys)
    assert "unknown key(s) ouput_dir. Did you mean output_dir (for ouput_dir)? Valid keys:" in error


def test_help_shows_the_projects_flags_and_help_all_shows_every_one(capsys):
    """Issue 23 item 13: train.py --help was 538 lines of mostly unused Trainer options; predict's usage line did
    not show the image paths. The expected sets come from the dataclasses, not from the parser under test."""
    import yaml

    from bps_vit.predict import PredictArguments
    from bps_vit.train import BPSTrainingArguments, DataArguments, ModelArguments

    types = (ModelArguments, DataArguments, BPSTrainingArguments)
    with pytest.raises(SystemExit) as shown:
        parse_args(types, ["--help"])
    short = capsys.readouterr().out
    used = set(yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()))
    assert shown.value.code == 0 and all(f"--{key} " in short for key in used)  # every option the demo uses
    assert "--adam_beta1" not in short and "--help_all lists every one" in short
    assert len(short.splitlines()) < 200
    with pytest.raises(SystemExit) as everything:
        parse_args(types, ["configs/demo.yaml", "--help_all"])
    full = capsys.readouterr().out
    assert everything.value.code == 0
    assert all(f"--{name} " in full for cls in types for name in cls.__dataclass_fields__ if not name.startswith("_"))
    with pytest.raises(SystemExit):
        parse_args([PredictArguments], ["--help"], allow_positional=True)
    assert "[IMAGE_OR_FOLDER ...]" in capsys.readouterr().out.splitlines()[0]


def test_a_swallowed_ctrl_c_still_stops_training_at_the_next_step():
    """A KeyboardInterrupt dropped where the interpreter ignores exceptions (a finalizer, a guarded callback) must
    not let the run go on: the step-end callback raises it again, once, and the handler is put back after."""
    import os
    import signal

    from bps_vit.cli import ctrl_c_remembered
    from bps_vit.trainer import CtrlCCallback

    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_remembered():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
        except KeyboardInterrupt:
            pass  # what a finalizer does with it: dropped
        with pytest.raises(KeyboardInterrupt):
            CtrlCCallback().on_step_end(None, None, None)
        CtrlCCallback().on_step_end(None, None, None)  # raised once, not at every later step
    assert signal.getsignal(signal.SIGINT) is before
