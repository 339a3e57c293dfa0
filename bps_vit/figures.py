"""Every matplotlib figure of the project, written for a biologist reading a report.

One place for figures keeps the look consistent (same colour maps, same label wording) and
keeps matplotlib out of the modules that compute things. The Agg backend is forced so that
figures render on headless machines and CI. PNGs are saved without a date stamp in their
metadata, so the same inputs give byte-identical files (reproducible explain runs). Each figure is
built by a `*_figure` function that returns the unsaved Figure (tests read its axes, titles and data), and
saved by its `plot_*` twin. The module is longer than 450 lines on purpose: splitting it would split the
shared colour maps and scales that keep the report figures and the app's pictures alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.lines import Line2D
from PIL import Image

matplotlib.use("Agg", force=True)

import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from .results import MethodSummary  # noqa: E402

DPI = 120
# No "Software" (matplotlib version) or creation time in the PNG: identical inputs -> identical bytes.
PNG_METADATA: dict[str, Any] = {"Software": None}
HEATMAP_CMAP = "inferno"
SIGNED_CMAP = "RdBu_r"  # red = pushes towards the class, blue = pushes away; white = 0
# Overlay opacity (no relevance, full relevance): at most 60% colour, so the crop shows through even where a map is
# high everywhere (issue 23: gradient rollout washed the crop in an opaque yellow at the old 85%).
HEATMAP_ALPHA = (0.1, 0.6)
# SHAP opacity over the faded crop (value 0, value at the scale's end): the crop stays visible under weak blocks.
SHAP_ALPHA = (0.35, 0.9)


def _save(fig: "plt.Figure", path: str | Path) -> Path:
    """Write a figure as PNG (parents created), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- training figures


def confusion_matrix_figure(
    confusion: list[list[int]] | np.ndarray,
    labels: Sequence[str],
    title: str = "Confusion matrix (test)",
) -> "plt.Figure":
    """The `plot_confusion_matrix` figure, not saved (tests read its cells, ticks and title)."""
    counts = np.asarray(confusion, dtype=np.int64)
    labels = [str(label) for label in labels]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square; got shape {counts.shape}")
    if counts.shape[0] != len(labels):
        raise ValueError(f"confusion matrix is {counts.shape[0]}x{counts.shape[1]} but {len(labels)} labels were given")
    row_totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_totals, out=np.zeros(counts.shape, dtype=float), where=row_totals > 0)

    size = 1.6 + 1.3 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share * 100, cmap="Blues", vmin=0, vmax=100)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(
                j, i, f"{counts[i, j]}\n{share[i, j] * 100:.1f}%", ha="center", va="center", color=colour, fontsize=11
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"{title}\nn = {int(counts.sum())}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of true class")
    return fig


def plot_confusion_matrix(
    confusion: list[list[int]] | np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix (test)",
) -> Path:
    """Counts and row-normalised percentages (recall per true class) in each cell.

    Rows are the true class, columns the prediction, so the diagonal percentages read as
    "of all true Fe images, x% were called Fe".
    """
    return _save(confusion_matrix_figure(confusion, labels, title), path)


# log_history key -> how its curve is drawn: (format, colour, legend label, alpha).
CURVE_STYLES: dict[str, tuple[str, str, str, float | None]] = {
    "loss": ("-", "tab:blue", "training loss", 0.8),
    "eval_loss": ("o-", "tab:orange", "validation loss", None),
    "eval_accuracy": ("o-", "tab:green", "validation accuracy", None),
    "eval_balanced_accuracy": ("s--", "tab:purple", "validation balanced accuracy", None),
}


def training_series(log_history: list[dict] | None) -> dict[str, tuple[list, list[float]]]:
    """(epochs, values) per key of CURVE_STYLES, read from the Trainer's `state.log_history`.

    Training loss is kept only from logging steps (entries with a step), the evaluation keys from any entry with
    an epoch (or step). Entries without a key are skipped, so a run without evaluation still has its loss curve.
    """
    series: dict[str, tuple[list, list[float]]] = {key: ([], []) for key in CURVE_STYLES}
    for entry in log_history or []:
        if not isinstance(entry, Mapping):
            continue
        epoch = entry.get("epoch", entry.get("step"))
        for key, (epochs, values) in series.items():
            logged = entry.get("step") is not None if key == "loss" else epoch is not None
            if key in entry and logged:
                epochs.append(epoch)
                values.append(float(entry[key]))
    return series


