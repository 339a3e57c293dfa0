"""Planted answers: models whose right explanation is known by construction.

- `region_vit`: a one-layer ViT built by hand whose class token attends only to the patches of a
  known region and whose logit is the brightness read there. Every method must put its mass on
  that region, and every metric must give the value the construction implies.
- `BrightnessModel`: reads only the image's global brightness. A blur keeps it, so the
  perturbation check must say that a blur baseline does not remove the signal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bps_vit.explain import AttentionRollout, GradientRollout, ShapExplainer
from bps_vit.explain import perturbation as pert
from bps_vit.explain.metrics import deletion, ground_truth, stats, verdicts
from bps_vit.results import Interval

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, PATCH = 32, 8
GRID = SIZE // PATCH
REGION_PATCHES = [(0, 0), (0, 1), (1, 0), (1, 1)]  # the top-left 16x16 pixels


def region_vit():
    """ViT (1 layer, 1 head, hidden 16) whose CLS attends only to REGION_PATCHES; logit 0 = their brightness."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=SIZE, patch_size=PATCH, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=1, intermediate_size=16, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, num_labels=2, qkv_bias=True)
    config._attn_implementation = "eager"
    model = ViTForImageClassification(config).eval()
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)
    e = torch.eye(16)
    vit = model.vit
    with torch.no_grad():
        # patch embedding: +mean brightness on dim 2, - on dim 3 (zero mean over dims, so LayerNorm keeps it)
        vit.embeddings.patch_embeddings.projection.weight[2] = 1.0 / (3 * PATCH * PATCH)
        vit.embeddings.patch_embeddings.projection.weight[3] = -1.0 / (3 * PATCH * PATCH)
        vit.embeddings.cls_token[0, 0] = 10.0 * (e[4] - e[5])  # the CLS marker
        for row, col in REGION_PATCHES:  # the region marker, carried by the position embeddings
            vit.embeddings.position_embeddings[0, 1 + row * GRID + col] = 10.0 * (e[0] - e[1])
        layer = vit.layers[0] if hasattr(vit, "layers") else vit.encoder.layer[0]
        for norm in (layer.layernorm_before, layer.layernorm_after, vit.layernorm):
            norm.weight.fill_(1.0)
        attention = layer.attention.attention if hasattr(layer.attention, "attention") else layer.attention
        query = getattr(attention, "query", None) or attention.q_proj
        key = getattr(attention, "key", None) or attention.k_proj
        value = getattr(attention, "value", None) or attention.v_proj
        query.weight[0] = 20.0 * (e[4] - e[5])  # CLS asks for the region marker...
        key.weight[0] = e[0] - e[1]  # ...which only region patches carry
        value.weight[6] = e[2] - e[3]  # and reads their brightness
        output = layer.attention.output.dense if hasattr(layer.attention, "output") else layer.attention.o_proj
        output.weight[6, 6] = 1.0
        model.classifier.weight[0, 6] = 4.0
        model.classifier.weight[1, 6] = -4.0
    return model


def region_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for row, col in REGION_PATCHES:
        mask[row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] = True
    return mask


