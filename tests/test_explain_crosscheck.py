"""An independent cross-check of the faithfulness and localisation metrics with Quantus 0.6
(Hedström et al. 2023): pixel flipping (= our deletion curve), relevance mass accuracy (= our foci mass)
and the pointing game, on the same maps. Quantus is installed plainly (`pip install quantus==0.6.0`, no
torch extra: that extra pins torch < 2); its torch model wrapper works with torch 2.13.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bps_vit.explain import perturbation as pert
from bps_vit.explain.metrics import deletion, ground_truth

quantus = pytest.importorskip("quantus")

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIDE, STEPS = 16, 16
TOLERANCE = 1e-5  # float32 forward passes of the same inputs


class SmallNet(torch.nn.Module):
    """A seeded conv net on one-channel images: any model will do, the metrics must agree on it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * SIDE * SIDE, 2)

    def forward(self, pixel_values):
        return self.head(torch.relu(self.conv(pixel_values)).flatten(1))


def _data(count=4):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (count, 1, SIDE, SIDE)).astype(np.float32)
    heatmaps = rng.random((count, SIDE, SIDE)).astype(np.float32)  # continuous: no ties, one order
    masks = np.zeros((count, SIDE, SIDE), dtype=bool)
    masks[:, 4:8, 3:9] = True
    masks[1, 10:12, 10:14] = True
    heatmaps[2, 5, 5] = 2.0  # a hit
    heatmaps[3, 14, 1] = 2.0  # a miss
    return x, heatmaps, masks


def test_deletion_equals_quantus_pixel_flipping():
    model = SmallNet().eval()
    x, heatmaps, _ = _data()
    with torch.no_grad():
        targets = model(torch.from_numpy(x)).argmax(1).numpy()
    metric = quantus.PixelFlipping(features_in_step=SIDE * SIDE // STEPS, perturb_baseline=0.0, normalise=False,
                                   disable_warnings=True)
    theirs = np.asarray(metric(model=model, x_batch=x, y_batch=targets, a_batch=heatmaps[:, None], softmax=True,
                               channel_first=True, device="cpu"))
    baseline = torch.zeros(1, SIDE, SIDE)
    for i in range(len(x)):
        masks = torch.from_numpy(pert.step_masks(deletion.saliency_order(heatmaps[i]), (SIDE, SIDE), STEPS))[:, None]
        deleted = torch.where(masks, baseline, torch.from_numpy(x[i]))
        ours = pert.probability_from_log_odds(pert.target_log_odds(model, deleted, int(targets[i])))
        np.testing.assert_allclose(ours[1:], theirs[i], atol=TOLERANCE)  # Quantus starts after the first step


def test_foci_mass_and_pointing_game_equal_quantus():
    model = SmallNet().eval()
    x, heatmaps, masks = _data()
    y = np.zeros(len(x), dtype=int)
    kwargs = dict(model=model, x_batch=x, y_batch=y, a_batch=heatmaps[:, None], s_batch=masks[:, None].astype(float),
                  channel_first=True, device="cpu")
    mass = np.asarray(quantus.RelevanceMassAccuracy(disable_warnings=True)(**kwargs))
    pointing = np.asarray(quantus.PointingGame(disable_warnings=True)(**kwargs), dtype=float)
    ours_mass = [ground_truth.foci_mass(h, m) for h, m in zip(heatmaps, masks)]
    ours_pointing = [ground_truth.pointing_hit(h, m) for h, m in zip(heatmaps, masks)]
    np.testing.assert_allclose(ours_mass, mass, atol=1e-6)
    np.testing.assert_array_equal(ours_pointing, pointing)
    assert ours_pointing[2] == 1.0 and ours_pointing[3] == 0.0
