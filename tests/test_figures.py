"""Figures show the data they are given (read back from the matplotlib objects), render reproducibly, and reject
inconsistent inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from bps_vit import figures
from bps_vit.results import MethodSummary


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def _panel(fig, title_part):
    """The one axes whose title contains `title_part` (the colour bars' axes have no title)."""
    found = [ax for ax in fig.axes if title_part in ax.get_title()]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def _closed(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def _texts(labels):
    return [label.get_text() for label in labels]


# --------------------------------------------------------------------------- confusion matrix


def _cells(ax):
    """(row, column) -> (count, percent) as printed in the confusion-matrix cells."""
    cells = {}
    for text in ax.texts:
        column, row = text.get_position()
        count, percent = text.get_text().split("\n")
        cells[(int(row), int(column))] = (int(count), float(percent.rstrip("%")))
    return cells


def test_confusion_matrix_shows_the_counts_of_the_labels_it_was_given():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 200)
    predicted = np.where(rng.random(200) < 0.6, truth, rng.integers(0, 3, 200))
    labels = ["Fe", "X-ray", "sham"]
    fig = figures.confusion_matrix_figure(confusion_matrix(truth, predicted, labels=[0, 1, 2]), labels, title="CM")
    try:
        ax = _panel(fig, "CM")
        assert ax.get_title() == "CM\nn = 200"
        assert _texts(ax.get_xticklabels()) == labels and _texts(ax.get_yticklabels()) == labels
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted", "True")  # rows: truth, columns: prediction
        cells, shown = _cells(ax), np.asarray(ax.get_images()[0].get_array())
        assert len(cells) == 9
        for i in range(3):
            for j in range(3):
                count = int(np.sum((truth == i) & (predicted == j)))
                recall = 100 * count / np.sum(truth == i)
                assert cells[(i, j)][0] == count
                assert cells[(i, j)][1] == pytest.approx(recall, abs=0.05)
                assert shown[i, j] == pytest.approx(recall)
    finally:
        _closed(fig)


def test_confusion_matrix_png_is_reproducible(tmp_path):
    first = figures.plot_confusion_matrix([[8, 2], [1, 9]], ["Fe", "X-ray"], tmp_path / "a" / "cm.png")
    second = figures.plot_confusion_matrix(np.array([[8, 2], [1, 9]]), ["Fe", "X-ray"], tmp_path / "b" / "cm.png")
    assert first == tmp_path / "a" / "cm.png" and _is_png(first)
    assert first.read_bytes() == second.read_bytes()  # no timestamp in the PNG


def test_confusion_matrix_rejects_label_mismatch(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        figures.plot_confusion_matrix([[1, 0], [0, 1]], ["Fe"], tmp_path / "cm.png")
    with pytest.raises(ValueError, match="square"):
        figures.confusion_matrix_figure([[1, 0, 2], [0, 1, 2]], ["Fe", "X-ray"])


def test_confusion_matrix_empty_row_reads_zero_percent_not_nan():
    fig = figures.confusion_matrix_figure([[0, 0], [3, 4]], ["Fe", "X-ray"])
    try:
        ax = fig.axes[0]
        assert _cells(ax) == {(0, 0): (0, 0.0), (0, 1): (0, 0.0), (1, 0): (3, 42.9), (1, 1): (4, 57.1)}
        assert ax.get_title().endswith("n = 7")
    finally:
        _closed(fig)


# --------------------------------------------------------------------------- training curves

HISTORY = [
    {"loss": 0.7, "epoch": 0.5, "step": 5},
    {"loss": 0.6, "epoch": 1.0, "step": 10},
    {"eval_loss": 0.65, "eval_accuracy": 0.6, "eval_balanced_accuracy": 0.58, "epoch": 1.0, "step": 10},
    {"loss": 0.4, "epoch": 1.5, "step": 15},
    {"eval_loss": 0.5, "eval_accuracy": 0.8, "epoch": 2.0, "step": 20},
    {"train_runtime": 3.0, "epoch": 2.0, "step": 20},
    "not a log entry",
    {"loss": 0.1, "epoch": 2.0},  # a final summary without a step is not a logging step
]


def _lines(ax):
    """legend label -> (x, y) of every line in the axes."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_training_curves_plot_the_logged_values():
    fig = figures.training_curves_figure(HISTORY)
    try:
        loss, accuracy = _panel(fig, "Loss"), _panel(fig, "Validation accuracy")
        assert _lines(loss) == {
            "training loss": ([0.5, 1.0, 1.5], [0.7, 0.6, 0.4]),
            "validation loss": ([1.0, 2.0], [0.65, 0.5]),
        }
        assert _lines(accuracy) == {
            "validation accuracy": ([1.0, 2.0], [0.6, 0.8]),
            "validation balanced accuracy": ([1.0], [0.58]),
            "chance (2 classes)": ([0, 1], [0.5, 0.5]),
        }
        assert (loss.get_xlabel(), loss.get_ylabel()) == ("epoch", "cross-entropy loss")
        assert (accuracy.get_xlabel(), accuracy.get_ylabel()) == ("epoch", "accuracy")
        assert accuracy.get_ylim() == (0, 1.02)
        assert _texts(loss.get_legend().get_texts()) == ["training loss", "validation loss"]
        assert not loss.texts and not accuracy.texts  # no "nothing logged" note over real curves
    finally:
        _closed(fig)


def test_training_curves_say_what_was_not_logged(tmp_path):
    fig = figures.training_curves_figure(HISTORY[:2])
    try:
        loss, accuracy = _panel(fig, "Loss"), _panel(fig, "Validation accuracy")
        assert _lines(loss) == {"training loss": ([0.5, 1.0], [0.7, 0.6])}
        assert set(_lines(accuracy)) == {"chance (2 classes)"}
        assert _texts(accuracy.texts) == ["no evaluation logged"] and accuracy.get_legend() is None
    finally:
        _closed(fig)
    empty = figures.training_curves_figure([])
    try:
        assert _texts(_panel(empty, "Loss").texts) == ["no loss logged"]
        assert _texts(_panel(empty, "Validation accuracy").texts) == ["no evaluation logged"]
    finally:
        _closed(empty)
    path = figures.plot_training_curves(HISTORY, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png" and _is_png(path)


# --------------------------------------------------------------------------- explanation rows


def _row(with_shap=True, with_mask=True, true_label="Fe", seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((90, 80))
    mask = np.zeros((90, 80), bool)
    mask[40:45, 30:36] = True
    return figures.ExplanationRow(
        name=f"P1_2-A1_003_{4 + seed:03d}_proj.tif",
        image=image,
        intensity_range=(312.0, 2470.0),
        true_label=true_label,
        predicted_label="X-ray",
        probability=0.73,
        heatmaps={"rollout": rng.random((16, 16)), "grad_rollout": rng.random((16, 16))},
        titles={"rollout": "Attention rollout", "grad_rollout": "Gradient rollout"},
        class_agnostic=frozenset({"rollout"}),
        shap_values=rng.normal(size=(2, 16, 16)) * 1e-3 if with_shap else None,
        class_names=["Fe", "X-ray"],
        foci_mask=mask if with_mask else None,
    )


def _panel_rows(fig):
    """The titled panels (colour bars have no title), grouped into figure rows from top to bottom."""
    rows = {}
    for ax in fig.axes:
        if ax.get_title():
            box = ax.get_position()
            rows.setdefault(round(box.y0 + box.height / 2, 2), []).append(ax)
    return [sorted(rows[y], key=lambda ax: ax.get_position().x0) for y in sorted(rows, reverse=True)]


def test_explanation_figure_has_one_row_per_image_showing_its_inputs():
    rows = [_row(seed=0), _row(with_mask=False, true_label=None, seed=1), _row(true_label="X-ray", seed=2)]
    fig = figures.explanations_figure(rows)
    try:
        grid = _panel_rows(fig)
        assert [len(panels) for panels in grid] == [5, 5, 5]  # image | 2 heatmaps | SHAP for 2 classes
        marks = ["  ✗", "", "  ✓"]
        truths = ["Fe", "unknown", "X-ray"]
        for row, panels, truth, mark in zip(rows, grid, truths, marks):
            image, rollout, grad, shap_fe, shap_xray = panels
            assert image.get_title() == f"{row.name}\ntrue: {truth} | predicted: X-ray (p = 0.73){mark}"
            np.testing.assert_array_equal(image.get_images()[0].get_array(), row.image)
            for ax, method, title in ((rollout, "rollout", "Attention rollout\n(class-agnostic)"),
                                      (grad, "grad_rollout", "Gradient rollout\n(for X-ray)")):
                assert ax.get_title().startswith(title)
                np.testing.assert_array_equal(ax.get_images()[0].get_array(), row.image)  # the crop under the map
                heat = row.heatmaps[method]
                scaled = (heat - heat.min()) / (heat.max() - heat.min())
                overlay = np.asarray(ax.get_images()[1].get_array())
                np.testing.assert_allclose(overlay[..., 3], 0.1 + 0.5 * scaled)  # more relevant: more opaque
            for k, (ax, name) in enumerate(((shap_fe, "Fe"), (shap_xray, "X-ray"))):
                assert ax.get_title().startswith(f"SHAP for {name} (red: for {name})")
                np.testing.assert_array_equal(ax.get_images()[-1].get_array(), row.shap_values[k])
    finally:
        _closed(fig)


@pytest.mark.slow
def test_explanation_rows_without_shap_have_no_shap_panels(tmp_path):
    fig = figures.explanations_figure([_row(with_shap=False, with_mask=False)])
    try:
        grid = _panel_rows(fig)
        assert len(grid) == 1 and [ax.get_title().split("\n")[0] for ax in grid[0][1:]] == [
            "Attention rollout", "Gradient rollout"]
    finally:
        _closed(fig)
    full = figures.plot_explanations([_row(), _row(True, False, None)], tmp_path / "a.png")
    again = figures.plot_explanations([_row(), _row(True, False, None)], tmp_path / "b.png")
    assert full == tmp_path / "a.png" and _is_png(full) and full.read_bytes() == again.read_bytes()
    with pytest.raises(ValueError):
        figures.plot_explanations([], tmp_path / "d.png")


# --------------------------------------------------------------------------- faithfulness

CURVE = np.linspace(1, 0, 9)
CURVES = {"rollout": (CURVE, CURVE[::-1]), "grad_rollout": (CURVE**2, 1 - CURVE**2),
          "random": (CURVE**0.5, CURVE[::-1] ** 2)}
BASELINES = {"random_deletion_auc": 0.6, "random_insertion_auc": 0.4, "foci_mass_baseline": 0.05,
             "foci_mass_uniform": 0.02, "pointing_game_baseline": 0.25, "pointing_game_uniform": 0.1,
             "num_images_with_foci": 4}
SUMMARY = {
    "rollout": MethodSummary(title="Attention rollout", **BASELINES, deletion_auc=0.5, insertion_auc=0.55,
                             foci_mass=0.2, pointing_game=0.5),
    "grad_rollout": MethodSummary(title="Gradient rollout", **BASELINES, deletion_auc=0.3, insertion_auc=0.7,
                                  foci_mass=0.4, pointing_game=0.75),
}


def test_faithfulness_curves_are_the_curves_given_with_their_aucs():
    fig = figures.faithfulness_figure(CURVES, SUMMARY, num_images=4)
    try:
        fractions = np.arange(9) / 8
        panels = [(_panel(fig, "Deletion"), 0, "Deletion (lower is better)", ("0.500", "0.300", "0.600")),
                  (_panel(fig, "Insertion"), 1, "Insertion (higher is better)", ("0.550", "0.700", "0.400"))]
        for ax, position, title, aucs in panels:
            assert ax.get_title() == f"{title}\nmean of 4 images"
            lines = {line.get_label(): line for line in ax.get_lines()}
            expected = dict(zip(["Attention rollout", "Gradient rollout", "random order"], aucs))
            assert list(lines) == [f"{name} (AUC {auc})" for name, auc in expected.items()]
            for (name, auc), method in zip(expected.items(), ["rollout", "grad_rollout", "random"]):
                line = lines[f"{name} (AUC {auc})"]
                np.testing.assert_allclose(line.get_xdata(), fractions)
                np.testing.assert_array_equal(line.get_ydata(), CURVES[method][position])
                assert line.get_linestyle() == ("--" if method == "random" else "-")
    finally:
        _closed(fig)


def _bars(ax):
    """(centre x, height) of each bar, left to right."""
    return sorted((round(bar.get_x() + bar.get_width() / 2, 6), bar.get_height()) for bar in ax.patches)


def test_faithfulness_bars_are_the_foci_scores_beside_their_baselines():
    fig = figures.faithfulness_figure(CURVES, SUMMARY, num_images=4)
    try:
        ax = _panel(fig, "Ground truth")
        assert ax.get_title() == "Ground truth: 53BP1 foci\n4 images with foci"
        assert _texts(ax.get_xticklabels()) == ["foci mass", "pointing game"]
        assert _texts(ax.get_legend().get_texts()) == ["Attention rollout", "Gradient rollout", "centre Gaussian",
                                                       "uniform"]
        bars = _bars(ax)
        # group 0 (foci mass) left of 0.5, group 1 (pointing game) right of it; in each: methods, centre, uniform
        assert [height for x, height in bars if x < 0.5] == [0.2, 0.4, 0.05, 0.02]
        assert [height for x, height in bars if x > 0.5] == [0.5, 0.75, 0.25, 0.1]
        assert sorted(_texts(ax.texts)) == sorted(["0.20", "0.40", "0.05", "0.02", "0.50", "0.75", "0.25", "0.10"])
    finally:
        _closed(fig)


def test_faithfulness_takes_shared_values_from_any_method_that_reports_them():
    partial = {"rollout": replace(SUMMARY["rollout"], foci_mass_baseline=None, random_deletion_auc=None,
                                  num_images_with_foci=0),
               "grad_rollout": SUMMARY["grad_rollout"]}
    fig = figures.faithfulness_figure(CURVES, partial)
    try:
        assert "random order (AUC 0.600)" in [line.get_label() for line in _panel(fig, "Deletion").get_lines()]
        assert _panel(fig, "Deletion").get_title() == "Deletion (lower is better)"  # no image count given
        truth = _panel(fig, "Ground truth")
        assert [height for x, height in _bars(truth) if x < 0.5] == [0.2, 0.4, 0.05, 0.02]
        assert truth.get_title().endswith("4 images with foci")
    finally:
        _closed(fig)


def test_faithfulness_without_ground_truth_has_no_foci_panel(tmp_path):
    no_truth = {m: replace(values, foci_mass=None, pointing_game=None) for m, values in SUMMARY.items()}
    fig = figures.faithfulness_figure(CURVES, no_truth)
    try:
        assert [ax.get_title().split(" ")[0] for ax in fig.axes] == ["Deletion", "Insertion"]
        assert not any(ax.patches for ax in fig.axes)
    finally:
        _closed(fig)
    path = figures.plot_faithfulness(CURVES, no_truth, tmp_path / "f.png", 4)
    assert path == tmp_path / "f.png" and _is_png(path)
    with pytest.raises(ValueError, match="random"):
        figures.faithfulness_figure({"rollout": CURVES["rollout"]}, SUMMARY)


# --------------------------------------------------------------------------- figures that do not overstate


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
    fig = figures.explanations_figure([row])
    try:  # the crop shows under weak SHAP blocks (issue 23 item 14): the SHAP layer's opacity is low near 0
        alpha = np.asarray(_panel(fig, "SHAP for Fe").get_images()[-1].get_alpha())
        assert alpha.shape == (16, 16) and alpha.min() <= 0.4 and alpha.max() <= 0.9
    finally:
        _closed(fig)


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


@pytest.mark.slow
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
