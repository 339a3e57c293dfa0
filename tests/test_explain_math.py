"""Explanation arithmetic checked against values computed here by hand, independently of the code under test."""

from __future__ import annotations

import numpy as np
import torch

from bps_vit.explain.methods.grad_rollout import gradient_rollout_from_attentions
from bps_vit.explain.metrics import stats
from bps_vit.explain.metrics.deletion import random_order


def test_gradient_rollout_pairs_each_layer_with_its_own_gradient():
    """Two layers, one head, 2 tokens: relevance = (I + W2)(I + W1), W_l = max(G_l * A_l, 0) (Chefer et al. 2021)."""
    a1 = np.array([[0.9, 0.1], [0.3, 0.7]])
    a2 = np.array([[0.2, 0.8], [0.6, 0.4]])
    g1 = np.array([[1.0, -2.0], [0.5, 1.0]])
    g2 = np.array([[3.0, 0.5], [-1.0, 2.0]])
    eye = np.eye(2)
    w1, w2 = np.maximum(g1 * a1, 0), np.maximum(g2 * a2, 0)
    expected = (eye + w2) @ (eye + w1)
    swapped = (eye + np.maximum(g1 * a2, 0)) @ (eye + np.maximum(g2 * a1, 0))  # gradients paired in reverse
    assert not np.allclose(expected, swapped)  # the case tells the two pairings apart

    def as_layer(matrix):
        return torch.tensor(matrix, dtype=torch.float32)[None, None]  # [batch=1, heads=1, T, T]

    relevance = gradient_rollout_from_attentions([as_layer(a1), as_layer(a2)], [as_layer(g1), as_layer(g2)])
    np.testing.assert_allclose(relevance[0].numpy(), expected, rtol=1e-6)


def test_random_order_depends_on_the_image_and_repeats_for_the_same_arguments():
    first, again = random_order(64, seed=3, image_index=0), random_order(64, seed=3, image_index=0)
    other_image, other_seed = random_order(64, seed=3, image_index=1), random_order(64, seed=4, image_index=0)
    np.testing.assert_array_equal(first, again)
    assert sorted(first.tolist()) == list(range(64))  # a permutation of every pixel
    assert not np.array_equal(first, other_image)
    assert not np.array_equal(first, other_seed)


def test_curve_auc_is_the_trapezoid_over_fractions_0_to_1():
    """The AUC the pipeline uses (metrics/stats.py): samples at fractions 0, 1/2, 1 of the pixels removed, so the
    step is 1/(len - 1) = 1/2: (0 + 1)/2 * 1/2 + (1 + 1)/2 * 1/2 = 0.75. (A step of 1/len would give 0.5.)"""
    assert stats.curve_auc([0.0, 1.0, 1.0]) == 0.75
    assert stats.curve_auc([1.0, 0.0]) == 0.5
    assert np.isnan(stats.curve_auc([1.0]))