def _draw_curves(ax, series: Mapping[str, tuple[list, list[float]]], keys: Sequence[str]) -> bool:
    """The logged curves among `keys` in their CURVE_STYLES; True when at least one was logged."""
    drawn = [key for key in keys if series[key][1]]
    for key in drawn:
        fmt, colour, label, alpha = CURVE_STYLES[key]
        ax.plot(*series[key], fmt, color=colour, alpha=alpha, label=label)
    return bool(drawn)


def _legend_or_note(ax, drawn: bool, note: str, loc: str = "best") -> None:
    """A legend over the curves, or a note in the empty panel, so an empty panel does not look like a failed plot."""
    if drawn:
        ax.legend(loc=loc)
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)


def training_curves_figure(log_history: list[dict] | None) -> "plt.Figure":
    """The `plot_training_curves` figure, not saved (tests read its lines and titles)."""
    series = training_series(log_history)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn = _draw_curves(loss_ax, series, ("loss", "eval_loss"))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.set_title("Loss")
    _legend_or_note(loss_ax, drawn, "no loss logged")

    drawn = _draw_curves(acc_ax, series, ("eval_accuracy", "eval_balanced_accuracy"))
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    acc_ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance (2 classes)")
    acc_ax.set_title("Validation accuracy")
    _legend_or_note(acc_ax, drawn, "no evaluation logged", loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_training_curves(log_history: list[dict], path: str | Path) -> Path:
    """Loss (training per logging step, evaluation per epoch) and evaluation accuracy per epoch.

    `log_history` is the Trainer's `state.log_history`; entries without a given key are skipped,
    so a run without evaluation still gets its training-loss curve.
    """
    return _save(training_curves_figure(log_history), path)


# --------------------------------------------------------------------------- explanation figures

#: Line and bar colours of the methods, in the order the methods come; the random order is always grey.
METHOD_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
RANDOM_ORDER = ("random order", "grey")


@dataclass
class ExplanationRow:
    """Everything one figure row shows about one image (plain arrays: figures know no models).

    image: HxW in [0, 1], the stretch the model sees, at the original resolution.
    intensity_range: the raw 16-bit grey levels that map to 0 and 1 (for the colour bar).
    heatmaps: method -> map at model resolution (stretched back onto the image): the method's raw values,
        or already in [0, 1]; `heat_for_display` scales it, flagging a near-flat map instead of stretching it.
        Each panel is titled with `titles[method]` and says whom the map is for (`class_agnostic` maps: everyone).
    shap_values: [num_classes, h, w] signed SHAP values (in `shap_units`), or None.
    foci_mask: HxW bool ground-truth foci (synthetic data), drawn as outlines, or None.
    """
    name: str
    image: np.ndarray
    intensity_range: tuple[float, float]
    true_label: str | None
    predicted_label: str
    probability: float
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)  # method -> its display name (else the method's name)
    class_agnostic: frozenset[str] = frozenset()  # methods whose map is the same for every class
    shap_values: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    shap_units: str = "log-odds"
    foci_mask: np.ndarray | None = None
    intensity_mid: float | None = None  # the raw level shown at 0.5 (a non-linear transfer moves it off the middle)


_SHORT_NUMBER = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:.2g}")


def _extent(image: np.ndarray) -> tuple[float, float, float, float]:
    height, width = image.shape[:2]
    return (-0.5, width - 0.5, height - 0.5, -0.5)


def _plain_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_foci(ax, row: ExplanationRow, colour: str = "cyan") -> bool:
    if row.foci_mask is None or not np.any(row.foci_mask):
        return False
    ax.contour(np.asarray(row.foci_mask, dtype=float), levels=[0.5], colors=colour, linewidths=0.8,
               extent=_extent(row.image), origin="upper")
    return True


