"""What a user reads: a training run prints a short log, and Ctrl-C ends with the command that resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import REPO

PROGRESS = re.compile(r"(it/s|s/it|examples/s|img/s)\]|%\|")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # tqdm's cursor moves


def _command(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "train.py"), str(REPO / "configs" / "demo.yaml"),
            "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--num_train_epochs", "2",
            "--max_train_samples", "128", "--max_eval_samples", "64", "--use_cpu", "true", *extra]


def _non_progress_lines(text: str) -> list[str]:
    lines = (ANSI.sub("", line) for line in text.replace("\r", "\n").splitlines())
    return [line for line in lines if line.strip() and not PROGRESS.search(line)]


@pytest.mark.slow
def test_a_training_run_prints_a_short_log_without_noise(prepared_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(_command(prepared_dir, tmp_path / "run"), capture_output=True, text=True,
                            timeout=600, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _non_progress_lines(result.stdout + result.stderr)
    assert len(lines) <= 30, "\n".join(lines)
    assert sum(line.startswith("epoch ") for line in lines) == 2  # one line per evaluation
    text = result.stdout + result.stderr
    for noise in ("torchvision", "Downloading data", "Generating train split", "Writing model shards",
                  "Loading weights", "{'loss'", "***** train metrics"):
        assert noise not in text, noise
    assert len(lines) == len(set(lines)), "a line is printed twice"

    verbose = subprocess.run(_command(prepared_dir, tmp_path / "verbose", "--verbose", "true",
                                      "--num_train_epochs", "1", "--max_train_samples", "32"), capture_output=True,
                             text=True, timeout=600, cwd=REPO, env=env)
    assert verbose.returncode == 0 and "***** train metrics" in verbose.stdout + verbose.stderr


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_that_says_how_to_resume(prepared_dir, tmp_path):
    out = tmp_path / "run"
    command = _command(prepared_dir, out, "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no",
                       "--load_best_model_at_end", "false", "--num_train_epochs", "1000")  # ends only by Ctrl-C
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "Traceback" not in stderr
    last = _non_progress_lines(stderr)[-1]
    assert last.strip().endswith("--resume_from_checkpoint last") and "scripts/train.py" in last
