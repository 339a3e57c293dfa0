"""The metrics module, loaded offline by path, on hand-checked examples."""

import numpy as np
import pytest

from bps_vit.metrics import (
    classification_metrics,
    load_metric,
    majority_baseline,
    make_compute_metrics,
    per_condition_accuracy,
    sham_control,
)


def test_evaluate_module_loads_offline_and_computes():
    metric = load_metric()
    out = metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], prediction_scores=[0.1, 0.9, 0.6, 0.2])
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["roc_auc"] == pytest.approx(1.0)  # scores rank all positives above negatives


def test_classification_metrics_hand_checked():
    labels = [0, 0, 0, 1, 1]
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    out = classification_metrics(labels, probs)
    assert out["confusion_matrix"] == [[2, 1], [1, 1]]  # rows = true Fe, X-ray
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["n"] == 5
    # ROC-AUC by hand: positives' scores 0.8, 0.45 vs negatives 0.1, 0.4, 0.7 -> 5 of 6 pairs ordered
    assert out["roc_auc"] == pytest.approx(5 / 6)


def test_single_class_gives_null_not_nan():
    out = classification_metrics([1, 1], np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert out["roc_auc"] is None and out["balanced_accuracy"] is None and out["accuracy"] == 0.5


def test_per_condition_accuracy_hand_checked():
    rows = per_condition_accuracy(
        labels=[0, 0, 1, 1, 1],
        preds=[0, 1, 1, 1, 0],
        conditions=["Fe 0.82Gy 4h", "Fe 0.82Gy 4h", "X-ray 1Gy 4h", "X-ray 0.1Gy 24h", "X-ray 0.1Gy 24h"],
    )
    assert [(r["condition"], r["n"], r["accuracy"]) for r in rows] == [
        ("Fe 0.82Gy 4h", 2, 0.5), ("X-ray 0.1Gy 24h", 2, 0.5), ("X-ray 1Gy 4h", 1, 1.0)]
    assert rows[1]["dose_Gy"] == 0.1 and rows[1]["hr_post_exposure"] == 24


def test_sham_control_flags_batch_signature():
    labels = np.array([0] * 10 + [1] * 10)
    perfect = np.eye(2)[labels] * 0.9 + 0.05
    flagged = sham_control(labels, perfect)
    assert flagged["batch_signature_suspected"] is True and "far from chance" in flagged["interpretation"]
    rng = np.random.default_rng(0)
    coin = rng.random(20)
    honest = sham_control(labels, np.stack([1 - coin, coin], axis=1))
    assert abs(honest["balanced_accuracy"] - 0.5) <= 0.2


def test_majority_baseline():
    assert majority_baseline([0, 0, 1], [0, 1, 1, 1]) == {"majority_class": "Fe", "accuracy": 0.25}


def test_compute_metrics_for_trainer_returns_scalars():
    from transformers import EvalPrediction

    fn = make_compute_metrics()
    out = fn(EvalPrediction(predictions=np.array([[2.0, 0.0], [0.0, 3.0]]), label_ids=np.array([0, 1])))
    assert out == {"accuracy": 1.0, "balanced_accuracy": 1.0, "f1_macro": 1.0, "roc_auc": 1.0}