def heatmap_colours(heat: np.ndarray) -> np.ndarray:
    """RGBA in [0, 1] of a relevance map in [0, 1], as every overlay draws it (figures and the app).

    Low relevance stays see-through, so the cell underneath shows.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0.0, 1.0)
    colours = plt.get_cmap(HEATMAP_CMAP)(heat)
    colours[..., 3] = HEATMAP_ALPHA[0] + (HEATMAP_ALPHA[1] - HEATMAP_ALPHA[0]) * heat
    return colours


def shap_alpha(values: np.ndarray, limit: float) -> np.ndarray:
    """Opacity of SHAP colours over the faded crop: faint where a value is near 0, strong at the scale's ends, so the
    crop shows under the blocks (which part of the nucleus each block covers) without hiding a strong block."""
    scaled = np.clip(np.abs(np.nan_to_num(np.asarray(values, dtype=np.float64))) / (limit or 1e-12), 0.0, 1.0)
    return SHAP_ALPHA[0] + (SHAP_ALPHA[1] - SHAP_ALPHA[0]) * scaled


def with_colour_scale(picture: np.ndarray, colours: np.ndarray, left: str, right: str) -> np.ndarray:
    """`picture` (uint8 RGB) with a colour bar under it, its ends labelled: the app's overlays (the figures have
    matplotlib colour bars). `colours`: RGB in [0, 1] from the scale's left end to its right end."""
    from PIL import ImageDraw  # deferred: only the app draws text into pictures

    height, width = picture.shape[:2]
    ramp = np.asarray(colours, dtype=np.float64)[np.linspace(0, len(colours) - 1, width).round().astype(int)]
    bar = np.repeat((np.clip(ramp, 0, 1) * 255 + 0.5).astype(np.uint8)[None], max(8, height // 24), axis=0)
    labels = Image.new("RGB", (width, 14), "white")
    draw = ImageDraw.Draw(labels)
    draw.text((2, 1), left, fill="black")
    draw.text((width - 2 - draw.textlength(right), 1), right, fill="black")
    return np.concatenate([picture, bar, np.asarray(labels)], axis=0)


def relevance_scale(steps: int = 256) -> np.ndarray:
    """The relevance colours 0 -> 1 as `overlay_rgb` draws them, over a mid-grey crop."""
    colours = heatmap_colours(np.linspace(0.0, 1.0, steps))
    return colours[:, :3] * colours[:, 3:] + 0.5 * (1.0 - colours[:, 3:])


def shap_scale(steps: int = 256) -> np.ndarray:
    """The SHAP colours -limit -> +limit as `shap_rgb` draws them, over a mid-grey crop."""
    scaled = np.linspace(-1.0, 1.0, steps)
    alpha = shap_alpha(scaled, 1.0)[:, None]
    return plt.get_cmap(SIGNED_CMAP)(scaled * 0.5 + 0.5)[:, :3] * alpha + (0.35 * 0.5 + 0.65) * (1.0 - alpha)


# Below this largest |SHAP| (in the SHAP output units: log-odds by default, else probability) a map is called
# negligible and drawn on this floor scale, so it shows as white instead of saturated red/blue. 1e-3 log-odds moves
# a probability of 0.5 by 0.00025; 1e-3 in probability units is 0.1 percentage point: both far below anything a
# reader should interpret.
SHAP_NEGLIGIBLE = 1e-3
# A relevance map whose (max - min) is below this share of its largest |value| is near-flat: the method ranks all
# pixels (almost) the same. Stretching such a map to [0, 1] per image would paint float noise as a strong pattern,
# so it is flagged and drawn on the fixed scale value / max instead.
NEAR_FLAT_SPREAD = 1e-3


def heat_for_display(heat: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A relevance map (raw, or already in [0, 1]) as drawn, plus a flag for the title when it is (near-)flat.

    Maps with a real spread are min-max scaled (a [0, 1] map is unchanged). A near-flat map is divided by its
    largest |value| (no stretch), so it shows as the even map it is; an all-zero map stays zero.
    """
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    low, high = (float(heat.min()), float(heat.max())) if heat.size else (0.0, 0.0)
    peak = max(abs(low), abs(high))
    spread = high - low
    if peak == 0.0 or spread <= NEAR_FLAT_SPREAD * peak:
        share = spread / peak if peak else 0.0
        flag = "flat: all zero" if peak == 0.0 else f"near-flat: spread {share:.1g} of max"
        return (np.clip(heat / peak, 0.0, 1.0) if peak else heat), flag
    return (heat - low) / spread, None


def _draw_image_panel(fig, ax, row: ExplanationRow) -> bool:
    """The stretched crop with its raw-intensity colour bar and the prediction; True when it has foci."""
    low, high = row.intensity_range
    shown = ax.imshow(row.image, cmap="gray", vmin=0, vmax=1, extent=_extent(row.image))
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03, ticks=[0, 0.5, 1])
    mid = (low + high) / 2 if row.intensity_mid is None else row.intensity_mid
    bar.ax.set_yticklabels([f"{low:.0f}", f"{mid:.0f}", f"{high:.0f}"])
    bar.set_label("16-bit intensity", fontsize=8)
    verdict = "" if row.true_label is None else ("  ✓" if row.true_label == row.predicted_label else "  ✗")
    truth = row.true_label if row.true_label is not None else "unknown"
    colour = "black" if row.true_label is None else ("darkgreen" if verdict.strip() == "✓" else "firebrick")
    height, width = row.image.shape[:2]
    ax.set_title(
        f"{row.name}\ntrue: {truth} | predicted: {row.predicted_label} (p = {row.probability:.2f}){verdict}",
        fontsize=8, color=colour,
    )
    ax.set_xlabel(f"{width}x{height} px crop", fontsize=8)
    _plain_axes(ax)
    return row.foci_mask is not None and bool(np.any(row.foci_mask))


def _draw_heatmap_panel(fig, ax, row: ExplanationRow, method: str) -> None:
    """One relevance overlay; a (near-)flat map is flagged in the title and not stretched."""
    heat, flag = heat_for_display(row.heatmaps[method])
    ax.imshow(row.image, cmap="gray", vmin=0, vmax=1, extent=_extent(row.image))
    ax.imshow(heatmap_colours(heat), extent=_extent(row.image), interpolation="bilinear")
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=HEATMAP_CMAP)
    label = "relevance / max (fixed scale)" if flag else "relevance (0-1)"
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03).set_label(label, fontsize=8)
    _draw_foci(ax, row)
    detail = "class-agnostic" if method in row.class_agnostic else f"for {row.predicted_label}"
    title = f"{row.titles.get(method, method)}\n({detail})"
    ax.set_title(f"{title}\n{flag}" if flag else title, fontsize=9, color="firebrick" if flag else "black")
    _plain_axes(ax)


def _draw_shap_panels(fig, axes, row: ExplanationRow) -> None:
    """SHAP per class on one symmetric scale (the row's largest |value|, floored at SHAP_NEGLIGIBLE)."""
    values = np.nan_to_num(np.asarray(row.shap_values, dtype=np.float64))
    largest = float(np.abs(values).max()) if values.size else 0.0
    limit = max(largest, SHAP_NEGLIGIBLE)
    for k, ax in enumerate(axes):
        name = row.class_names[k] if k < len(row.class_names) else str(k)
        own = float(np.abs(values[k]).max()) if values[k].size else 0.0
        ax.imshow(row.image, cmap="gray", vmin=0, vmax=1, alpha=0.35, extent=_extent(row.image))
        shap_im = ax.imshow(values[k], cmap=SIGNED_CMAP, vmin=-limit, vmax=limit, alpha=shap_alpha(values[k], limit),
                            extent=_extent(row.image), interpolation="nearest")
        cbar = fig.colorbar(shap_im, ax=ax, fraction=0.046, pad=0.03, format=_SHORT_NUMBER)
        cbar.set_label(f"SHAP per pixel ({row.shap_units} of {name})", fontsize=8)
        _draw_foci(ax, row, colour="black")
        if own < SHAP_NEGLIGIBLE:
            scale, colour = f"negligible: max |SHAP| {own:.0e} {row.shap_units}", "firebrick"
        else:
            scale, colour = f"max |SHAP| {own:.2g} {row.shap_units}", "black"
        ax.set_title(f"SHAP for {name} (red: for {name})\n{scale}", fontsize=9, color=colour)
        _plain_axes(ax)


def explanations_figure(rows: Sequence[ExplanationRow], total: int | None = None) -> "plt.Figure":
    """The `plot_explanations` figure, not saved (tests read its titles and colour limits).

    `total`: how many images were explained in all; when given, the title says "n of total".
    """
    if not rows:
        raise ValueError("plot_explanations needs at least one row")
    if total is not None and total < len(rows):
        raise ValueError(f"total ({total}) must be at least the number of rows shown ({len(rows)})")
    methods = list(rows[0].heatmaps)
    num_shap = 0 if rows[0].shap_values is None else len(rows[0].shap_values)
    columns = 1 + len(methods) + num_shap
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.3 * columns, 3.4 * len(rows)), squeeze=False)
    any_foci = False
    for r, row in enumerate(rows):
        any_foci = _draw_image_panel(fig, axes[r, 0], row) or any_foci
        for c, method in enumerate(methods, start=1):
            _draw_heatmap_panel(fig, axes[r, c], row, method)
        if num_shap:
            _draw_shap_panels(fig, axes[r, 1 + len(methods):], row)
    notes = ["Maps are computed at the model's input size and drawn over the original crop."]
    if any_foci:
        notes.append("Outlines: ground-truth 53BP1 foci (synthetic masks).")
    fig.tight_layout()
    if total is not None:
        noun = "image" if total == 1 else "images"
        fig.suptitle(f"{len(rows)} of {total} explained {noun}", fontsize=11, y=1.0, va="bottom")
    fig.text(0.01, 0.0, " ".join(notes), fontsize=8, ha="left", va="top")
    return fig


def plot_explanations(rows: Sequence[ExplanationRow], path: str | Path, total: int | None = None) -> Path:
    """One row per image: the image | heatmap overlays | SHAP per class, each with a colour bar.

    The image is shown with the percentile stretch the model sees, its colour bar in raw
    16-bit grey levels. Heatmaps are computed at the model's input size and drawn stretched
    back onto the original crop; near-flat ones are flagged, not stretched. SHAP uses a diverging
    map centred at 0 (red pushes the model towards that class, blue away), its scale in the title.
    `total`: the number of explained images, when `rows` shows only some (the title says "n of total").
    """
    return _save(explanations_figure(rows, total), path)


# The two perturbation panels: (curve index in `curves`, title, AUC key in the summary, which way is better, verb).
PERTURBATION_PANELS = [
    (0, "Deletion", "deletion_auc", "lower is better", "removed"),
    (1, "Insertion", "insertion_auc", "higher is better", "inserted"),
]
# The ground-truth bar groups: (summary key, tick label).
TRUTH_GROUPS = [("foci_mass", "foci mass"), ("pointing_game", "pointing game")]


def _first_reported(summary: Mapping[str, MethodSummary], methods: Sequence[str], key: str) -> Any:
    """The first method's value of `key` that is not None.

    The random-order AUCs, the centre/uniform baselines and the foci image count come from the same images for
    every method, so each method's summary repeats them; any one that reports the key speaks for all.
    """
    values = (getattr(summary[m], key) for m in methods if m in summary)
    return next((value for value in values if value is not None), None)


def _method_styles(summary: Mapping[str, MethodSummary], methods: Sequence[str]) -> dict[str, tuple[str, str]]:
    """method -> (legend name, colour): each method's display title (else its name), colours in method order."""
    styles = {m: ((summary[m].title if m in summary else None) or m, METHOD_COLOURS[i % len(METHOD_COLOURS)])
              for i, m in enumerate(methods)}
    return {**styles, "random": RANDOM_ORDER}


def _draw_perturbation_panel(
    ax,
    panel: tuple[int, str, str, str, str],
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    summary: Mapping[str, MethodSummary],
    methods: Sequence[str],
    num_images: int | None,
) -> None:
    """Deletion or insertion: each method's mean curve against the random order (dashed), AUCs in the legend."""
    position, kind, key, better, verb = panel
    styles = _method_styles(summary, methods)
    for method in [*methods, "random"]:
        curve = np.asarray(curves[method][position])
        if method == "random":
            auc = _first_reported(summary, methods, f"random_{key}")
        else:
            auc = getattr(summary[method], key) if method in summary else None
        name, colour = styles[method]
        label = name + (f" (AUC {auc:.3f})" if auc is not None else "")
        ax.plot(np.linspace(0, 1, len(curve)), curve, color=colour, ls="--" if method == "random" else "-",
                label=label)
    ax.set_xlabel(f"fraction of pixels {verb}\n(most relevant first)")
    ax.set_ylabel("P(predicted class)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{kind} ({better})" + (f"\nmean of {num_images} images" if num_images else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _truth_bars(
    summary: Mapping[str, MethodSummary], methods: Sequence[str], key: str
) -> list[tuple[str, str | None, Any]]:
    """(legend label, colour, value) of one bar group: each method, then the centre-Gaussian and uniform maps
    that a method must beat before its foci score says anything."""
    styles = _method_styles(summary, methods)
    bars = [(*styles[m], getattr(summary[m], key) if m in summary else None) for m in methods]
    bars.append(("centre Gaussian", "silver", _first_reported(summary, methods, f"{key}_baseline")))
    bars.append(("uniform", "whitesmoke", _first_reported(summary, methods, f"{key}_uniform")))
    return bars


def _draw_truth_panel(ax, summary: Mapping[str, MethodSummary], methods: Sequence[str]) -> None:
    """Foci mass and pointing game per method beside their baselines, each bar labelled with its value."""
    for g, (key, _) in enumerate(TRUTH_GROUPS):
        bars = _truth_bars(summary, methods, key)
        width = 0.8 / len(bars)
        for b, (label, colour, value) in enumerate(bars):
            if value is None:
                continue
            x = g + (b - (len(bars) - 1) / 2) * width
            ax.bar(x, value, width, color=colour, edgecolor="black", linewidth=0.5, label=label if g == 0 else None)
            ax.text(x, value + 0.01, f"{value:.2f}", ha="center", va="bottom", fontsize=6.5, rotation=90)
    ax.set_xticks(range(len(TRUTH_GROUPS)), [label for _, label in TRUTH_GROUPS])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share of map in foci / hit rate")
    count = max((summary[m].num_images_with_foci for m in methods if m in summary), default=0)
    ax.set_title("Ground truth: 53BP1 foci" + (f"\n{count} images with foci" if count else ""))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def faithfulness_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    summary: Mapping[str, MethodSummary],
    num_images: int | None = None,
) -> "plt.Figure":
    """The `plot_faithfulness` figure, not saved (tests read its curves, bars and titles).

    The ground-truth panel is drawn only when some method has a foci mass (masks exist: synthetic data).
    """
    if "random" not in curves:
        raise ValueError(f"faithfulness curves need a 'random' entry (the order every method must beat); "
                         f"got {sorted(curves)}")
    methods = [m for m in curves if m != "random"]
    has_truth = any(summary[m].foci_mass is not None for m in methods if m in summary)
    panels = 3 if has_truth else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.0))
    for ax, panel in zip(axes, PERTURBATION_PANELS):
        _draw_perturbation_panel(ax, panel, curves, summary, methods, num_images)
    if has_truth:
        _draw_truth_panel(axes[2], summary, methods)
    fig.tight_layout()
    return fig


def plot_faithfulness(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    summary: Mapping[str, MethodSummary],
    path: str | Path,
    num_images: int | None = None,
) -> Path:
    """Deletion and insertion curves (mean over images) per method against a random pixel order,
    plus, when ground-truth masks exist, foci mass and pointing game against their baselines.

    `curves`: method -> (deletion, insertion) probability curves, with a "random" entry.
    `summary`: the per-method summaries of explain_metrics.json (titles and AUCs for the legends).
    """
    return _save(faithfulness_figure(curves, summary, num_images), path)


# --------------------------------------------------------------------------- pictures for the app (arrays, no axes)


def _resize_float(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear float resize (maps are computed at the model's size, drawn at the crop's)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == (height, width):
        return values
    return np.asarray(Image.fromarray(values, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)


def _to_uint8(rgb: np.ndarray, min_side: int) -> np.ndarray:
    """[0, 1] RGB -> uint8, enlarged by a whole factor (nearest) so that small crops are not drawn blurred."""
    factor = max(1, int(np.ceil(min_side / max(1, min(rgb.shape[:2])))))
    out = (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)  # enlarge after the cast: 8x less to copy
    return out.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else out


def image_rgb(image: np.ndarray, min_side: int = 256) -> np.ndarray:
    """The stretched crop (HxW in [0, 1]) as a uint8 RGB picture."""
    gray = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0.0, 1.0)
    return _to_uint8(np.repeat(gray[..., None], 3, axis=2), min_side)


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, min_side: int = 256) -> np.ndarray:
    """A [0, 1] relevance map over the crop as a uint8 RGB picture: the colours of `plot_explanations`."""
    gray = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0.0, 1.0)[..., None]
    colours = heatmap_colours(_resize_float(heatmap, *gray.shape[:2]))
    alpha = colours[..., 3:]
    return _to_uint8(colours[..., :3] * alpha + gray * (1.0 - alpha), min_side)


