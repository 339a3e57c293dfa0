"""One progress switch: every script takes `--disable_tqdm` (the Trainer's name), and it silences the libraries'
own bars too (transformers' weight loading, huggingface_hub transfers, datasets)."""

from __future__ import annotations

import importlib.util

import pytest

from bps_vit.cli import build_parser, set_library_progress_bars
from tests.support.paths import REPO


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bars_enabled() -> dict[str, bool]:
    import datasets
    import huggingface_hub.utils
    import transformers

    return {"transformers": transformers.utils.logging.is_progress_bar_enabled(),
            "huggingface_hub": not huggingface_hub.utils.are_progress_bars_disabled(),
            "datasets": not datasets.utils.are_progress_bars_disabled()}


@pytest.fixture
def bars_restored():
    set_library_progress_bars(True)
    yield
    set_library_progress_bars(True)


def test_every_script_has_the_same_progress_switch():
    from bps_vit.explain.run import ExplainArguments
    from bps_vit.predict import PredictArguments
    from bps_vit.prepare import PrepareDataArguments
    from bps_vit.publish import PublishArguments
    from bps_vit.publish.space import SpaceArguments

    # The words a user reads in every script's --help, written out: a constant shared by the scripts would pass
    # even if it said nothing about the libraries' bars.
    app = script("app").AppArguments
    for types in ([PredictArguments], [PrepareDataArguments], [PublishArguments, SpaceArguments], [app],
                  [ExplainArguments]):
        help_text = " ".join(build_parser(types).format_help().split())
        assert ("--disable-tqdm [DISABLE_TQDM] Hide progress bars, the libraries' own (model loading, Hub transfers)"
                " included." in help_text), types


@pytest.mark.parametrize("name, argv", [
    ("predict", ["--model", "{tmp}/nowhere", "x.tif"]),
    ("prepare_data", ["--source", "local", "--raw_dir", "{tmp}/nowhere", "--output_dir", "{tmp}/out"]),
    ("publish", ["--model", "{tmp}/nowhere", "--dry_run"]),
    ("explain", ["--model", "{tmp}/nowhere", "--images", "{tmp}"]),
])
def test_disable_tqdm_silences_the_libraries_bars(name, argv, tmp_path, bars_restored):
    assert all(bars_enabled().values())
    code = script(name).main([a.format(tmp=tmp_path) for a in argv] + ["--disable_tqdm", "true"])
    assert code != 0  # the folder does not exist; the switch took effect before that was found
    assert not any(bars_enabled().values()), bars_enabled()


def test_the_old_switch_gets_one_note_per_explain_run(tmp_path, caplog, bars_restored):
    import logging

    caplog.set_level(logging.WARNING)
    assert script("explain").main(["--model", str(tmp_path / "nowhere"), "--images", str(tmp_path),
                                   "--no_progress"]) != 0  # the note comes before the model is looked for
    assert caplog.text.count("--progress/--no_progress is deprecated") == 1
    caplog.clear()
    assert script("explain").main(["--model", str(tmp_path / "nowhere"), "--images", str(tmp_path)]) != 0
    assert "deprecated" not in caplog.text
