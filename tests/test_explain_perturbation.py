"""Raw-space perturbation, the one raw <-> model map resampler (both ways), the causal foci test and the
bootstrap interval, on images with known foci."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bps_vit.explain import perturbation as pert
from bps_vit.explain.methods import base
from bps_vit.explain.metrics import causal, deletion, stats
from bps_vit.imaging import Preprocessor, Stretch
from tests.support.images import nucleus_crop_with_mask as draw_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_resample_map_up_and_down():
    model_map = np.zeros((8, 8), np.float32)
    model_map[2:4, 5:7] = 1.0
    up = base.resample_map(model_map, (40, 48))  # 5 x 6 raw pixels per model pixel
    assert up.shape == (40, 48) and up.dtype == np.float32
    hot = np.unravel_index(np.argmax(up), up.shape)
    assert 10 <= hot[0] < 20 and 30 <= hot[1] < 42  # the hot model pixels land on their raw pixels
    down = base.resample_map(up, (8, 8))
    np.testing.assert_allclose(down.mean(), model_map.mean(), atol=0.02)  # antialiased: an area average
    assert np.corrcoef(down.ravel(), model_map.ravel())[0, 1] > 0.9
    raw = np.zeros((40, 48), np.float32)
    raw[10:20, 30:42] = 1.0
    np.testing.assert_allclose(base.resample_map(raw, (8, 8)), model_map, atol=1e-6)  # exact on whole blocks
    batch = base.resample_map(np.stack([raw, 2 * raw])[None], (8, 8))  # leading axes are kept
    assert batch.shape == (1, 2, 8, 8) and np.allclose(batch[0, 1], 2 * batch[0, 0])
    np.testing.assert_array_equal(base.resample_map(raw, (40, 48)), raw)


def test_opening_fill_removes_the_foci_and_keeps_the_nucleus():
    rng = np.random.default_rng(0)
    for label in ("Fe", "X-ray"):
        image, mask = draw_image(rng, label)
        fill = pert.opening_fill(image)
        assert fill.dtype == image.dtype and fill.shape == image.shape
        foci, nucleus = mask == 2, mask == 1
        excess = image[foci].astype(float).mean() - np.median(image[nucleus])
        left = fill[foci].astype(float).mean() - np.median(image[nucleus])
        assert left < 0.25 * excess, (label, excess, left)  # the foci's brightness is gone
        level = np.median(image[nucleus])
        assert abs(np.median(fill[nucleus].astype(float)) - level) < 0.15 * level


def test_raw_deletion_runs_the_models_own_preprocessing():
    rng = np.random.default_rng(1)
    image, _ = draw_image(rng, "Fe")
    preprocessor = Preprocessor(stretch=Stretch(clip=(250.0, 3000.0)), height=32, width=32)
    raw = pert.RawImage(image, preprocessor)
    everything = np.ones((1, *image.shape), dtype=bool)
    nothing = np.zeros_like(everything)
    np.testing.assert_array_equal(raw.grays(nothing)[0], preprocessor.gray(image))
    np.testing.assert_array_equal(raw.grays(everything)[0], preprocessor.gray(raw.fill))

    class MaxModel(torch.nn.Module):
        def forward(self, pixel_values):
            score = pixel_values.amax(dim=(1, 2, 3))
            return torch.stack([score, -score], dim=1)

    order = np.argsort(-image.ravel(), kind="stable")  # brightest raw pixels first
    deleted, inserted = deletion.raw_deletion_insertion(MaxModel(), raw, order, target=0, steps=8)
    assert len(deleted) == len(inserted) == 9
    assert deleted[0] == pytest.approx(inserted[-1]) and deleted[-1] == pytest.approx(inserted[0])
    assert deleted[1] < deleted[0]  # removing the brightest eighth removes the maximum


def test_causal_masks_are_foci_and_as_many_nucleus_pixels():
    rng = np.random.default_rng(2)
    image, mask = draw_image(rng, "X-ray")
    foci, random = causal.ablation_masks(mask, dilation=2, seed=0, index=3)
    assert foci.sum() == random.sum() > 0 and not (foci & random).any()
    assert ((mask[random] == 1) | (mask[random] == 2)).all()
    again = causal.ablation_masks(mask, dilation=2, seed=0, index=3)[1]
    np.testing.assert_array_equal(random, again)  # keyed by (seed, image index)
    fill = causal.nucleus_fill(image, mask)
    assert fill.dtype == image.dtype and np.unique(fill).size == 1


def test_causal_summary_by_hand():
    labels = np.array([0, 1, 0, 1])
    confident = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    constant = np.tile([[0.6, 0.4]], (4, 1))
    probabilities = np.stack([confident, constant, confident], axis=1)
    result = causal.summarize_causal(probabilities, labels, dilation=2)
    assert result.untouched.accuracy == 1.0 and result.foci_ablated.balanced_accuracy == 0.5
    assert result.untouched.mean_p_true == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)
    assert result.foci_ablated_near_chance and result.random_ablation_near_untouched


def test_bootstrap_interval_covers_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.3, 1.0, 200)
    interval = stats.bootstrap_mean_ci(values, seed=1)
    low, high = interval.ci95
    assert low < interval.mean < high and interval.n == 200
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)  # the normal-theory width
    assert stats.bootstrap_mean_ci(values, seed=1) == interval
    assert stats.bootstrap_mean_ci([np.nan, None]) is None