def shap_rgb(image: np.ndarray, values: np.ndarray, limit: float | None = None, min_side: int = 256) -> np.ndarray:
    """Signed SHAP values of one class over the crop as a uint8 RGB picture, as `plot_explanations` draws them:
    the crop faded to 35% on white, the values in a diverging map centred at 0 (red: for the class), faint near 0 and
    strong at the scale's ends (`shap_alpha`), so the crop shows under the blocks. A negligible map (largest |value|
    below SHAP_NEGLIGIBLE) is drawn on that floor scale, so it stays near white."""
    gray = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0.0, 1.0)[..., None]
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    limit = shap_limit(values) if limit is None else float(limit) or 1e-12
    scaled = _resize_float(np.clip(values / limit, -1.0, 1.0), *gray.shape[:2])
    colours = plt.get_cmap(SIGNED_CMAP)(np.clip(scaled * 0.5 + 0.5, 0.0, 1.0))[..., :3]
    alpha = shap_alpha(scaled, 1.0)[..., None]
    faded = 0.35 * gray + 0.65
    return _to_uint8(alpha * colours + (1.0 - alpha) * faded, min_side)


def shap_limit(values: np.ndarray) -> float:
    """The symmetric SHAP scale of one map: its largest |value|, floored at SHAP_NEGLIGIBLE."""
    return float(max(np.abs(np.nan_to_num(np.asarray(values, dtype=np.float64))).max(initial=0.0), SHAP_NEGLIGIBLE))


