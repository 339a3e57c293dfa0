"""Every number the project reports about a classifier, from one place.

The headline metrics come from the local `evaluate` module in `bps_classification/`. Around
it sit the BPS-specific views a single accuracy hides: accuracy per experimental condition
(dose x hour), the sham negative control (the model's classes on unirradiated 0 Gy images of
each branch, where anything far from chance is plate/batch signature rather than radiation
damage) and the majority-class baseline. Two classes or more; the names are the run's.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import recall_score

from ..bps import CONFOUND_NOTES, DOSE_MATCHED_PAIRS
from ..results import Baseline, Condition, ConditionScore, ConfoundCheck, PairScore, ShamControl, SplitMetrics

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
    """Accuracy, balanced accuracy, macro-F1, ROC-AUC (one-vs-rest for 3+ classes), loss, confusion matrix
    (rows = true) and n. The number of classes is the width of `probs`."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[-1] if probs.ndim == 2 else 2
    empty = [[0] * num_classes for _ in range(num_classes)]
    if len(labels) == 0:
        return {"n": 0, "accuracy": None, "balanced_accuracy": None, "f1_macro": None, "roc_auc": None,
                "loss": None, "confusion_matrix": empty}
    preds = probs.argmax(axis=-1)
    scores = load_metric().compute(predictions=preds, references=labels, prediction_scores=probs)
    result: dict[str, Any] = {key: _clean(value) for key, value in scores.items()}
    # the Trainer's loss (mean cross-entropy), from probabilities, so prediction reports it too
    result["loss"] = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())
    result["confusion_matrix"] = sk_confusion_matrix(labels, preds, labels=list(range(num_classes))).tolist()
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


def dose_matched_pairs(per_condition: Sequence[ConditionScore]) -> list[PairScore]:
    """Particle accuracy on each nearly dose-matched pair (`bps.DOSE_MATCHED_PAIRS`), pooled over hours; pairs
    without images of both arms are left out."""
    out = []
    for arms in DOSE_MATCHED_PAIRS:
        counts, correct = [], []
        for particle, dose in arms:
            rows = [c for c in per_condition if c.label == particle and c.dose_Gy is not None
                    and math.isclose(c.dose_Gy, dose) and c.accuracy is not None]
            counts.append(sum(c.n for c in rows))
            correct.append(sum(c.n * c.accuracy for c in rows))
        if min(counts) == 0:
            continue
        name = " vs ".join(f"{particle} {dose:g} Gy" for particle, dose in arms)
        balanced = float(np.mean([k / n for k, n in zip(correct, counts)]))
        out.append(PairScore(name, int(sum(counts)), float(sum(correct) / sum(counts)), balanced))
    return out


def confound_check(label_column: str | None, per_condition: Sequence[ConditionScore]) -> ConfoundCheck | None:
    """The task's confound in the BPS design (`bps.CONFOUND_NOTES`), with the dose-matched pairs for particle type;
    None for a task without one (hours) or data without BPS conditions."""
    task = label_column or "particle_type"
    if task not in CONFOUND_NOTES or not any(c.dose_Gy is not None for c in per_condition):
        return None
    pairs = dose_matched_pairs(per_condition) if task == "particle_type" else []
    return ConfoundCheck(CONFOUND_NOTES[task], pairs)


def sham_control(labels: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> ShamControl:
    """Metrics on 0 Gy images by branch, judged by `ShamControl.judge` (every branch is unirradiated)."""
    return ShamControl.judge(split_metrics(labels, probs), tuple(class_names))


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int],
                      class_names: Sequence[str]) -> Baseline:
    """Accuracy of always predicting the most common training class (the floor any model must beat)."""
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    counts = np.bincount(train_labels, minlength=len(class_names))
    majority = int(counts.argmax())
    accuracy = float((eval_labels == majority).mean()) if len(eval_labels) else None
    return Baseline(class_names[majority], accuracy)


#: The model beats the majority baseline when a one-sided binomial test of its correct test calls against the
#: baseline's accuracy gives p below this: an accuracy a few images above the baseline on a small test set is not
#: "better" (issue 23: a model at chance read as a result).
BASELINE_SIGNIFICANCE = 0.05


def judge_baseline(test: SplitMetrics, baseline: Baseline) -> Baseline:
    """`baseline` with its verdict: is the test accuracy above it beyond what chance allows on `test.n` images?"""
    if test.accuracy is None or baseline.accuracy is None or not test.n:
        return Baseline(baseline.majority_class, baseline.accuracy)
    correct = round(test.accuracy * test.n)
    p_value = 1.0 if baseline.accuracy >= 1 else binomtest(correct, test.n, baseline.accuracy, "greater").pvalue
    beaten = bool(p_value < BASELINE_SIGNIFICANCE)
    compared = (f"test accuracy {test.accuracy:.3f} vs {baseline.accuracy:.3f} from always predicting "
                f"{baseline.majority_class} (n={test.n}, one-sided binomial p={p_value:.2g})")
    text = f"above the majority baseline: {compared}" if beaten else f"no better than the majority baseline: {compared}"
    return Baseline(baseline.majority_class, baseline.accuracy, beaten, text)


def make_compute_metrics() -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` for the Trainer: scalar metrics only (the Trainer logs them per epoch)."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        result = classification_metrics(eval_prediction.label_ids, softmax(logits))
        return {k: (float("nan") if v is None else v) for k, v in result.items()
                if k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")}

    return compute_metrics
