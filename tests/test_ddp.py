"""Training with 2 processes (gloo on the CPU), launched as a user would: `accelerate launch --num_processes 2`.

Before the fix, a CPU multi-process launch left every process believing it was alone: each trained on all
the data and all of them wrote the same output folder, so a rank could read a checkpoint another was still
writing (the `OSError: no file named model.safetensors` crash at the end of training).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from launch_helpers import accelerate_launch

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "model" / "vit_tiny.json")
TRAIN_SAMPLES, BATCH, EPOCHS = 192, 16, 2


def _command(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        *accelerate_launch(2), str(REPO / "scripts" / "train.py"),
        "--config_name", TINY, "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--num_train_epochs", str(EPOCHS), "--max_train_samples", str(TRAIN_SAMPLES),
        "--per_device_train_batch_size", str(BATCH), "--per_device_eval_batch_size", "64",
        "--learning_rate", "0.001", "--seed", "5", "--save_strategy", "steps", "--save_steps", "2",
        "--eval_strategy", "steps", "--eval_steps", "2", "--load_best_model_at_end", "true",
        "--save_total_limit", "3", "--disable_tqdm", "true", *extra,
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("ACCELERATE_USE_CPU", None)  # the launch must work without it, as a user types it
    return env


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=_env())
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _manifest_count(data_dir: Path, split: str) -> int:
    import csv

    with open(data_dir / "manifest.csv", newline="") as handle:
        return sum(row["split"] == split for row in csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_process_run(prepared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = _run(_command(prepared_dir, out))
    return out, result


@pytest.mark.slow
def test_two_processes_split_the_work_and_write_results_once(two_process_run, prepared_dir):
    out, result = two_process_run
    state = json.loads((out / "trainer_state.json").read_text())
    # Each process sees half of the data: a lone process would take twice the steps.
    assert state["global_step"] == EPOCHS * math.ceil(TRAIN_SAMPLES / (2 * BATCH))
    # The summary is printed by the main process only, and bps_results.json is written once.
    assert result.stderr.count("Metrics:") == 1, result.stderr[-2000:]
    # DDP does not search the autograd graph for unused parameters of a ViT (all train), so it does not warn.
    assert "find_unused_parameters=True was specified" not in result.stderr
    results = json.loads((out / "bps_results.json").read_text())
    test = results["splits"]["test"]
    assert test["accuracy"] >= 0.85
    # Every image is counted exactly once: no DistributedSampler padding, no dropped remainder.
    assert test["n"] == _manifest_count(prepared_dir, "test")
    assert results["splits"]["validation"]["n"] == _manifest_count(prepared_dir, "validation")
    assert results["sham_control"]["n"] == _manifest_count(prepared_dir, "sham")
    assert sum(c["n"] for c in test["per_condition"]) == test["n"]
    assert results["settings"]["training"]["num_processes"] == 2
    # The saved model is the best checkpoint, restored on every rank after the barrier.
    best = out / results["training"]["best_model_checkpoint"]
    assert results["model_fingerprint"] == hashlib.sha256(b"model.safetensors\x00"
                                                          + (out / "model.safetensors").read_bytes()).hexdigest()
    saved, reloaded = _weights(out), _weights(best)
    assert all(torch.equal(saved[k], reloaded[k]) for k in saved)


@pytest.mark.slow
def test_two_process_metrics_equal_a_one_process_evaluation_of_the_saved_model(two_process_run, prepared_dir):
    from bps_vit.model import load_for_inference
    from bps_vit.predict import score_split

    out, _ = two_process_run
    results = json.loads((out / "bps_results.json").read_text())
    _, _, single = score_split(load_for_inference(str(out)), prepared_dir, "test", progress=False)
    single = single.to_dict() if hasattr(single, "to_dict") else single
    ours, theirs = single["splits"]["test"], results["splits"]["test"]
    assert ours["n"] == theirs["n"]
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-12)
    assert ours["roc_auc"] == pytest.approx(theirs["roc_auc"], abs=1e-4)
    assert single["sham_control"]["confusion_matrix"] == results["sham_control"]["confusion_matrix"]
    by_condition = {c["condition"]: c for c in ours["per_condition"]}
    assert sorted(by_condition) == sorted(c["condition"] for c in theirs["per_condition"])
    for value in theirs["per_condition"]:
        assert by_condition[value["condition"]]["n"] == value["n"]
        assert np.isclose(by_condition[value["condition"]]["accuracy"], value["accuracy"])


@pytest.mark.slow
def test_two_process_sigkill_then_resume_gives_the_uninterrupted_weights(two_process_run, prepared_dir, tmp_path):
    reference, _ = two_process_run
    killed = tmp_path / "killed"
    steps_per_epoch = math.ceil(TRAIN_SAMPLES / (2 * BATCH))  # 6
    target = killed / f"checkpoint-{steps_per_epoch + 2}" / "trainer_state.json"  # inside the second epoch
    process = subprocess.Popen(_command(prepared_dir, killed), cwd=REPO, env=_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    try:
        while not target.is_file():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, f"no {target.parent.name} within 400 s"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers, at once
        process.wait()
    assert not (killed / "model.safetensors").exists(), "the job finished before the kill: nothing was tested"

    _run(_command(prepared_dir, killed, "--resume_from_checkpoint", "last"))
    expected, resumed = _weights(reference), _weights(killed)
    different = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert not different, f"{len(different)} tensors differ after the 2-process resume, e.g. {different[:3]}"
    assert (json.loads((killed / "bps_results.json").read_text())["splits"]["test"]
            == json.loads((reference / "bps_results.json").read_text())["splits"]["test"])


# ----------------------------------------------------------------------------- DDP's search for unused parameters


def _tiny_classifier(model_type: str):
    from transformers import ConvNextConfig, ConvNextForImageClassification, DeiTConfig, DeiTForImageClassification

    from bps_vit.model import build_model_from_config

    torch.manual_seed(0)
    if model_type == "vit":
        return build_model_from_config(TINY)
    if model_type == "deit":
        return DeiTForImageClassification(DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    return ConvNextForImageClassification(ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1],
                                                         num_labels=2))


def _parameters_without_gradient(model) -> list[str]:
    """One training step's backward pass; the trainable parameters it gave no gradient."""
    size = getattr(model.config, "image_size", 32)
    model.train()
    loss = model(pixel_values=torch.randn(2, 3, size, size), labels=torch.tensor([0, 1])).loss
    loss.backward()
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("model_type", ["vit", "deit"])
def test_every_parameter_of_the_listed_model_types_trains(model_type):
    from bps_vit.trainer import EVERY_PARAMETER_TRAINS

    assert model_type in EVERY_PARAMETER_TRAINS
    model = _tiny_classifier(model_type)
    assert _parameters_without_gradient(model) == []
    model.unused_probe = torch.nn.Linear(2, 2)  # the check sees a parameter that gets no gradient
    model.zero_grad(set_to_none=True)
    assert _parameters_without_gradient(model) == ["unused_probe.weight", "unused_probe.bias"]


@pytest.mark.parametrize(("model_type", "flag", "expected"), [
    ("vit", None, False),  # every parameter trains: no search (issue 23, item 17)
    ("deit", None, False),
    ("vit", True, True),  # --ddp_find_unused_parameters true still wins
    ("convnext", None, True),  # a type not checked keeps the Trainer's default (search on)
])
def test_trainer_searches_for_unused_parameters_only_when_needed(tmp_path, model_type, flag, expected):
    from bps_vit.train import BPSTrainingArguments
    from bps_vit.trainer import BPSTrainer

    args = BPSTrainingArguments(output_dir=str(tmp_path), ddp_find_unused_parameters=flag, report_to="none",
                                use_cpu=True, eval_strategy="no", load_best_model_at_end=False)
    trainer = BPSTrainer(model=_tiny_classifier(model_type), args=args)
    assert trainer.accelerator.ddp_handler.find_unused_parameters is expected  # what DDP will be built with