# --------------------------------------------------------------------------- audit (plate-held-out cross-validation)

#: Colours of the two labels in the audit figure (colour-blind safe: orange and blue).
LABEL_COLOURS = {"Fe": "#d95f02", "X-ray": "#1f78b4"}
#: Marker of each strategy in the per-plate panel: the honest one filled, the leaky ones hollow.
STRATEGY_MARKERS = {"plate": "o", "field": "s", "image": "^"}


def _draw_audit_strategy(ax, x: float, strategy: Any) -> None:
    """One strategy's column: a dot per held-out plate (its label's colour), then the pooled accuracy and its CI."""
    plates = list(strategy.per_plate)
    offsets = np.linspace(-0.2, 0.2, len(plates)) if len(plates) > 1 else np.zeros(len(plates))
    for offset, plate in zip(offsets, plates):
        ax.plot(x + offset, plate.accuracy, "o", ms=5, alpha=0.8, color=LABEL_COLOURS.get(plate.label, "grey"))
    accuracy = strategy.accuracy
    if accuracy.estimate is not None:
        ax.errorbar(x + 0.32, accuracy.estimate, yerr=[[accuracy.estimate - accuracy.low],
                                                        [accuracy.high - accuracy.estimate]],
                    fmt="D", color="black", ms=7, capsize=5, lw=1.5)
        ax.annotate(f"{accuracy.estimate:.2f}\n[{accuracy.low:.2f}, {accuracy.high:.2f}]", (x + 0.32, accuracy.high),
                    xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8)


