"""Figures render to valid PNGs, reproducibly, and reject inconsistent inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bps_vit import figures


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_confusion_matrix_png_and_reproducible(tmp_path):
    first = figures.plot_confusion_matrix([[8, 2], [1, 9]], ["Fe", "X-ray"], tmp_path / "a" / "cm.png")
    second = figures.plot_confusion_matrix(np.array([[8, 2], [1, 9]]), ["Fe", "X-ray"], tmp_path / "b" / "cm.png")
    assert _is_png(first)
    assert first.read_bytes() == second.read_bytes()  # no timestamp in the PNG


def test_confusion_matrix_rejects_label_mismatch(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        figures.plot_confusion_matrix([[1, 0], [0, 1]], ["Fe"], tmp_path / "cm.png")


def test_confusion_matrix_handles_empty_row(tmp_path):
    assert _is_png(figures.plot_confusion_matrix([[0, 0], [3, 4]], ["Fe", "X-ray"], tmp_path / "cm.png"))


def test_training_curves_with_and_without_eval(tmp_path):
    history = [
        {"loss": 0.7, "epoch": 0.5, "step": 5},
        {"loss": 0.6, "epoch": 1.0, "step": 10},
        {"eval_loss": 0.65, "eval_accuracy": 0.6, "eval_balanced_accuracy": 0.58, "epoch": 1.0, "step": 10},
        {"loss": 0.4, "epoch": 1.5, "step": 15},
        {"eval_loss": 0.5, "eval_accuracy": 0.8, "epoch": 2.0, "step": 20},
        {"train_runtime": 3.0, "epoch": 2.0, "step": 20},
    ]
    assert _is_png(figures.plot_training_curves(history, tmp_path / "curves.png"))
    assert _is_png(figures.plot_training_curves(history[:2], tmp_path / "train_only.png"))
    assert _is_png(figures.plot_training_curves([], tmp_path / "empty.png"))
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".png"]
