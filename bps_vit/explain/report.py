"""What the explain step writes and says: the metrics file's per-image lines, the log lines, the figures.

Kept apart from the numbers (`metrics`) so that changing how a result reads cannot change
what it is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import figures
from ..figures import ExplanationRow
from ..imaging import display_image, read_image
from ..results import ExplanationResults, ImageRecord, MethodRecord, MethodSummary
from . import perturbation as pert
from .arguments import ExplainArguments
from .methods.registry import METHODS, method_title
from .metrics import causal, deletion
from .metrics.ground_truth import FOCI_LABEL
from .records import ExplainedImage, MethodOutput

logger = logging.getLogger(__name__)

DECIMALS = 4  # metrics are rounded so that float noise (thread count, process split) cannot change the file


def rounded(value: Any) -> Any:
    """Floats rounded to DECIMALS (non-finite -> None, i.e. JSON null), through dicts and lists."""
    if isinstance(value, float):
        return round(value, DECIMALS) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def image_record(image: ExplainedImage, methods: list[str], labels: list[str]) -> ImageRecord:
    """One image's line in explain_metrics.json: prediction, warning, and foci scores only where foci exist."""
    if image.branch is not None:
        foci_note = "foci metrics skipped: a sham (0 Gy) nucleus has no radiation damage to find"
    elif not image.has_foci:
        foci_note = ("foci metrics skipped: the mask has no foci (label 2)" if image.has_mask
                     else "foci metrics skipped: no mask")
    else:
        foci_note = None
    return ImageRecord(
        filename=image.filename,
        label=image.label,
        branch=image.branch,
        predicted=labels[image.target],
        probability=image.probabilities[image.target],
        has_mask=image.has_mask,
        has_foci=image.has_foci,
        warning=image.warning,
        foci_note=foci_note,
        methods={name: _method_record(image.methods[name]) for name in methods},
    )


def _method_record(output: MethodOutput) -> MethodRecord:
    truth = output.ground_truth
    return MethodRecord(
        deletion_auc=deletion.probability_auc(output.deletion),
        insertion_auc=deletion.probability_auc(output.insertion),
        foci_mass=None if truth is None else truth.foci_mass,
        pointing_game=None if truth is None else truth.pointing_game,
    )


# --------------------------------------------------------------------------- log lines


def method_line(name: str, result: MethodSummary) -> str:
    """A log line a user can read without opening the JSON: each score next to its baseline and interval."""
    verdicts = result.beats_baseline

    def mark(check: str) -> str:
        ok = getattr(verdicts, check)
        return "" if ok is None else (" better" if ok else " NOT better")

    def gain(interval, check: str, label: str) -> str | None:
        if interval is None:
            return None
        low, high = interval.ci95
        return f"{label} {interval.mean:+.3f} [{low:+.3f}, {high:+.3f}]{mark(check)}"

    parts = [
        gain(result.deletion_log_odds_gain, "deletion", "deletion gain vs random (log-odds AUC)"),
        gain(result.insertion_log_odds_gain, "insertion", "insertion gain"),
        None if result.foci_mass is None else
        f"foci mass {result.foci_mass:.3f} vs centre {result.foci_mass_baseline:.3f}{mark('foci_mass')}",
        None if result.pointing_game is None else
        f"pointing {result.pointing_game:.3f} vs centre {result.pointing_game_baseline:.3f}{mark('pointing_game')}",
    ]
    if result.randomization_spearman is not None:
        parts.append(f"randomisation Spearman {result.randomization_spearman:.3f}")
    parts += [f"({note})" for note in result.verdict_notes]
    return f"{name}: " + "; ".join(p for p in parts if p)


