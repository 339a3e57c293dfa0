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
from sklearn.metrics import recall_score

from ..bps import LABELS
from ..results import Baseline, Condition, ConditionScore, ShamControl, SplitMetrics

METRIC_PATH = Path(__file__).resolve().parent / "bps_classification"


@lru_cache(maxsize=1)
def load_metric():
    """The project's `evaluate` metric, loaded by path so it works offline."""
    import evaluate  # deferred: evaluate takes seconds to import; only computing the metric needs it

    # keep_in_memory: no Arrow cache files or locks for a few hundred numbers
    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _clean(value: float) -> float | None:
    """JSON has no NaN: undefined metrics (one class only) become null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def balanced_accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Mean recall over the classes present in `labels`, which is scikit-learn's balanced accuracy (the headline
    metric's): a constant prediction scores exactly 1 / the number of classes present. NaN without labels.

    Written as scikit-learn's macro recall over the present classes, so the explain step's checks also get it on a
    single class (a few images; a sham set judged against the model's own calls) without a warning."""
    if len(labels) == 0:
        return float("nan")
    present = np.unique(np.asarray(labels))
    return float(recall_score(labels, predictions, labels=present, average="macro", zero_division=0))


def classification_metrics(labels: Sequence[int], probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, ROC-AUC, loss, confusion matrix (rows = true) and n."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    empty = [[0] * len(LABELS) for _ in LABELS]
    if len(labels) == 0:
        return {"n": 0, "accuracy": None, "balanced_accuracy": None, "f1_macro": None, "roc_auc": None,
                "loss": None, "confusion_matrix": empty}
    preds = probs.argmax(axis=-1)
    scores = load_metric().compute(predictions=preds, references=labels, prediction_scores=probs[:, 1])
    result: dict[str, Any] = {key: _clean(value) for key, value in scores.items()}
    # the Trainer's loss (mean cross-entropy), from probabilities, so prediction reports it too
    result["loss"] = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())
    result["confusion_matrix"] = sk_confusion_matrix(labels, preds, labels=list(range(len(LABELS)))).tolist()
    result["n"] = int(len(labels))
    return result


def split_metrics(labels: Sequence[int], probs: np.ndarray, conditions: Sequence[str] | None = None) -> SplitMetrics:
    """`classification_metrics` as the schema's `SplitMetrics`, with accuracy per condition when given."""
    metrics = SplitMetrics(**classification_metrics(labels, probs))
    if conditions is not None:
        metrics.per_condition = per_condition_accuracy(labels, np.asarray(probs).argmax(axis=-1), conditions)
    return metrics


def per_condition_accuracy(
    labels: Sequence[int], preds: Sequence[int], conditions: Sequence[str]
) -> list[ConditionScore]:
    """Accuracy within each experimental condition (`Fe 0.82Gy 4h`, ...), sorted by label, dose, hour."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    conditions = np.asarray(conditions, dtype=object)
    parsed = {text: Condition.parse(text) for text in set(conditions.tolist())}
    rows = []
    for text in sorted(parsed, key=lambda t: parsed[t].sort_key()):
        mask = conditions == text
        condition = parsed[text]
        accuracy = float((labels[mask] == preds[mask]).mean())
        rows.append(
            ConditionScore(text, condition.label, condition.dose_Gy, condition.hours, int(mask.sum()), accuracy)
        )
    return rows


def sham_control(labels: Sequence[int], probs: np.ndarray) -> ShamControl:
    """Fe-vs-X-ray metrics on 0 Gy images, judged by `ShamControl.judge` (both arms are unirradiated)."""
    return ShamControl.judge(split_metrics(labels, probs))


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int]) -> Baseline:
    """Accuracy of always predicting the most common training class (the floor any model must beat)."""
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    counts = np.bincount(train_labels, minlength=len(LABELS))
    majority = int(counts.argmax())
    accuracy = float((eval_labels == majority).mean()) if len(eval_labels) else None
    return Baseline(LABELS[majority], accuracy)


def make_compute_metrics() -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` for the Trainer: scalar metrics only (the Trainer logs them per epoch)."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        result = classification_metrics(eval_prediction.label_ids, softmax(logits))
        return {k: (float("nan") if v is None else v) for k, v in result.items()
                if k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")}

    return compute_metrics
