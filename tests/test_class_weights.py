"""The class-weighted loss (mutant M13): the weights and the loss, checked against values computed by hand and by
`torch.nn.functional.cross_entropy` directly, not through the code under test."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bps_vit.trainer import BPSTrainer, class_weights_for


def test_class_weights_are_inverse_frequency():
    # 3 Fe, 1 X-ray: total / (classes * count) = 4 / (2 * 3) and 4 / (2 * 1)
    weights = class_weights_for(np.array([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([2 / 3, 2.0])
    assert class_weights_for(np.array([0, 1, 0, 1]), 2).tolist() == pytest.approx([1.0, 1.0])


class _Logits(torch.nn.Module):
    """A 'model' that returns fixed logits, so the loss depends only on the loss code."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, pixel_values):
        return SimpleNamespace(logits=self.logits)


def test_weighted_loss_is_cross_entropy_with_those_weights_and_not_the_plain_one():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-0.2, 1.5], [1.0, 1.2]])
    labels = torch.tensor([0, 0, 0, 1])
    weights = torch.tensor([2 / 3, 2.0])
    # compute_loss's weighted branch reads only these: the weights and the model unwrapped (here: not wrapped)
    trainer = SimpleNamespace(class_weights=weights, accelerator=SimpleNamespace(unwrap_model=lambda model: model))
    inputs = {"pixel_values": torch.zeros(4, 3, 2, 2), "labels": labels.clone()}
    loss = BPSTrainer.compute_loss(trainer, _Logits(logits), inputs)

    # by hand: sum_i w[y_i] * -log softmax(x_i)[y_i] / sum_i w[y_i]
    log_p = logits.log_softmax(-1)[torch.arange(4), labels]
    by_hand = -(weights[labels] * log_p).sum() / weights[labels].sum()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels, weight=weights)))
    unweighted = float(torch.nn.functional.cross_entropy(logits, labels))
    assert abs(float(loss) - unweighted) > 1e-3