def _images(seed=0, count=4):
    generator = torch.Generator().manual_seed(seed)
    gray = torch.rand(count, 1, SIZE, SIZE, generator=generator) * 0.6
    gray[:, :, :16, :16] += 0.4  # a bright region: class 0 (logit grows with its brightness)
    return ((gray - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


def test_the_hand_built_vit_reads_only_its_region():
    model = region_vit()
    pixel_values = _images()
    changed = pixel_values.clone()
    changed[:, :, 16:, :] = -1.0  # everything outside the region
    changed[:, :, :16, 16:] = 1.0
    with torch.no_grad():
        before, after = model(pixel_values=pixel_values).logits, model(pixel_values=changed).logits
        darker = model(pixel_values=pixel_values - 0.5 * torch.from_numpy(region_mask())).logits
    torch.testing.assert_close(before, after, atol=1e-3, rtol=1e-3)
    assert (before[:, 0] > 0).all() and (darker[:, 0] < before[:, 0]).all()


@pytest.mark.parametrize("method", ["rollout", "grad_rollout", "shap"])
def test_every_method_puts_its_mass_on_the_planted_region(method):
    model = region_vit()
    explainer = {"rollout": lambda: AttentionRollout(model), "grad_rollout": lambda: GradientRollout(model),
                 "shap": lambda: ShapExplainer(model, masker="constant(0.0)", max_evals=300, batch_size=64)}[method]()
    maps = explainer(_images(), targets=0)
    mask = region_mask()
    labels = np.where(mask, ground_truth.FOCI_LABEL, 1)
    for heatmap in maps:
        scores = ground_truth.ground_truth_scores(heatmap, labels)
        # token maps are upsampled bilinearly, so a little mass bleeds past the region's edge
        assert scores.foci_mass > (0.95 if method == "shap" else 0.75), scores
        assert scores.pointing_game == 1.0
        assert scores.foci_mass > 2 * scores.foci_mass_baseline


def test_every_metric_gives_the_known_value_for_the_planted_map():
    """The true map (the region) ranks the region first. With 16 steps the region (1/4 of the pixels) is gone
    after 4 steps, so the deletion curve reaches the all-deleted value at step 4 and stays there."""
    model = region_vit()
    pixel_values = _images(count=1)
    baseline = torch.full_like(pixel_values, -1.0)  # black: the region's brightness is removed
    truth = region_mask().astype(np.float64)
    order = deletion.saliency_order(truth)
    masks = torch.from_numpy(pert.step_masks(order, (SIZE, SIZE), 16))[:, None]
    deleted = torch.where(masks, baseline, pixel_values)
    curve = pert.target_log_odds(model, deleted, 0)
    empty = pert.target_log_odds(model, baseline, 0)[0]
    np.testing.assert_allclose(curve[4:], empty, atol=1e-4)
    assert (np.diff(curve[:5]) < 0).all()
    scores = ground_truth.ground_truth_scores(truth, np.where(region_mask(), ground_truth.FOCI_LABEL, 1))
    assert scores.foci_mass == 1.0 and scores.pointing_game == 1.0
    assert scores.foci_mass_uniform == pytest.approx(0.25)
    interval = stats.bootstrap_mean_ci([1.0, 1.0, 1.0])
    assert interval == Interval(mean=1.0, ci95=[1.0, 1.0], n=3) and stats.excludes_zero_above(interval)
    assert stats.excludes_zero_above(stats.bootstrap_mean_ci([1.0, -1.0, 0.5, -0.5])) is False


class BrightnessModel(torch.nn.Module):
    """Reads only the mean brightness of the whole image (as a per-image stretch lets a model do)."""

    def forward(self, pixel_values):
        score = (pixel_values.mean(dim=(1, 2, 3)) + 0.5) * 8.0
        return torch.stack([score, -score], dim=1)


class SpotModel(torch.nn.Module):
    """Reads only the brightest pixel (a local signal: foci)."""

    def forward(self, pixel_values):
        score = (pixel_values.amax(dim=(1, 2, 3)) - 0.5) * 8.0
        return torch.stack([score, -score], dim=1)


def _two_classes():
    generator = torch.Generator().manual_seed(0)
    gray = torch.rand(8, 1, SIZE, SIZE, generator=generator) * 0.2
    labels = np.array([0, 1] * 4)
    gray[labels == 0] += 0.3  # class 0 brighter overall...
    gray[labels == 0, :, 10, 10] = 1.0  # ...and with one bright spot
    return ((gray - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous(), labels


def test_the_check_flags_a_blur_that_keeps_a_global_signal():
    pixel_values, labels = _two_classes()
    for model, blur_removes in ((BrightnessModel(), False), (SpotModel(), True)):
        clean = pert.probabilities_of(model, pixel_values)
        targets = clean.argmax(1)
        assert (targets == labels).all()
        blurred = pert.probabilities_of(model, deletion.baseline_images(pixel_values, "blur"))
        check = verdicts.whole_image_check(blurred, labels, targets)
        assert check.removes_signal is blur_removes, (type(model).__name__, check)
    untouched = verdicts.whole_image_check(clean, labels, targets)
    assert untouched.balanced_accuracy == 1.0 and untouched.chance == 0.5
