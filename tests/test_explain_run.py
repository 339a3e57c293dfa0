"""The explain step end to end on a tiny trained model: files, schema, reproducibility, CLI,
raw-TIFF input, and the same result split over two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.folders import make_prepared_folder
from tests.support.launch import accelerate_launch
from tests.support.paths import REPO
from tests.support.tiny_models import train_tiny_model

SCRIPT = REPO / "scripts" / "explain.py"
SCHEMA_KEYS = {
    "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc", "randomization_spearman",
    "foci_mass", "foci_mass_baseline", "pointing_game", "pointing_game_baseline",
}
FAST = [
    "--num_images", "4", "--batch_size", "2", "--shap_max_evals", "60", "--shap_batch_size", "32",
    "--faithfulness_steps", "6", "--max_figures", "1", "--progress", "false",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    data_dir = make_prepared_folder(root / "data" / "bps", {"train": 16, "test": 3})
    model_dir = train_tiny_model(data_dir, root / "model", steps=25)
    return data_dir, model_dir


def _run_main(argv):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import importlib

        module = importlib.import_module("explain")
        return module.main(argv)
    finally:
        sys.path.remove(str(SCRIPT.parent))


@pytest.mark.slow
def test_explain_writes_figures_and_identical_metrics_twice(trained, tmp_path):
    data_dir, model_dir = trained
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        argv = ["--model", str(model_dir), "--data_dir", str(data_dir), "--output_dir", str(out), *FAST]
        assert _run_main(argv) == 0
        outputs.append(out)
    first, second = outputs
    assert (first / "explain_metrics.json").read_bytes() == (second / "explain_metrics.json").read_bytes()
    pngs = sorted(p.name for p in (first / "figures").glob("*.png"))
    assert "faithfulness.png" in pngs and "explanations.png" in pngs and len(pngs) == 1 + 2
    for name in pngs:
        assert (first / "figures" / name).read_bytes() == (second / "figures" / name).read_bytes(), name

    metrics = json.loads((first / "explain_metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["split"] == "test" and metrics["skipped"]["count"] == 0
    assert [row["label"] for row in metrics["per_image"]] == ["Fe", "X-ray", "Fe", "X-ray"]  # balanced, interleaved
    for method in ("rollout", "grad_rollout", "shap"):
        result = metrics["methods"][method]
        assert SCHEMA_KEYS <= set(result)
        for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "foci_mass", "pointing_game"):
            assert 0.0 <= result[key] <= 1.0, (method, key)
        assert -1.0 <= result["randomization_spearman"] <= 1.0
        assert result["num_images_with_foci"] == 4
        assert set(result["beats_baseline"]) == {"deletion", "insertion", "randomization", "foci_mass", "pointing_game"}
        gain = result["deletion_log_odds_gain"]
        assert gain["n"] == 4 and gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
        if result["beats_baseline"]["deletion"]:  # "better" only with the whole interval above 0
            assert gain["ci95"][0] > 0
    assert metrics["perturbation_space"] == "raw"
    check = metrics["perturbation_check"]
    assert set(check["perturbations"]) == {"raw:opening", "model:blur", "model:mean"}
    assert check["deletion_insertion"] == check["shap_masker"] == "raw:opening"
    for result in check["perturbations"].values():  # 4 images: too few to judge (MIN_IMAGES_FOR_VERDICT)
        assert 0.0 <= result["balanced_accuracy"] <= 1.0 and result["removes_signal"] is None
    assert check["no_verdict"].startswith("4 images: too few for a verdict")
    assert all(value is None for result in metrics["methods"].values() for value in result["beats_baseline"].values())
    causal = metrics["causal_foci_test"]
    assert causal["n"] == 4 and causal["space"] == "raw"
    assert set(causal) >= {"untouched", "foci_ablated", "random_nucleus_ablated", "foci_ablated_near_chance"}
    timings = json.loads((first / "explain_timings.json").read_text())
    assert set(timings["methods"]) == {"rollout", "grad_rollout", "shap"}
    assert all(t["seconds_per_image"] > 0 for t in timings["methods"].values())


@pytest.mark.slow
def test_explain_raw_synthetic_folder_from_a_yaml_config(trained, tmp_path):
    """A raw flat folder as `synthetic`/`fetch` write it: labels from meta.csv, masks from masks/; a broken
    file is reported as skipped, not dropped."""
    from bps_vit.synthetic import SyntheticConfig, generate_dataset

    _, model_dir = trained
    raw = tmp_path / "raw"
    generate_dataset(raw, SyntheticConfig(num_images=17, seed=0, num_workers=1), progress=False)
    (raw / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    config = tmp_path / "explain.yaml"
    config.write_text(
        f"model: {model_dir}\nimages: [{raw}]\nmethods: rollout,grad_rollout,shap\noutput_dir: {tmp_path / 'out'}\n"
        "randomization: cascade\nnum_images: 5\nfaithfulness_steps: 4\nmax_figures: 1\nprogress: false\n"
        "perturbation_space: model\nfaithfulness_baseline: blur\nshap_masker: blur(16,16)\nshap_max_evals: 40\n"
    )
    assert _run_main([str(config)]) == 0
    metrics = json.loads((tmp_path / "out" / "explain_metrics.json").read_text())
    assert metrics["split"] == "images" and metrics["num_images"] == 4
    assert metrics["skipped"]["count"] == 1 and metrics["skipped"]["items"][0]["path"].endswith("broken.tif")
    assert {row["label"] for row in metrics["per_image"]} == {"Fe", "X-ray"}
    assert set(metrics["methods"]) == {"rollout", "grad_rollout", "shap"}
    check = metrics["perturbation_check"]
    assert metrics["perturbation_space"] == "model" and check["deletion_insertion"] == "model:blur"
    assert check["shap_masker"] == "model:shap_masker:blur(16,16)" and check["shap_masker"] in check["perturbations"]
    rollout = metrics["methods"]["rollout"]
    assert rollout["num_images_with_foci"] >= 1 and rollout["foci_mass"] is not None
    stages = rollout["randomization_spearman_by_stage"]
    assert list(stages) == ["top1", "top2", "top3", "top4", "top5", "top6"]
    assert stages["top1"] == pytest.approx(1.0)  # rollout never reads the classifier head


@pytest.mark.slow
def test_explain_single_files_without_masks_or_labels(trained, tmp_path):
    data_dir, model_dir = trained
    files = sorted((data_dir / "test").glob("*/*.tif"))[:2]
    loose = []
    for path in files:
        loose.append(tmp_path / path.name)
        shutil.copy(path, loose[-1])
    argv = ["--model", str(model_dir), "--images", *map(str, loose), "--methods", "rollout", "--randomization", "none",
            "--output_dir", str(tmp_path / "out"), "--faithfulness_steps", "4", "--max_figures", "0",
            "--progress", "false"]
    assert _run_main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "explain_metrics.json").read_text())
    rollout = metrics["methods"]["rollout"]
    assert metrics["num_images"] == 2 and all(row["label"] is None for row in metrics["per_image"])
    assert rollout["foci_mass"] is None and rollout["beats_baseline"]["foci_mass"] is None
    assert rollout["randomization_spearman"] is None and rollout["deletion_auc"] is not None


@pytest.mark.slow
def test_explain_clear_errors(trained, tmp_path, capsys):
    data_dir, model_dir = trained
    assert _run_main(["--model", str(model_dir), "--data_dir", str(tmp_path), "--progress", "false"]) == 2
    assert "prepare" in capsys.readouterr().err.lower()
    assert _run_main(["--model", str(model_dir), "--methods", "rollout,lime", "--data_dir", str(data_dir)]) == 2
    assert "lime" in capsys.readouterr().err
    assert _run_main(["--model", str(tmp_path / "nope"), "--data_dir", str(data_dir)]) == 2
    assert "nope" in capsys.readouterr().err
    assert _run_main(["--model", str(model_dir), "--data_dir", str(data_dir), "--shap_masker", "blur"]) == 2
    assert "perturbation_space" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_single_process_result(trained, tmp_path):
    """`accelerate launch --num_processes 2` splits the images; the main process writes the same file.

    SHAP is left out here only for time (its values depend on nothing but the image and the seed)."""
    data_dir, model_dir = trained
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    common = ["--model", str(model_dir), "--data_dir", str(data_dir), *FAST, "--methods", "rollout,grad_rollout",
              "--num_images", "6", "--max_figures", "0"]
    single = subprocess.run(
        [sys.executable, str(SCRIPT), *common, "--output_dir", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run(
        # accelerate's multi-process launcher (torchrun underneath); without GPUs the processes run on CPU
        [*accelerate_launch(2), str(SCRIPT), *common, "--output_dir", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one = (tmp_path / "one" / "explain_metrics.json").read_text()
    two = (tmp_path / "two" / "explain_metrics.json").read_text()
    assert one == two
    assert json.loads((tmp_path / "two" / "explain_timings.json").read_text())["num_processes"] == 2


@pytest.mark.slow
def test_explain_defaults_to_the_data_the_run_was_trained_on(trained, tmp_path, monkeypatch, caplog):
    """Issue 23 item 4: without --data_dir, explain took data/bps whatever the run had trained on, silently."""
    from bps_vit.results import DataSummary, RunResults

    data_dir, model_dir = trained
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    RunResults(data=DataSummary(data_dir=str(data_dir))).to_json(run / RunResults.FILENAME)
    monkeypatch.chdir(tmp_path)  # no data/bps here: the old default cannot be found by luck
    quick = ["--methods", "rollout", "--randomization", "none", "--num_images", "2", "--faithfulness_steps", "4",
             "--max_figures", "0", "--progress", "false"]
    assert _run_main(["--model", str(run), "--output_dir", str(tmp_path / "a"), *quick]) == 0
    assert f"Images from {data_dir}, the data the model was trained on" in caplog.text
    caplog.clear()
    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    assert _run_main(["--model", str(run), "--data_dir", str(other), "--output_dir", str(tmp_path / "b"), *quick]) == 0
    assert f"Images from --data_dir {other}, not from {data_dir}, the data the model was trained on" in caplog.text
    caplog.clear()
    assert _run_main(["--model", str(run), "--data_dir", str(data_dir), "--output_dir", str(tmp_path / "c"),
                      *quick]) == 0
    assert "Images from" not in caplog.text  # the run's own folder, given: nothing to say


@pytest.mark.slow
def test_a_misspelled_split_lists_the_splits_before_the_weights_load(trained, tmp_path, capsys):
    """Issue 23 item 7: `--split tets` loaded the weights, then said "Prepare the data first". The weights here are
    unreadable, so an error that comes after loading would be the loader's, not the split's."""
    data_dir, model_dir = trained
    unloadable = tmp_path / "unloadable"
    shutil.copytree(model_dir, unloadable)
    (unloadable / "model.safetensors").write_bytes(b"not a safetensors file")
    assert _run_main(["--model", str(unloadable), "--data_dir", str(data_dir), "--split", "tets"]) == 2
    assert capsys.readouterr().err == (f"error: --split tets: {data_dir} has no such split; it has train, test. "
                                       "Did you mean --split test?\n")
