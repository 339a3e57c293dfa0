"""The audit end to end on tiny synthetic worlds: a planted plate leak is found, a clean world shows none, the folds
are clean, the numbers recompute from oof_predictions.csv, a killed audit resumes, and two processes agree."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from bps_vit.results import AuditResults, FoldRecord
from tests.support.audit_worlds import audit_argv, make_world, run_audit_in_process
from tests.support.launch import free_port
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def leak_audit(tmp_path_factory, one_torch_thread):
    """The label lives only in the plates' signatures: equal foci laws (difficulty 1), a strong plate_effect. Plate
    and field folds only: the image strategy's folds are checked without training (test_audit.py), and training them
    here cost a third of this fixture's ~150 s."""
    root = tmp_path_factory.mktemp("leak")
    data = make_world(root, difficulty=1.0, plate_effect=3.0)
    out = root / "audit"
    results = run_audit_in_process(audit_argv(data, out, "--strategies", "plate,field", "--num_folds", "3",
                                              "--causal_images", "16"))
    return data, out, results


@pytest.fixture(scope="module")
def foci_world(tmp_path_factory) -> Path:
    """Foci that separate the labels, and no plate or campaign effect."""
    return make_world(tmp_path_factory.mktemp("foci"), difficulty=0.0)


@pytest.fixture(scope="module")
def foci_audit(foci_world, one_torch_thread):
    data = foci_world
    out = data.parent / "audit"
    results = run_audit_in_process(audit_argv(data, out, "--strategies", "plate,field", "--num_folds", "3",
                                              "--causal_images", "16", "--num_train_epochs", "10"))
    return data, out, results