def log_summary(results: ExplanationResults) -> None:
    """The verdicts, the perturbation check and the causal test, one line each, then what was skipped."""
    for name, result in results.methods.items():
        logger.info("%s", method_line(name, result))
    for key, check in results.perturbation_check.perturbations.items():
        logger.info("whole image perturbed %s: balanced accuracy %.3f, mean p(target) %.3f -> %s", key,
                    check.balanced_accuracy, check.mean_p_target,
                    "removes the signal" if check.removes_signal else "does NOT remove the signal")
    test = results.causal_foci_test
    if test is not None:
        logger.info("causal foci test (n=%d): accuracy untouched %.3f, foci ablated %.3f, random nucleus pixels %.3f",
                    test.n, *(getattr(test, c).accuracy for c in causal.CONDITIONS))
    skipped = results.skipped.items
    if skipped:
        logger.warning("Skipped %d file(s): %s", len(skipped),
                       "; ".join(f"{s.path}: {s.reason}" for s in skipped[:10]))


# --------------------------------------------------------------------------- figures


def _figure_title(image: ExplainedImage) -> tuple[str, str | None]:
    """(name, true label) for a figure row; a sham image shows its branch in the name and no truth (no ✓/✗).

    The branch goes on a second line after the file name, so `Path(name).stem` stays the file's stem."""
    if image.branch is None:
        return image.filename, image.label
    return f"{image.filename}\nbranch: {image.branch} (0 Gy sham, not a truth)", None


def figure_rows(images: list[ExplainedImage], methods: list[str], labels: list[str], stretch,
                args: ExplainArguments) -> list[ExplanationRow]:
    """One `figures.ExplanationRow` per image, for the first --max_figures images (all when < 0)."""
    rows = []
    for image in images[: (len(images) if args.max_figures < 0 else args.max_figures)]:
        raw = read_image(image.path)
        mask = read_image(image.mask_path) == FOCI_LABEL if image.has_mask else None
        name, true_label = _figure_title(image)
        maps = [m for m in methods if m != "shap"]
        outputs = image.methods
        rows.append(
            ExplanationRow(
                name=name,
                image=display_image(raw, stretch),
                intensity_range=stretch.bounds(raw),
                intensity_mid=stretch.raw_level(0.5, stretch.bounds(raw)),
                true_label=true_label,
                predicted_label=labels[image.target],
                probability=float(image.probabilities[image.target]),
                heatmaps={m: outputs[m].heatmap if outputs[m].display is None else outputs[m].display for m in maps},
                titles={m: method_title(m) for m in maps},
                class_agnostic=frozenset(m for m in maps if not METHODS[m].class_specific),
                shap_values=outputs["shap"].shap_values if "shap" in methods else None,
                class_names=list(labels),
                shap_units="log-odds" if args.shap_output == "log_odds" else "probability",
                foci_mask=mask,
            )
        )
    return rows


def mean_probability_curves(images: list[ExplainedImage], methods: list[str]) -> dict[str, tuple]:
    """method -> mean (deletion, insertion) probability curves over images, with a "random" entry (figures)."""
    prob = pert.probability_from_log_odds

    def mean_curve(curves) -> np.ndarray:
        return np.mean([prob(curve) for curve in curves], axis=0)

    curves = {
        name: (mean_curve(image.methods[name].deletion for image in images),
               mean_curve(image.methods[name].insertion for image in images))
        for name in methods
    }
    curves["random"] = (mean_curve(image.random_deletion for image in images),
                        mean_curve(image.random_insertion for image in images))
    return curves


def write_figures(images: list[ExplainedImage], results: ExplanationResults, labels: list[str], stretch,
                  args: ExplainArguments, figure_dir: Path) -> None:
    """A figure per image (up to --max_figures), an overview of the first six, and the faithfulness curves."""
    methods = args.method_list()
    rows = figure_rows(images, methods, labels, stretch, args)
    for row in rows:
        figures.plot_explanations([row], figure_dir / f"{Path(row.name).stem}.png")
    if rows:
        figures.plot_explanations(rows[:6], figure_dir / "explanations.png", total=len(images))
    figures.plot_faithfulness(mean_probability_curves(images, methods), results.methods,
                              figure_dir / "faithfulness.png", len(images))
