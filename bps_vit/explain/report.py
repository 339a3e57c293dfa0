"""What the explain step writes and says: the metrics file's per-image lines, the log lines, the figures.

Kept apart from the numbers (`metrics`) so that changing how a result reads cannot change
what it is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..imaging import display_image, read_image
from . import perturbation as pert
from .arguments import ExplainArguments
from .metrics import causal, deletion
from .metrics.ground_truth import FOCI_LABEL

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


def per_image_line(record: dict[str, Any], methods: list[str], labels: list[str]) -> dict[str, Any]:
    """One image's line in explain_metrics.json: prediction, warning, and foci scores only where foci exist."""
    line = {
        "filename": record["filename"],
        "label": record["label"],
        **({"branch": record["branch"]} if record.get("branch") is not None else {}),
        "predicted": labels[record["target"]],
        "probability": record["probabilities"][record["target"]],
        "has_mask": record["has_mask"],
        "has_foci": record["has_foci"],
        "warning": record["warning"],
        **{f"{name}_deletion_auc": deletion.probability_auc(record["methods"][name]["deletion"]) for name in methods},
        **{f"{name}_insertion_auc": deletion.probability_auc(record["methods"][name]["insertion"]) for name in methods},
    }
    for name in methods:
        truth = record["methods"][name]["ground_truth"] or {}
        line[f"{name}_foci_mass"] = truth.get("foci_mass")
        line[f"{name}_pointing_game"] = truth.get("pointing_game")
    if record.get("branch") is not None:
        line["foci_note"] = "foci metrics skipped: a sham (0 Gy) nucleus has no radiation damage to find"
    elif not record["has_foci"]:
        line["foci_note"] = ("foci metrics skipped: the mask has no foci (label 2)" if record["has_mask"]
                             else "foci metrics skipped: no mask")
    return line


# --------------------------------------------------------------------------- log lines


def method_line(name: str, result: dict[str, Any]) -> str:
    """A log line a user can read without opening the JSON: each score next to its baseline and interval."""

    def mark(verdict):
        ok = result["beats_baseline"].get(verdict)
        return "" if ok is None else (" better" if ok else " NOT better")

    def gain(key, verdict, label):
        interval = result.get(key)
        if interval is None:
            return None
        low, high = interval["ci95"]
        return f"{label} {interval['mean']:+.3f} [{low:+.3f}, {high:+.3f}]{mark(verdict)}"

    parts = [
        gain("deletion_log_odds_gain", "deletion", "deletion gain vs random (log-odds AUC)"),
        gain("insertion_log_odds_gain", "insertion", "insertion gain"),
        None if result.get("foci_mass") is None else
        f"foci mass {result['foci_mass']:.3f} vs centre {result['foci_mass_baseline']:.3f}{mark('foci_mass')}",
        None if result.get("pointing_game") is None else
        f"pointing {result['pointing_game']:.3f} vs centre {result['pointing_game_baseline']:.3f}"
        f"{mark('pointing_game')}",
    ]
    if result.get("randomization_spearman") is not None:
        parts.append(f"randomisation Spearman {result['randomization_spearman']:.3f}")
    parts += [f"({note})" for note in result.get("verdict_notes", [])]
    return f"{name}: " + "; ".join(p for p in parts if p)


def log_summary(metrics: dict[str, Any], skipped: list[dict[str, str]]) -> None:
    """The verdicts, the perturbation check and the causal test, one line each, then what was skipped."""
    for name, result in metrics["methods"].items():
        logger.info("%s", method_line(name, result))
    for key, check in metrics["perturbation_check"]["perturbations"].items():
        logger.info("whole image perturbed %s: balanced accuracy %.3f, mean p(target) %.3f -> %s", key,
                    check["balanced_accuracy"], check["mean_p_target"],
                    "removes the signal" if check["removes_signal"] else "does NOT remove the signal")
    if metrics["causal_foci_test"]:
        test = metrics["causal_foci_test"]
        logger.info("causal foci test (n=%d): accuracy untouched %.3f, foci ablated %.3f, random nucleus pixels %.3f",
                    test["n"], *(test[c]["accuracy"] for c in causal.CONDITIONS))
    if skipped:
        logger.warning(
            "Skipped %d file(s): %s", len(skipped), "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:10])
        )


# --------------------------------------------------------------------------- figures


def _figure_title(record: dict[str, Any]) -> tuple[str, str | None]:
    """(name, true label) for a figure row; a sham image shows its branch in the name and no truth (no ✓/✗).

    The branch goes on a second line after the file name, so `Path(name).stem` stays the file's stem."""
    if record.get("branch") is None:
        return record["filename"], record["label"]
    return f"{record['filename']}\nbranch: {record['branch']} (0 Gy sham, not a truth)", None


def figure_rows(records: list[dict[str, Any]], methods: list[str], labels: list[str], stretch,
                args: ExplainArguments) -> list:
    """One `figures.ExplanationRow` per image, for the first --max_figures images (all when < 0)."""
    from ..figures import ExplanationRow

    rows = []
    for record in records[: (len(records) if args.max_figures < 0 else args.max_figures)]:
        raw = read_image(record["path"])
        mask = read_image(record["mask_path"]) == FOCI_LABEL if record["has_mask"] else None
        name, true_label = _figure_title(record)
        method_records = record["methods"]
        rows.append(
            ExplanationRow(
                name=name,
                image=display_image(raw, stretch),
                intensity_range=stretch.bounds(raw),
                intensity_mid=stretch.raw_level(0.5, stretch.bounds(raw)),
                true_label=true_label,
                predicted_label=labels[record["target"]],
                probability=float(record["probabilities"][record["target"]]),
                heatmaps={m: method_records[m].get("display", method_records[m]["heatmap"])
                          for m in methods if m != "shap"},
                shap_values=method_records["shap"]["shap_values"] if "shap" in methods else None,
                class_names=list(labels),
                shap_units="log-odds" if args.shap_output == "log_odds" else "probability",
                foci_mask=mask,
            )
        )
    return rows


def mean_probability_curves(records: list[dict[str, Any]], methods: list[str]) -> dict[str, tuple]:
    """method -> mean (deletion, insertion) probability curves over images, with a "random" entry (figures)."""
    prob = pert.probability_from_log_odds

    def mean_curve(curves) -> np.ndarray:
        return np.mean([prob(curve) for curve in curves], axis=0)

    curves = {
        name: (mean_curve(r["methods"][name]["deletion"] for r in records),
               mean_curve(r["methods"][name]["insertion"] for r in records))
        for name in methods
    }
    curves["random"] = (mean_curve(r["random_deletion"] for r in records),
                        mean_curve(r["random_insertion"] for r in records))
    return curves


def write_figures(records: list[dict[str, Any]], metrics: dict[str, Any], labels: list[str], stretch,
                  args: ExplainArguments, figure_dir: Path) -> None:
    """A figure per image (up to --max_figures), an overview of the first six, and the faithfulness curves."""
    from .. import figures

    methods = args.method_list()
    rows = figure_rows(records, methods, labels, stretch, args)
    for row in rows:
        figures.plot_explanations([row], figure_dir / f"{Path(row.name).stem}.png")
    if rows:
        figures.plot_explanations(rows[:6], figure_dir / "explanations.png", total=len(records))
    figures.plot_faithfulness(
        mean_probability_curves(records, methods), metrics["methods"], figure_dir / "faithfulness.png", len(records)
    )
