"""The metrics module, loaded offline by path, on hand-checked examples."""

import numpy as np
import pytest

from bps_vit.bps import LABELS
from bps_vit.metrics import (
    classification_metrics,
    load_metric,
    majority_baseline,
    make_compute_metrics,
    per_condition_accuracy,
    sham_control,
)
from bps_vit.results import Baseline


def test_evaluate_module_loads_offline_and_computes():
    metric = load_metric()
    scores = [[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.8, 0.2]]
    out = metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], prediction_scores=scores)
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
    assert [(r.condition, r.n, r.accuracy) for r in rows] == [
        ("Fe 0.82Gy 4h", 2, 0.5), ("X-ray 0.1Gy 24h", 2, 0.5), ("X-ray 1Gy 4h", 1, 1.0)]
    assert rows[1].dose_Gy == 0.1 and rows[1].hr_post_exposure == 24


def test_loss_is_the_mean_cross_entropy():
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.9, 0.1]])
    out = classification_metrics([0, 1, 1], probs)
    assert out["loss"] == pytest.approx(-(np.log(0.8) + np.log(0.6) + np.log(0.1)) / 3)


def _one_hot_probs(preds):
    return np.eye(2)[np.asarray(preds)] * 0.9 + 0.05


def test_sham_control_flags_batch_signature_in_both_directions():
    labels = np.array([0] * 50 + [1] * 50)
    above = sham_control(labels, _one_hot_probs(labels), LABELS)  # the branches perfectly separated
    assert above.batch_signature_suspected is True and above.balanced_accuracy == 1.0
    assert above.interpretation.startswith("Warning")
    inverted = sham_control(labels, _one_hot_probs(1 - labels), LABELS)  # every branch called the other one (M09c)
    assert inverted.balanced_accuracy == 0.0
    assert inverted.batch_signature_suspected is True and "Below chance" in inverted.interpretation


def test_sham_control_does_not_flag_a_fair_coin():
    labels = np.array([0] * 200 + [1] * 200)
    coin = np.random.default_rng(0).integers(0, 2, 400)
    # the coin's balanced accuracy, by hand: mean of the two recalls
    expected = ((coin[:200] == 0).mean() + (coin[200:] == 1).mean()) / 2
    honest = sham_control(labels, _one_hot_probs(coin), LABELS)
    assert honest.balanced_accuracy == pytest.approx(expected)
    assert honest.batch_signature_suspected is False and "Within chance" in honest.interpretation
    # the band is the binomial 95% range of a coin on 200 + 200 images: 1.96 * sqrt(0.25/200 + 0.25/200) / 2
    assert honest.chance_band == pytest.approx(1.96 * np.sqrt(0.25 / 200 + 0.25 / 200) / 2)


def test_sham_control_without_both_branches_has_no_verdict():
    verdict = sham_control(np.array([1, 1, 1]), _one_hot_probs([1, 0, 1]), LABELS)
    assert verdict.batch_signature_suspected is None and "not available" in verdict.interpretation


def test_majority_baseline():
    assert majority_baseline([0, 0, 1], [0, 1, 1, 1], LABELS) == Baseline("Fe", 0.25)


def test_compute_metrics_for_trainer_returns_scalars():
    from transformers import EvalPrediction

    fn = make_compute_metrics()
    out = fn(EvalPrediction(predictions=np.array([[2.0, 0.0], [0.0, 3.0]]), label_ids=np.array([0, 1])))
    assert out == {"accuracy": 1.0, "balanced_accuracy": 1.0, "f1_macro": 1.0, "roc_auc": 1.0}
