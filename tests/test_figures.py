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


# --------------------------------------------------------------------------- figures that do not overstate


def _panel(fig, title_part):
    """The one axes whose title contains `title_part` (the colour bars' axes have no title)."""
    found = [ax for ax in fig.axes if title_part in ax.get_title()]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def _closed(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_negligible_shap_map_is_labelled_and_not_saturated():
    row = _row()
    row.shap_values = np.zeros((2, 16, 16))
    row.shap_values[0, 3, 4], row.shap_values[1, 5, 6] = 1e-6, -0.5e-6
    fig = figures.explanations_figure([row])
    try:
        ax = _panel(fig, "SHAP for Fe")
        assert "negligible: max |SHAP| 1e-06 log-odds" in ax.get_title()
        low, high = ax.get_images()[-1].get_clim()
        assert low == -high and high >= figures.SHAP_NEGLIGIBLE  # white, not saturated red/blue
        assert "negligible" in _panel(fig, "SHAP for X-ray").get_title()
    finally:
        _closed(fig)
    picture = figures.shap_rgb(np.full((4, 4), 0.5), row.shap_values[0], min_side=0)
    assert picture.min() > 200  # the app draws it near white too


def test_normal_shap_map_has_symmetric_scale_in_title():
    row = _row()
    row.shap_values = np.zeros((2, 16, 16))
    row.shap_values[0, 2, 2], row.shap_values[1, 7, 7] = -0.8, 0.05
    fig = figures.explanations_figure([row])
    try:
        fe, xray = _panel(fig, "SHAP for Fe"), _panel(fig, "SHAP for X-ray")
        assert fe.get_images()[-1].get_clim() == (-0.8, 0.8)
        assert xray.get_images()[-1].get_clim() == (-0.8, 0.8)  # one scale per row: classes compare
        assert "max |SHAP| 0.8 log-odds" in fe.get_title() and "negligible" not in fe.get_title()
        assert "max |SHAP| 0.05 log-odds" in xray.get_title()
    finally:
        _closed(fig)


def test_near_flat_rollout_is_flagged_not_stretched():
    row = _row()
    noise = np.random.default_rng(1).random((16, 16)) * 1e-8
    row.heatmaps = {"rollout": 0.005 + noise, "grad_rollout": np.zeros((16, 16))}
    fig = figures.explanations_figure([row])
    try:
        rollout = _panel(fig, "Attention rollout")
        assert "near-flat" in rollout.get_title()
        overlay = np.asarray(rollout.get_images()[-1].get_array(), dtype=float)
        assert np.ptp(overlay[..., 3]) < 1e-3  # drawn even, not min-max stretched into a wash
        assert "flat: all zero" in _panel(fig, "Gradient rollout").get_title()
    finally:
        _closed(fig)
    scaled, flag = figures.heat_for_display(np.linspace(2.0, 4.0, 16).reshape(4, 4))
    assert flag is None and scaled.min() == 0.0 and scaled.max() == 1.0


def test_overview_title_says_how_many_of_how_many(tmp_path):
    fig = figures.explanations_figure([_row(), _row()], total=64)
    try:
        assert fig._suptitle is not None and fig._suptitle.get_text() == "2 of 64 explained images"
    finally:
        _closed(fig)
    single = figures.explanations_figure([_row()])
    try:
        assert single._suptitle is None  # a one-image figure needs no count
    finally:
        _closed(single)
    assert _is_png(figures.plot_explanations([_row()], tmp_path / "o.png", total=8))
    with pytest.raises(ValueError, match="total"):
        figures.explanations_figure([_row(), _row()], total=1)