def _audit_order(results: Any) -> list[str]:
    """The strategies in the report's order (plate, field, image), whatever order the file holds them in."""
    return sorted(results.strategies, key=lambda name: list(STRATEGY_MARKERS).index(name)
                  if name in STRATEGY_MARKERS else len(STRATEGY_MARKERS))


def _draw_audit_strategies(ax, results: Any) -> None:
    names = _audit_order(results)
    for x, name in enumerate(names):
        _draw_audit_strategy(ax, x, results.strategies[name])
    ax.axhline(0.5, ls="--", color="0.5", lw=1)
    ax.set_xticks(range(len(names)), [f"{name}\n({results.strategies[name].num_folds} folds)" for name in names])
    ax.set_xlim(-0.5, len(names) - 0.25)
    ax.set_ylim(-0.05, 1.12)
    ax.set_ylabel("accuracy on held-out images (dashed: chance)")
    ax.set_title("Accuracy by how images were held out\n(dots: one per plate; diamond: pooled, 95% CI over plates)",
                 fontsize=10)

    handles = [Line2D([], [], marker="o", ls="", color=colour, label=f"{label} plate")
               for label, colour in LABEL_COLOURS.items()]
    ax.legend(handles=handles, loc="lower left", fontsize=8)


def _draw_audit_plates(ax, results: Any) -> None:
    """One row per plate (its condition): its accuracy under each strategy, the plate-held-out one filled."""
    reference = results.strategies.get("plate") or next(iter(results.strategies.values()))
    plates = sorted(reference.per_plate, key=lambda p: (p.label, p.condition))
    rows = {plate.plate: y for y, plate in enumerate(plates)}
    for name in _audit_order(results):
        strategy, marker = results.strategies[name], STRATEGY_MARKERS.get(name, "x")
        for plate in strategy.per_plate:
            colour = LABEL_COLOURS.get(plate.label, "grey")
            ax.plot(plate.accuracy, rows[plate.plate], marker, ms=7 if name == "plate" else 6, color=colour,
                    markerfacecolor=colour if name == "plate" else "none", alpha=0.9)
    ax.axvline(0.5, ls="--", color="0.5", lw=1)
    ax.set_yticks(range(len(plates)), [f"{plate.plate}  {plate.condition}" for plate in plates], fontsize=7)
    ax.set_ylim(-0.7, len(plates) - 0.3)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("accuracy on the plate's held-out images")
    ax.set_title("Per plate", fontsize=10)

    handles = [Line2D([], [], marker=STRATEGY_MARKERS.get(name, "x"), ls="", color="black",
                      markerfacecolor="black" if name == "plate" else "none", label=name)
               for name in _audit_order(results)]
    ax.legend(handles=handles, fontsize=7, loc="best")


