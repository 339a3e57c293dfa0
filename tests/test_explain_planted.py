"""Planted answers: models whose right explanation is known by construction.

- `region_vit`: a one-layer ViT built by hand whose class token attends only to the patches of a
  known region and whose logit is the brightness read there. Every method must put its mass on
  that region, and every metric must give the value the construction implies.
- `layout_model`: the same idea for the token layouts whose head reads more than a CLS row (DeiT's distillation
  head, DINOv2 with registers, BEiT's mean pooling): the rollouts must read the rows the head pools.
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


def region_mask(patches=REGION_PATCHES) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for row, col in patches:
        mask[row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] = True
    return mask


def _images(seed=0, count=4, second_region=False):
    """Noise with a bright top-left region A (class 0: the logit grows with its brightness); `second_region`: a
    bright bottom-right region B too."""
    generator = torch.Generator().manual_seed(seed)
    gray = torch.rand(count, 1, SIZE, SIZE, generator=generator) * 0.6
    gray[:, :, :16, :16] += 0.4
    if second_region:
        gray[:, :, 16:, 16:] += 0.4
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


@pytest.mark.parametrize("method", ["rollout", "grad_rollout", "gradcam", "shap"])
def test_every_method_puts_its_mass_on_the_planted_region(method):
    from bps_vit.explain.methods.gradcam import GradCam

    model = region_vit()
    explainer = {"rollout": lambda: AttentionRollout(model), "grad_rollout": lambda: GradientRollout(model),
                 "gradcam": lambda: GradCam(model),
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


# --------------------------------------------------------------------------- planted answers per token layout
#
# One-layer models built by hand like `region_vit`, for the layouts where the head does not read a lone CLS row:
# DeiT with its distillation head (the mean of the CLS and distillation heads; tokens [CLS, DIST, patches]),
# DINOv2 with registers (CLS concatenated with the patch mean; tokens [CLS, registers, patches]) and BEiT with mean
# pooling (the mean of the patch tokens). Each pooled token reads only a known patch region, so the rollouts must put
# their mass there; reading the wrong rows (the CLS row alone) or the wrong columns (prefix tokens taken for patches,
# which shifts the map) misses a region. The residual-dimension plan (16 dims, +- pairs keep LayerNorm's mean 0):

E16 = torch.eye(16)
A_KEY, BRIGHT, CLS_QUERY, OUT, B_KEY, DIST_QUERY, PATCH_QUERY, REGISTER = (0, 1), (2, 3), (4, 5), 6, (8, 9), (10, 11), \
    (12, 13), (14, 15)
REGION_B = [(3, 3)]  # the bottom-right 8x8 pixels: the two regions are 5 of the 16 patches
#: layout -> (regions each query token reads: (query marker, key marker, tokens carrying the query), the known region)
LAYOUTS = {
    "deit_distilled": ([(CLS_QUERY, A_KEY, "cls"), (DIST_QUERY, B_KEY, "distillation")], REGION_PATCHES + REGION_B),
    "dinov2_with_registers": ([(CLS_QUERY, A_KEY, "cls"), (PATCH_QUERY, B_KEY, "patches")], REGION_PATCHES + REGION_B),
    "beit_mean_pooling": ([(PATCH_QUERY, A_KEY, "patches")], REGION_PATCHES),
}


def _pair(dims: tuple[int, int], scale: float = 10.0) -> torch.Tensor:
    return scale * (E16[dims[0]] - E16[dims[1]])


def _layout_config(layout: str):
    import transformers as tf

    body = dict(image_size=SIZE, patch_size=PATCH, num_channels=3, hidden_size=16, num_hidden_layers=1,
                num_attention_heads=1, intermediate_size=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                num_labels=2)
    if layout == "deit_distilled":
        return tf.DeiTConfig(**body), tf.DeiTForImageClassificationWithTeacher
    if layout == "dinov2_with_registers":
        return tf.Dinov2WithRegistersConfig(**body, num_register_tokens=2), tf.Dinov2WithRegistersForImageClassification
    return tf.BeitConfig(**body, use_mean_pooling=True, use_absolute_position_embeddings=True), \
        tf.BeitForImageClassification


def layout_model(layout: str):
    """The one-layer model of `layout` whose pooled output reads only `LAYOUTS[layout][1]`; logit 0 = the brightness
    read there (every head's weight on OUT), logit 1 its negative."""
    config, model_class = _layout_config(layout)
    config._attn_implementation = "eager"
    model = model_class(config).eval()
    params = dict(model.named_parameters())

    def find(suffix):
        return next(p for n, p in params.items() if n.endswith(suffix))

    with torch.no_grad():
        for name, param in params.items():
            param.zero_()
            if "norm" in name.rsplit(".", 2)[-2] or "lambda" in name:  # norms' weights and layer scales: identity
                param.fill_(1.0)
        projection = find("patch_embeddings.projection.weight")
        projection[BRIGHT[0]], projection[BRIGHT[1]] = 1.0 / (3 * PATCH * PATCH), -1.0 / (3 * PATCH * PATCH)
        positions = find("position_embeddings")[0]
        first_patch = positions.shape[0] - GRID * GRID
        for patches, key in ((REGION_PATCHES, A_KEY), (REGION_B, B_KEY)):
            for row, col in patches:
                positions[first_patch + row * GRID + col] += _pair(key)
        find("cls_token")[0, 0] = _pair(CLS_QUERY)
        if "distillation_token" in "".join(params):
            find("distillation_token")[0, 0] = _pair(DIST_QUERY)
        if "register_tokens" in "".join(params):
            find("register_tokens")[0, :] = _pair(REGISTER)  # a marker no query asks for: registers are never read
        for index, (query, key, carriers) in enumerate(LAYOUTS[layout][0]):
            if carriers == "patches":
                positions[first_patch:] += _pair(query)
            find("q_proj.weight")[index] = 20.0 * (E16[query[0]] - E16[query[1]])
            find("k_proj.weight")[index] = E16[key[0]] - E16[key[1]]
        find("v_proj.weight")[OUT] = E16[BRIGHT[0]] - E16[BRIGHT[1]]
        find("o_proj.weight")[OUT, OUT] = 1.0
        for name, param in params.items():  # every head reads OUT: DINOv2's [CLS | patch mean] reads it twice
            if "classifier.weight" in name:
                for start in range(0, param.shape[1], 16):
                    param[0, start + OUT], param[1, start + OUT] = 4.0, -4.0
    return model



@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_hand_built_layout_reads_only_its_known_region(layout):
    model = layout_model(layout)
    assert type(model).__name__.endswith(("WithTeacher", "Registers" + "ForImageClassification",
                                          "BeitForImageClassification"))
    pixel_values = _images(second_region=True)
    known = torch.from_numpy(region_mask(LAYOUTS[layout][1]))
    changed = torch.where(known, pixel_values, -pixel_values)  # every pixel outside the known region flipped
    with torch.no_grad():
        before, after = model(pixel_values=pixel_values).logits, model(pixel_values=changed).logits
        darker = model(pixel_values=pixel_values - 0.5 * known).logits
    # the mean-pooled head's LayerNorm sees the other patches' brightness in its variance: a small leak, bounded here
    torch.testing.assert_close(before, after, atol=0.05 if layout == "beit_mean_pooling" else 1e-3, rtol=0.02)
    assert (darker[:, 0] < before[:, 0] - 0.1).all()


@pytest.mark.parametrize("method", ["rollout", "grad_rollout"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_rollouts_read_the_rows_the_head_pools_and_skip_the_prefix_tokens(layout, method):
    model = layout_model(layout)
    explainer = AttentionRollout(model) if method == "rollout" else GradientRollout(model)
    maps = explainer(_images(second_region=True), targets=0)
    regions = [REGION_PATCHES, REGION_B] if len(LAYOUTS[layout][1]) > len(REGION_PATCHES) else [REGION_PATCHES]
    known = np.where(region_mask(LAYOUTS[layout][1]), ground_truth.FOCI_LABEL, 1)
    for heatmap in maps:
        scores = ground_truth.ground_truth_scores(heatmap, known)
        assert scores.foci_mass > 0.75 and scores.foci_mass > 2 * scores.foci_mass_uniform, scores
        for region in regions:  # each pooled token's region has its share: no head's rows left out
            assert heatmap[region_mask(region)].sum() > 0.3 * heatmap.sum(), (layout, method, region)


def test_head_weights_by_hand_for_every_pooling():
    from bps_vit.backbones import token_layout

    weights = {layout: token_layout(layout_model(layout)).head_weights(2 + GRID * GRID) for layout in LAYOUTS}
    patches = GRID * GRID
    deit = torch.zeros(2 + patches)
    deit[:2] = 0.5  # (CLS + DIST) / 2
    torch.testing.assert_close(weights["deit_distilled"], deit)
    beit = torch.full((2 + patches,), 1.0 / (patches + 1))  # 1 prefix token (CLS) here: mean over the other 17
    beit[0] = 0.0
    torch.testing.assert_close(weights["beit_mean_pooling"], beit)
    dinov2 = torch.zeros(2 + patches)  # CLS + 2 registers as prefix in a 2 + 16 sequence: half CLS, half patch mean
    dinov2[0], dinov2[3:] = 0.5, 0.5 / (patches - 1)
    torch.testing.assert_close(weights["dinov2_with_registers"], dinov2)
    # gradient rollout sums the rows the head reads (its gradients already weigh them)
    summed = {layout: token_layout(layout_model(layout)).head_weights(2 + patches, gradient_weighted=True)
              for layout in LAYOUTS}
    assert summed["deit_distilled"].tolist() == [1.0, 1.0] + [0.0] * patches
    assert summed["beit_mean_pooling"].tolist() == [0.0] + [1.0] * (patches + 1)
    assert summed["dinov2_with_registers"].tolist() == [1.0, 0.0, 0.0] + [1.0] * (patches - 1)
