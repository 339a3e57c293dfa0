"""Prediction: files/folders -> CSV with a status column, the model's own preprocessing, split scoring with the
training metrics, and a 2-process `accelerate launch` run that writes the same CSV as one process."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from tests.support.images import bps_like_tiff as write_crop
from tests.support.launch import accelerate_launch
from tests.support.paths import REPO
from tests.support.tiny_models import save_tiny_model

LABELS = ("Fe", "X-ray")


def bps_like_tiff(path: Path, label: str, rng: np.random.Generator, height: int = 70, width: int = 64) -> None:
    """A uint16 nucleus crop (support.images.bps_like_tiff), seeded from `rng`."""
    write_crop(path, label, seed=int(rng.integers(2**31)), height=height, width=width)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny (random-init) BPS model folder as training saves it: safetensors + processor with the stretch."""
    return save_tiny_model(tmp_path_factory.mktemp("predict") / "model")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Good 16-bit TIFFs (one nested), an 8-bit PNG and JPEG, a corrupt TIFF, a zero-byte file, a text file."""
    from PIL import Image

    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("images")
    (root / "nested" / "deeper").mkdir(parents=True)
    for i in range(5):
        bps_like_tiff(root / f"P24{i}_73665006707-A{i + 1}_003_01{i}_proj.tif", LABELS[i % 2], rng)
    bps_like_tiff(root / "nested" / "deeper" / "P250_73665006707-B1_001_001_proj.tif", "X-ray", rng)
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(root / "view.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "photo.jpg")
    (root / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    (root / "empty.tif").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def predict_main(args) -> int:
    """scripts/predict.py's main(), in-process (a subprocess costs seconds of imports per call)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_script", REPO / "scripts" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def run_predict_script(args, cwd, launcher=(sys.executable,), timeout=240):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([*launcher, str(REPO / "scripts" / "predict.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_predict_folder_reports_unreadable_files_and_goes_on(saved_model, image_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "predictions.csv"
    code = predict_main(["--model", saved_model, image_folder, "--output", out, "--batch_size", "3",
                         "--progress", "false"])
    assert code == 0
    assert "Wrote" in caplog.text and "2 errors" in caplog.text
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "status", "predicted_label", "prob_Fe", "prob_X-ray", "warning"]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == 10  # 6 TIFFs + PNG + JPEG + corrupt + empty; notes.txt is not an image
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 8
    for row in ok:
        probs = [float(row["prob_Fe"]), float(row["prob_X-ray"])]
        assert sum(probs) == pytest.approx(1, abs=1e-5)
        assert row["predicted_label"] == LABELS[int(np.argmax(probs))]
    assert by_name["corrupt.tif"]["status"].startswith("error:") and "corrupt.tif" in by_name["corrupt.tif"]["status"]
    assert "empty" in by_name["empty.tif"]["status"] and by_name["empty.tif"]["predicted_label"] == ""
    assert "P250_73665006707-B1_001_001_proj.tif" in by_name  # recursive
    assert "notes.txt" not in by_name


def test_predictions_use_the_training_preprocessing_and_do_not_depend_on_batching(saved_model, image_folder):
    import tifffile
    import torch
    from PIL import Image

    from bps_vit.model import load_for_inference
    from bps_vit.predict import collect_image_paths, predict_paths

    loaded = load_for_inference(saved_model, attn_implementation="sdpa")
    files, problems = collect_image_paths([image_folder])
    assert [Path(p.path).name for p in problems] == []
    tiffs = [f for f in files if f.endswith("_proj.tif")]
    # reference by a second route, with the saved_model fixture's settings written out (p1-p99 stretch, 64x64,
    # mean = std = 0.5): tifffile decode, numpy's percentiles, clip to [0, 1], Pillow's antialiased bilinear resize
    # of the float image ("F" mode; what torch's antialias=True reproduces), grey repeated to RGB, (x - 0.5) / 0.5
    pixels = []
    for path in tiffs:
        raw = tifffile.imread(path).astype(np.float64)
        assert raw.shape == (70, 64)
        low, high = np.percentile(raw, [1.0, 99.0])
        unit = np.clip((raw - low) / (high - low), 0.0, 1.0).astype(np.float32)
        image = Image.fromarray(unit)
        assert image.mode == "F"  # 32-bit float: no 8-bit round trip
        resized = np.asarray(image.resize((64, 64), Image.BILINEAR))
        pixels.append(np.repeat(((resized - 0.5) / 0.5)[None], 3, axis=0))
    with torch.no_grad():
        expected = loaded.model(pixel_values=torch.from_numpy(np.stack(pixels))).logits.softmax(-1).numpy()
    one_by_one = predict_paths(loaded, tiffs, batch_size=1, num_workers=0, progress=False)
    batched = predict_paths(loaded, tiffs, batch_size=4, num_workers=1, progress=False)
    np.testing.assert_allclose([p.probs for p in one_by_one], expected, atol=1e-6)
    np.testing.assert_allclose([p.probs for p in batched], expected, atol=1e-6)
    assert [p.path for p in batched] == tiffs
    with pytest.raises(ValueError, match="--batch_size must be >= 1; got 0"):  # the library's own guard (the app's)
        predict_paths(loaded, tiffs, batch_size=0, progress=False)


