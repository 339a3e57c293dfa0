"""A killed training job costs minutes, not the run, and never changes the result."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.support.paths import REPO
from tests.support.tiny_models import TINY_CONFIG as TINY


def _train_command(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO / "scripts" / "train.py"),
        "--config_name", TINY, "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--num_train_epochs", "2", "--max_train_samples", "192", "--per_device_train_batch_size", "16",
        "--learning_rate", "0.001", "--seed", "5", "--save_strategy", "steps", "--save_steps", "2",
        "--eval_strategy", "no", "--load_best_model_at_end", "false", "--save_total_limit", "3",
        "--disable_tqdm", "true", "--use_cpu", "true", *extra,
    ]


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]


def _state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(folder).state_dict()


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _state_dict(a), _state_dict(b)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(prepared_dir, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _run(_train_command(prepared_dir, reference))

    # 12 steps per epoch, 24 in all; kill once a checkpoint inside the second epoch exists.
    process = subprocess.Popen(_train_command(prepared_dir, killed), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not (killed / "checkpoint-14" / "trainer_state.json").is_file():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint-14 within 300 s"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (killed / "model.safetensors").exists(), "the job finished before the kill: nothing was tested"
    steps = sorted(int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*"))
    assert 14 <= max(steps) < 24

    _run(_train_command(prepared_dir, killed, "--resume_from_checkpoint", "last"))
    _assert_same_weights(reference, killed)
    assert (json.loads((killed / "test_results.json").read_text())["test_accuracy"]
            == json.loads((reference / "test_results.json").read_text())["test_accuracy"])
    reference_results = json.loads((reference / "bps_results.json").read_text())
    killed_results = json.loads((killed / "bps_results.json").read_text())
    assert killed_results["splits"]["test"] == reference_results["splits"]["test"]  # per condition included
    assert killed_results["model_fingerprint"] == reference_results["model_fingerprint"]
    # (No third, uninterrupted run: the resumed run equals the reference only if the command is deterministic.)


def test_resume_skips_a_checkpoint_killed_while_saving(tmp_path):
    from bps_vit.trainer import last_complete_checkpoint

    for step, complete in ((4, True), (6, True), (8, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_an_explicit_checkpoint_must_be_complete_as_an_automatic_one(tmp_path):
    """`--resume_from_checkpoint PATH` passes the test `last` uses: trainer_state.json and the weights."""
    from types import SimpleNamespace

    from bps_vit.train import resolve_resume
    from bps_vit.trainer import is_complete_checkpoint, last_complete_checkpoint

    folder = tmp_path / "checkpoint-6"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")  # the state, but no weights
    args = SimpleNamespace(resume_from_checkpoint=str(folder), output_dir=str(tmp_path))
    assert not is_complete_checkpoint(folder) and last_complete_checkpoint(tmp_path) is None
    with pytest.raises(SystemExit, match="not a complete checkpoint folder .*safetensors"):
        resolve_resume(args)
    (folder / "model.safetensors").write_bytes(b"x")
    assert is_complete_checkpoint(folder) and resolve_resume(args) == str(folder)


@pytest.mark.slow
def test_resume_from_a_folder_that_is_not_a_checkpoint_says_so(prepared_dir, tmp_path):
    result = subprocess.run(
        _train_command(prepared_dir, tmp_path / "out", "--resume_from_checkpoint", str(tmp_path)),
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode != 0
    assert "not a complete checkpoint" in result.stderr