def _rows(out: Path) -> list[dict]:
    with open(out / "oof_predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _manifest(data: Path) -> list[dict]:
    with open(data / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_planted_plate_leak_is_found(leak_audit):
    _, _, results = leak_audit
    plate, field = results.strategies["plate"], results.strategies["field"]
    assert field.accuracy.estimate > 0.75 and field.accuracy.low > 0.6, field.accuracy
    assert plate.accuracy.low < 0.5 < plate.accuracy.high, plate.accuracy
    (item,) = [i for i in results.inflation if i.metric == "accuracy"]
    assert item.strategy == "field"
    assert item.detected and item.difference.low > 0, item
    assert item.verdict.startswith(f"splitting by {item.strategy} overstates accuracy on new plates by")


def test_foci_without_plate_effects_show_no_inflation(foci_audit):
    _, _, results = foci_audit
    assert results.strategies["plate"].accuracy.estimate > 0.8
    (item,) = [i for i in results.inflation if i.metric == "accuracy"]
    assert item.difference.low < 0 < item.difference.high and not item.detected, item
    assert "no inflation detected (the interval includes 0" in item.verdict
    plate = results.strategies["plate"]
    assert plate.causal_foci_test_fold == "plate-0" and plate.causal_foci_test.foci_ablated_near_chance, plate


def test_folds_are_clean(leak_audit):
    data, out, results = leak_audit
    manifest = _manifest(data)
    irradiated = {row["filename"] for row in manifest if row["split"] != "sham"}
    sham = [row["filename"] for row in manifest if row["split"] == "sham"]
    rows = _rows(out)
    assert set(results.strategies) == {"plate", "field"}
    for strategy, group in (("plate", "plate"), ("field", "field")):
        held = [row for row in rows if row["strategy"] == strategy and row["role"] == "held_out"]
        assert Counter(row["filename"] for row in held) == Counter(irradiated)  # each exactly once
        for fold in results.strategies[strategy].folds:
            folder = out / "folds" / f"{strategy}-{fold.fold}"
            with open(folder / "manifest.csv", newline="") as handle:
                trained = list(csv.DictReader(handle))
            held_groups = {row[group] for row in held if row["fold"] == str(fold.fold)}
            assert held_groups and not held_groups & {row[group] for row in trained}
            assert {row["role"] for row in trained} == {"train", "validation"}
            sham_rows = [row for row in rows if row["strategy"] == strategy and row["fold"] == str(fold.fold)
                         and row["role"] == "sham"]
            assert sorted(row["filename"] for row in sham_rows) == sorted(sham)
            assert FoldRecord.from_json(folder / "fold.json").fold == fold
            assert not list(folder.glob("checkpoint-*"))  # removed once the fold finished
    assert not (out / "decoded").exists()


def test_the_numbers_recompute_from_oof_predictions(leak_audit):
    _, out, results = leak_audit
    assert AuditResults.from_json(out / "audit.json") == results
    rows = _rows(out)
    for strategy, scores in results.strategies.items():
        held = [row for row in rows if row["strategy"] == strategy and row["role"] == "held_out"]
        labels, predictions = [row["label"] for row in held], [row["prediction"] for row in held]
        assert scores.accuracy.estimate == pytest.approx(accuracy_score(labels, predictions), abs=1e-12)
        assert scores.balanced_accuracy.estimate == pytest.approx(balanced_accuracy_score(labels, predictions),
                                                                  abs=1e-12)
        for plate in scores.per_plate:
            mine = [row for row in held if row["plate"] == plate.plate]
            assert plate.accuracy == pytest.approx(accuracy_score([r["label"] for r in mine],
                                                                  [r["prediction"] for r in mine]))
        for row in held:  # the prediction is the more probable label
            assert row["prediction"] == ("Fe" if float(row["p_Fe"]) >= float(row["p_X-ray"]) else "X-ray")
    field = results.strategies["field"].accuracy.estimate
    (inflation,) = [i for i in results.inflation if i.strategy == "field" and i.metric == "accuracy"]
    assert inflation.difference.estimate == pytest.approx(field - results.strategies["plate"].accuracy.estimate)
    assert (out / "figures" / "audit.png").stat().st_size > 10_000
    assert [reading.check for reading in results.readings] == [
        "plate-held-out inflation", "sham control (Fe vs X-ray on unirradiated nuclei)", "causal foci test"]


# ----------------------------------------------------------------------------- resume and two processes

SMALL = ("--strategies", "field", "--num_folds", "2", "--causal_images", "0", "--num_train_epochs", "4")


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def _comparable(path: Path) -> dict:
    """audit.json without what depends on the clock, the output folder and the resume flag."""
    data = json.loads(path.read_text())
    data.pop("timing")
    for key in ("output_dir", "resume_from_checkpoint"):
        data["settings"]["training"].pop(key)
    for strategy in data["strategies"].values():
        for fold in strategy["folds"]:
            fold.pop("train_runtime_s")
    return data


@pytest.fixture(scope="module")
def small_reference(foci_world, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("reference") / "audit"
    run_audit_in_process(audit_argv(foci_world, out, *SMALL))
    return foci_world, out


def test_a_killed_audit_resumes_without_training_a_finished_fold_again(small_reference, tmp_path):
    data, reference = small_reference
    out = tmp_path / "audit"
    command = [sys.executable, str(REPO / "scripts" / "audit.py"), *audit_argv(data, out, *SMALL)]
    process = subprocess.Popen(command, cwd=REPO, env=_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "folds" / "field-0" / "fold.json"
    deadline = time.monotonic() + 400
    try:
        while not first.is_file():
            assert process.poll() is None, "the audit ended before it could be killed"
            assert time.monotonic() < deadline, "no finished fold within 400 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "audit.json").exists(), "the audit finished before the kill: nothing was tested"
    finished = first.read_bytes()

    refused = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--resume_from_checkpoint last" in refused.stderr.splitlines()[-1]
    resumed = subprocess.run([*command, "--resume_from_checkpoint", "last"], cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first.read_bytes() == finished  # not trained again
    timing = json.loads((out / "audit.json").read_text())["timing"]
    assert (timing["folds_reused"], timing["folds_trained"]) == (1, 1)
    assert _comparable(out / "audit.json") == _comparable(reference / "audit.json")


def test_two_processes_split_every_fold_and_score_every_image_once(small_reference, tmp_path):
    from bps_vit.model import load_for_inference
    from bps_vit.predict import predict_paths

    data, reference = small_reference
    out = tmp_path / "audit"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(REPO / "scripts" / "audit.py"),
               *audit_argv(data, out, *SMALL, "--per_device_train_batch_size", "8")]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("Files:") == 1  # the summary is printed once
    audit = AuditResults.from_json(out / "audit.json")
    rows = _rows(out)
    paths = {row["filename"]: data / row["path"] for row in _manifest(data)}
    for fold in audit.strategies["field"].folds:
        folder = out / "folds" / f"field-{fold.fold}"
        state = json.loads((folder / "trainer_state.json").read_text())
        run = json.loads((folder / "bps_results.json").read_text())
        assert run["settings"]["training"]["num_processes"] == 2
        epochs = run["training"]["epochs_run"]
        assert state["global_step"] == int(epochs) * -(-fold.n_train // (2 * 8))  # each process took half a batch
        mine = [row for row in rows if row["fold"] == str(fold.fold)]
        loaded = load_for_inference(str(folder), dtype="float32")
        again = predict_paths(loaded, [paths[row["filename"]] for row in mine], progress=False)
        assert [p.label for p in again] == [row["prediction"] for row in mine]
        assert np.allclose([p.probs[0] for p in again], [float(row["p_Fe"]) for row in mine], atol=1e-4)
    held = [row for row in rows if row["role"] == "held_out"]
    assert audit.strategies["field"].accuracy.estimate == pytest.approx(
        accuracy_score([r["label"] for r in held], [r["prediction"] for r in held]), abs=1e-12)
