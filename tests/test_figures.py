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


def _row(with_shap=True, with_mask=True, true_label="Fe"):
    rng = np.random.default_rng(0)
    image = rng.random((90, 80))
    mask = np.zeros((90, 80), bool)
    mask[40:45, 30:36] = True
    return figures.ExplanationRow(
        name="P1_2-A1_003_004_proj.tif",
        image=image,
        intensity_range=(312.0, 2470.0),
        true_label=true_label,
        predicted_label="X-ray",
        probability=0.73,
        heatmaps={"rollout": rng.random((16, 16)), "grad_rollout": rng.random((16, 16))},
        shap_values=rng.normal(size=(2, 16, 16)) * 1e-3 if with_shap else None,
        class_names=["Fe", "X-ray"],
        foci_mask=mask if with_mask else None,
    )


def test_explanation_rows_render_with_and_without_shap_or_masks(tmp_path):
    full = figures.plot_explanations([_row(), _row(True, False, None)], tmp_path / "a.png")
    again = figures.plot_explanations([_row(), _row(True, False, None)], tmp_path / "b.png")
    assert _is_png(full) and full.read_bytes() == again.read_bytes()
    assert _is_png(figures.plot_explanations([_row(with_shap=False, with_mask=False)], tmp_path / "c.png"))
    with pytest.raises(ValueError):
        figures.plot_explanations([], tmp_path / "d.png")


def test_faithfulness_figure_with_and_without_ground_truth(tmp_path):
    curve = np.linspace(1, 0, 9)
    curves = {"rollout": (curve, curve[::-1]), "random": (curve**0.5, curve[::-1] ** 2)}
    summary = {"rollout": {"deletion_auc": 0.5, "insertion_auc": 0.5, "random_deletion_auc": 0.6,
                           "random_insertion_auc": 0.4, "foci_mass": 0.2, "foci_mass_baseline": 0.05,
                           "foci_mass_uniform": 0.02, "pointing_game": 0.5, "pointing_game_baseline": 0.25,
                           "pointing_game_uniform": 0.1, "num_images_with_foci": 4}}
    assert _is_png(figures.plot_faithfulness(curves, summary, tmp_path / "f.png", num_images=4))
    no_truth = {"rollout": {**summary["rollout"], "foci_mass": None, "pointing_game": None}}
    assert _is_png(figures.plot_faithfulness(curves, no_truth, tmp_path / "g.png"))
