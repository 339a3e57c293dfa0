"""Every number the project reports about a classifier, from one place.

The headline metrics come from the local `evaluate` module in `bps_classification/`. Around
it sit the BPS-specific views a single accuracy hides: accuracy per experimental condition
(dose x hour), the sham negative control (Fe vs X-ray on unirradiated 0 Gy images, where
anything far from chance is plate/batch signature rather than radiation damage) and the
majority-class baseline.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from ..meta import LABELS

METRIC_PATH = Path(__file__).resolve().parent / "bps_classification"
SHAM_TOLERANCE = 0.1  # |sham accuracy - 0.5| above this is flagged as a likely batch signature


@lru_cache(maxsize=1)
def load_metric():
    """The project's `evaluate` metric, loaded by path so it works offline."""
    import evaluate

    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)  # no Arrow cache files or locks for a few hundred numbers


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _clean(value: float) -> float | None:
    """JSON has no NaN: undefined metrics (one class only) become null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def classification_metrics(labels: Sequence[int], probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, ROC-AUC, confusion matrix (rows = true) and n."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return {"n": 0, "accuracy": None, "balanced_accuracy": None, "f1_macro": None, "roc_auc": None,
                "confusion_matrix": [[0, 0], [0, 0]]}
    preds = probs.argmax(axis=-1)
    scores = load_metric().compute(predictions=preds, references=labels, prediction_scores=probs[:, 1])
    result: dict[str, Any] = {key: _clean(value) for key, value in scores.items()}
    result["confusion_matrix"] = sk_confusion_matrix(labels, preds, labels=list(range(len(LABELS)))).tolist()
    result["n"] = int(len(labels))
    return result


def per_condition_accuracy(labels: Sequence[int], preds: Sequence[int], conditions: Sequence[str]) -> list[dict]:
    """Accuracy within each experimental condition (`Fe 0.82Gy 4h`, ...), sorted by label, dose, hour."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    conditions = np.asarray(conditions, dtype=object)
    rows = []
    for condition in sorted(set(conditions.tolist()), key=_condition_sort_key):
        mask = conditions == condition
        label, dose, hours = _parse_condition(condition)
        rows.append({
            "condition": condition,
            "label": label,
            "dose_Gy": dose,
            "hr_post_exposure": hours,
            "n": int(mask.sum()),
            "accuracy": float((labels[mask] == preds[mask]).mean()),
        })
    return rows


def _parse_condition(condition: str) -> tuple[str, float | None, int | None]:
    parts = condition.split()
    try:
        return parts[0], float(parts[1].removesuffix("Gy")), int(parts[2].removesuffix("h"))
    except (IndexError, ValueError):
        return parts[0] if parts else condition, None, None


def _condition_sort_key(condition: str) -> tuple:
    label, dose, hours = _parse_condition(condition)
    return (label, dose if dose is not None else -1.0, hours if hours is not None else -1)


def sham_control(labels: Sequence[int], probs: np.ndarray) -> dict[str, Any]:
    """Fe-vs-X-ray metrics on 0 Gy images: both arms are unirradiated, so chance (0.5) is the honest result."""
    result = classification_metrics(labels, probs)
    balanced = result.get("balanced_accuracy")
    if balanced is None:
        result["interpretation"] = "not available (the sham set needs images of both branches)"
        result["batch_signature_suspected"] = None
    else:
        suspected = abs(balanced - 0.5) > SHAM_TOLERANCE
        result["batch_signature_suspected"] = bool(suspected)
        result["interpretation"] = (
            f"balanced accuracy {balanced:.3f} on unirradiated images is far from chance (0.5): the model "
            "separates the branches without radiation damage, i.e. by plate/batch signature; treat the test "
            "accuracy with suspicion." if suspected else
            f"balanced accuracy {balanced:.3f} on unirradiated images is near chance (0.5): no sign that the "
            "model relies on plate/batch signature."
        )
    return result


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int]) -> dict[str, Any]:
    """Accuracy of always predicting the most common training class (the floor any model must beat)."""
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    counts = np.bincount(train_labels, minlength=len(LABELS))
    majority = int(counts.argmax())
    accuracy = float((eval_labels == majority).mean()) if len(eval_labels) else None
    return {"majority_class": LABELS[majority], "accuracy": accuracy}


def make_compute_metrics() -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` for the Trainer: scalar metrics only (the Trainer logs them per epoch)."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        result = classification_metrics(eval_prediction.label_ids, softmax(logits))
        return {k: (float("nan") if v is None else v) for k, v in result.items()
                if k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")}

    return compute_metrics