def _draw_audit_inflation(ax, results: Any) -> None:
    rows = [item for item in results.inflation if item.metric == "accuracy"]
    for y, item in enumerate(rows):
        difference = item.difference
        ax.errorbar(difference.estimate, y, xerr=[[difference.estimate - difference.low],
                                                   [difference.high - difference.estimate]],
                    fmt="o", color="firebrick" if item.detected else "black", capsize=5)
    ax.axvline(0, ls="--", color="0.5", lw=1)
    ax.set_yticks(range(len(rows)), [f"{item.strategy}\n- plate" for item in rows])
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.set_xlabel("accuracy difference, 95% CI")
    ax.set_title("Overstated on new plates?\n(red: the whole CI above 0)", fontsize=10)
    if not rows:
        ax.text(0.5, 0.5, "needs the plate strategy", ha="center", va="center", transform=ax.transAxes)


def audit_figure(results: Any) -> "plt.Figure":
    """The `plot_audit` figure, not saved: accuracy on held-out images per strategy (pooled, with its 95% cluster-
    bootstrap interval), per plate, and the inflation of the leaky strategies over `plate`."""
    count = len(results.strategies)
    fig, axes = plt.subplots(1, 3, figsize=(2.6 * count + 8.5, 5.4), width_ratios=[count, 2.2, 1.3])
    _draw_audit_strategies(axes[0], results)
    _draw_audit_plates(axes[1], results)
    _draw_audit_inflation(axes[2], results)
    fig.tight_layout()
    return fig


def plot_audit(results: Any, path: str | Path) -> Path:
    """`figures/audit.png` of an audit (`AuditResults`)."""
    return _save(audit_figure(results), path)