def test_a_file_named_beside_its_folder_is_listed_once(tmp_path):
    from bps_vit.predict import collect_image_paths

    (tmp_path / "a.tif").write_bytes(b"II*\x00")  # listing reads no pixels
    (tmp_path / "b.png").write_bytes(b"\x89PNG")
    files, problems = collect_image_paths([tmp_path, tmp_path / "a.tif", tmp_path / "b.png"])
    assert files == [str(tmp_path / "a.tif"), str(tmp_path / "b.png")] and problems == []


def test_cpu_prediction_decodes_in_threads_and_forwards_with_every_thread(saved_model, image_folder, monkeypatch):
    """On a CPU the default is no worker process: threads decode each batch, then the forward gets all threads.

    (A worker process competing with the forward's threads measured 0.37 of the pure forward's speed on
    2 cores; the threads themselves must also be handed back, or the forward runs on one core.)
    """
    import threading

    import torch

    from bps_vit.imaging import Preprocessor
    from bps_vit.model import load_for_inference
    from bps_vit.predict import collect_image_paths, default_num_workers, predict_paths

    assert default_num_workers(1, "cpu") == 0
    for cores, processes, expected in ((16, 1, 8), (16, 2, 7), (4, 1, 3), (1, 1, 0)):  # one core kept for the forward
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        assert default_num_workers(processes, "cuda") == expected, (cores, processes)
    monkeypatch.undo()
    loaded = load_for_inference(saved_model, attn_implementation="sdpa")
    model = loaded.model
    files, _ = collect_image_paths([image_folder])
    decoded_on, forward_threads = set(), []
    original_gray = Preprocessor.gray

    def recording_gray(self, source, name=None):
        decoded_on.add(threading.current_thread().name)
        return original_gray(self, source, name=name)

    monkeypatch.setattr(Preprocessor, "gray", recording_gray)
    model.register_forward_pre_hook(lambda *_: forward_threads.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        predictions = predict_paths(loaded, files, batch_size=4, progress=False)
    finally:
        torch.set_num_threads(before)
    assert any(name.startswith("bps-decode") for name in decoded_on), decoded_on
    assert forward_threads and set(forward_threads) == {2}
    assert [p.path for p in predictions] == files
    assert sum(not p.ok for p in predictions) >= 2  # the corrupt and empty files are rows, not crashes


def write_prepared_folder(root: Path) -> Path:
    """A data/bps-like prepared folder: images under split/label/, manifest.csv with the agreed columns."""
    rng = np.random.default_rng(11)
    plan = [  # (split, label, dose, hours, count)
        ("train", "Fe", 0.82, 4, 3), ("train", "X-ray", 1.0, 4, 2),
        ("test", "Fe", 0.82, 24, 3), ("test", "Fe", 0.3, 4, 2), ("test", "X-ray", 1.0, 24, 3),
        ("sham", "Fe", 0.0, 4, 2), ("sham", "X-ray", 0.0, 4, 2),
    ]
    rows = []
    plate = 300
    for split, label, dose, hours, count in plan:
        plate += 1
        for i in range(count):
            name = f"P{plate}_73665006707-A{i + 1}_001_00{i}_proj.tif"
            relative = f"{split}/{label}/{name}"
            (root / split / label).mkdir(parents=True, exist_ok=True)
            bps_like_tiff(root / relative, label, rng)
            rows.append({"filename": name, "split": split, "label": label, "dose_Gy": dose, "hr_post_exposure": hours,
                         "plate": f"P{plate}", "well": "A", "field": "001", "sha256": "", "path": relative})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_score_split_matches_training_metrics(saved_model, tmp_path):
    pytest.importorskip("evaluate")
    from bps_vit.provenance import weights_fingerprint
    from bps_vit.results import SCHEMA_VERSION, PredictionResults, SplitMetrics

    data = write_prepared_folder(tmp_path / "bps")
    bad = next((data / "test" / "X-ray").glob("*.tif"))
    bad.write_bytes(b"truncated")  # an unreadable test image: reported, left out of the metrics
    out = tmp_path / "test_predictions.csv"
    code = predict_main(["--model", saved_model, "--data_dir", data, "--split", "test", "--output", out,
                         "--batch_size", "4", "--progress", "false"])
    assert code == 0
    metrics = json.loads((tmp_path / "test_predictions_metrics.json").read_text())
    assert metrics["schema_version"] == SCHEMA_VERSION and metrics["kind"] == "prediction"
    assert metrics["model_fingerprint"] == weights_fingerprint(saved_model)  # the weights that made these numbers
    typed = PredictionResults.from_json(tmp_path / "test_predictions_metrics.json")
    rows = read_csv(out)
    assert {r["split"] for r in rows} == {"test", "sham"}
    test_rows = [r for r in rows if r["split"] == "test" and r["status"] == "ok"]
    assert len(test_rows) == 7 and typed.n_errors == 1 and typed.errors[0].path.endswith(bad.name)
    labels = np.array([LABELS.index(r["true_label"]) for r in test_rows])
    probs = np.array([[float(r["prob_Fe"]), float(r["prob_X-ray"])] for r in test_rows])
    test = typed.splits["test"]
    assert set(metrics["splits"]["test"]) == set(asdict(SplitMetrics(n=0)))  # the shape of bps_results.json's splits
    assert test.n == 7
    assert test.accuracy == pytest.approx(float(np.mean(probs.argmax(1) == labels)), abs=1e-6)
    # the confusion matrix, counted by hand from the CSV (rows = true label)
    preds = probs.argmax(1)
    assert test.confusion_matrix == [[int(np.sum((labels == t) & (preds == p))) for p in (0, 1)] for t in (0, 1)]
    by_condition = {}
    for row, label, pred in zip(test_rows, labels, preds):
        by_condition.setdefault(row["condition"], []).append(label == pred)
    assert {c.condition: (c.n, c.accuracy) for c in test.per_condition} == {
        c: (len(v), pytest.approx(float(np.mean(v)))) for c, v in by_condition.items()}
    assert set(by_condition) == {"Fe 0.82Gy 24h", "Fe 0.3Gy 4h", "X-ray 1Gy 24h"}
    assert typed.sham_control.n == 4 and typed.sham_control.interpretation
    assert typed.baseline.majority_class == "Fe"  # 3 Fe vs 2 X-ray in train
    assert typed.baseline.accuracy == pytest.approx(float(np.mean(labels == 0)))


def test_predict_errors_are_clear(saved_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert predict_main(["--model", "someone/not-cached-model", "x.tif"]) == 2
    assert "not in the local cache" in capsys.readouterr().err
    assert predict_main(["--model", saved_model]) == 2
    assert "Give image files or folders" in capsys.readouterr().err
    assert predict_main(["--model", saved_model, "--data_dir", tmp_path, "--split", "test"]) == 2
    assert "no manifest.csv" in capsys.readouterr().err
    # a path that does not exist is a usage error, before the model loads, and nothing is written (issue 23 item 7)
    (tmp_path / "here.tif").write_bytes(b"")
    assert predict_main(["--model", saved_model, "here.tif", "gone.tif", "gone2/", "--output", "p.csv"]) == 2
    assert capsys.readouterr().err == ("error: gone.tif (and 1 more): no such file or folder (relative paths are "
                                       "relative to the current folder).\n")
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(SystemExit) as typo:
        predict_main(["--model", saved_model, "a.tif", "--outptu", "x.csv"])
    assert typo.value.code == 2 and "--outptu" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_accelerate_launch_writes_the_single_process_csv(saved_model, image_folder, tmp_path):
    single, double = tmp_path / "single.csv", tmp_path / "double.csv"
    args = ["--model", saved_model, image_folder, "--batch_size", "2", "--progress", "false"]
    assert predict_main([*args, "--output", single]) == 0
    # accelerate's multi-process launcher (torchrun underneath); on a machine without GPUs the processes run on CPU
    two = run_predict_script([*args, "--output", double], tmp_path, launcher=accelerate_launch(2))
    assert two.returncode == 0, two.stderr
    assert "on 2 process(es)" in two.stderr and two.stderr.count("Wrote ") == 1  # one CSV, by the main process
    assert double.read_text() == single.read_text()
    assert not list(tmp_path.glob(".double.csv.tmp-*"))


# --------------------------------------------------------------------------- input honesty and messages (issue 16)


def test_colour_8bit_and_odd_shaped_inputs_get_a_warning_column_and_one_console_line(saved_model, tmp_path, caplog):
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(5)
    folder = tmp_path / "odd"
    folder.mkdir()
    bps_like_tiff(folder / "crop.tif", "Fe", rng, height=120, width=110)
    Image.fromarray(rng.integers(0, 255, (120, 110, 3), dtype=np.uint8)).save(folder / "colour.png")
    Image.fromarray(rng.integers(0, 255, (120, 110), dtype=np.uint8)).save(folder / "gray8.png")
    tifffile.imwrite(folder / "strip.tif", rng.integers(200, 900, (60, 400)).astype(np.uint16))
    caplog.set_level(logging.INFO)
    out = tmp_path / "p.csv"
    assert predict_main(["--model", saved_model, folder, "--output", out, "--disable_tqdm", "true"]) == 0
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert all(r["status"] == "ok" for r in rows.values())  # still predicted, only flagged
    assert rows["crop.tif"]["warning"] == ""
    assert "colour image (3 channels)" in rows["colour.png"]["warning"]
    assert "8-bit image" in rows["colour.png"]["warning"] and "8-bit image" in rows["gray8.png"]["warning"]
    assert "colour" not in rows["gray8.png"]["warning"]
    assert "400 x 60 px is not shaped like a BPS nucleus crop" in rows["strip.tif"]["warning"]
    lines = [r.getMessage() for r in caplog.records if "not what the model was trained on" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("3 of 4 images") and str(out) in lines[0]


def test_a_model_trained_on_synthetic_data_says_so_when_predicting(saved_model, image_folder, tmp_path, caplog):
    import shutil

    from bps_vit.results import RunResults

    model = tmp_path / "synthetic-model"
    shutil.copytree(saved_model, model)
    caplog.set_level(logging.INFO)
    args = [image_folder / "view.png", "--output", tmp_path / "p.csv", "--disable_tqdm", "true"]
    assert predict_main(["--model", model, *args]) == 0
    assert "SYNTHETIC" not in caplog.text  # no results file: nothing to tell
    RunResults.from_dict({"data": {"data_dir": "data/bps", "source": "synthetic"}}).to_json(model / "bps_results.json")
    caplog.clear()
    assert predict_main(["--model", model, *args]) == 0
    caveats = [r.getMessage() for r in caplog.records if "SYNTHETIC" in r.getMessage()]
    assert len(caveats) == 1 and "trained on SYNTHETIC images" in caveats[0]
    # synthetic images (a prepared synthetic folder's split) are what such a model is for: no caveat (issue 23 item 16)
    synthetic = tmp_path / "synthetic_bps"
    (synthetic / "test" / "Fe").mkdir(parents=True)
    shutil.copy(image_folder / "view.png", synthetic / "test" / "Fe" / "view.png")
    (synthetic / "split_report.json").write_text(json.dumps({"source": "synthetic"}))
    caplog.clear()
    assert predict_main(["--model", model, synthetic / "test", "--output", tmp_path / "s.csv",
                         "--disable_tqdm", "true"]) == 0
    assert "SYNTHETIC" not in caplog.text and "Wrote" in caplog.text
    caplog.clear()
    assert predict_main(["--model", model, synthetic / "test", *args]) == 0  # synthetic and other images together
    assert "trained on SYNTHETIC images" in caplog.text
    RunResults.from_dict({"data": {"data_dir": "data/bps", "source": "s3"}}).to_json(model / "bps_results.json")
    caplog.clear()
    assert predict_main(["--model", model, *args]) == 0
    assert "SYNTHETIC" not in caplog.text


def test_split_scoring_reads_the_manifest_once(saved_model, tmp_path):
    """The early check (before the model loads) reads manifest.csv and hands the rows on; scoring does not reread:
    given those rows it scores them with no manifest.csv left to read."""
    pytest.importorskip("evaluate")
    from bps_vit.model import load_for_inference
    from bps_vit.predict import PredictArguments, check_predict_args, score_split

    data = write_prepared_folder(tmp_path / "bps")
    args = PredictArguments(model=str(saved_model), data_dir=str(data), split="test", output=str(tmp_path / "s.csv"))
    rows = check_predict_args(args)
    assert [row["split"] for row in rows].count("test") == 8 and len(rows) == 17  # write_prepared_folder's plan
    (data / "manifest.csv").unlink()
    _, extra, metrics = score_split(load_for_inference(saved_model), data, "test", rows=rows, progress=False)
    assert metrics.splits["test"].n == 8 and metrics.sham_control.n == 4
    assert sorted(Path(path).name for path in extra) == sorted(row["filename"] for row in rows
                                                               if row["split"] in ("test", "sham"))


def test_split_scoring_prints_metrics_paths_and_counts_the_split_apart_from_sham(saved_model, tmp_path, caplog):
    pytest.importorskip("evaluate")
    data = write_prepared_folder(tmp_path / "bps")
    out = tmp_path / "scored.csv"
    caplog.set_level(logging.INFO)
    assert predict_main(["--model", saved_model, "--data_dir", data, "--split", "test", "--output", out,
                         "--disable_tqdm", "true"]) == 0
    text = caplog.text
    assert "Predicted test 8 images (0 errors), sham control 4 images (0 errors)." in text
    assert "12 inputs" not in text
    assert "test: 8 images scored: accuracy " in text and "balanced accuracy " in text
    assert "majority-class baseline " in text
    assert "sham control: 4 unirradiated images, balanced accuracy " in text and "of undamaged nuclei" in text
    assert f"Wrote {out} (predictions) and {tmp_path / 'scored_metrics.json'} (metrics)." in text


@pytest.mark.parametrize("extra, words", [
    (["--data_dir", "{data}", "--split", "tset"], "--split 'tset': choose one of"),
    (["--data_dir", "{tmp}/nowhere", "--split", "test"], "--data_dir"),
    (["--data_dir", "{data}", "--split", "validation"], "no images with split='validation'"),
    (["x.tif", "--dtype", "float8"], "--dtype 'float8'"),
    (["x.tif", "--output", "{tmp}"], "is a folder"),
    (["x.tif", "--batch_size", "0"], "--batch_size must be >= 1"),
    (["{tmp}/gone.tif"], "no such file or folder"),
])
def test_arguments_are_checked_before_the_model_is_loaded(saved_model, tmp_path, capsys, extra, words):
    """The model's folder looks complete but its weights are not safetensors: loading it would fail with another
    message, so the flag's message shows that the flag was checked first."""
    import shutil

    unloadable = tmp_path / "unloadable"
    shutil.copytree(saved_model, unloadable)
    (unloadable / "model.safetensors").write_bytes(b"not a safetensors file")
    data = write_prepared_folder(tmp_path / "bps")
    args = [a.format(data=data, tmp=tmp_path) for a in extra]
    assert predict_main(["--model", unloadable, *args]) == 2
    assert words in capsys.readouterr().err
    (tmp_path / "x.tif").write_bytes(b"")  # the loader does fail:
    assert predict_main(["--model", unloadable, tmp_path / "x.tif", "--output", tmp_path / "p.csv"]) == 2
    assert "Cannot load" in capsys.readouterr().err


def test_one_progress_switch_and_the_old_one_still_works_with_a_note(saved_model, image_folder, tmp_path, caplog,
                                                                        capsys):
    from bps_vit.cli import build_parser
    from bps_vit.predict import PredictArguments

    help_text = build_parser([PredictArguments]).format_help()
    assert "--disable_tqdm" in help_text and "Deprecated" in help_text
    args = [image_folder / "view.png", "--output", tmp_path / "p.csv"]
    assert predict_main(["--model", saved_model, *args, "--disable_tqdm", "true"]) == 0
    assert "predict:" not in capsys.readouterr().err  # no bar
    caplog.set_level(logging.WARNING)
    assert predict_main(["--model", saved_model, *args, "--no_progress"]) == 0
    assert "predict:" not in capsys.readouterr().err
    assert "--progress/--no_progress is deprecated" in caplog.text
    assert caplog.text.count("--progress/--no_progress is deprecated") == 1  # once per run
