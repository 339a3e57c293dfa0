"""Explanation methods: hand-checked rollout, gradient pairing, SHAP on a model with a known answer,
faithfulness helpers, and the clear error for models without attention maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bps_vit.explain import (
    AttentionRollout,
    GradientRollout,
    MissingAttentionsError,
    ShapExplainer,
    gradient_rollout_from_attentions,
    normalize_heatmaps,
    rollout_from_attentions,
)
from bps_vit.explain import perturbation as pert
from bps_vit.explain.methods.base import log_odds
from bps_vit.explain.methods.shap import make_masker
from bps_vit.explain.metrics import deletion, ground_truth, randomization, stats
from bps_vit.model import build_model_from_config
from tests.support.tiny_models import TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _attn(*rows) -> torch.Tensor:
    """A [1, heads, T, T] attention tensor from per-head nested lists."""
    return torch.tensor([rows], dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model_from_config(TINY_CONFIG, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    gray = torch.rand(3, 1, 64, 64, generator=generator)
    return ((gray - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


# --------------------------------------------------------------------------- rollout


def test_rollout_one_layer_by_hand():
    # (A + I) = [[1.5, .5], [.2, 1.8]]; each row sums to 2
    result = rollout_from_attentions([_attn([[0.5, 0.5], [0.2, 0.8]])])
    assert torch.allclose(result[0], torch.tensor([[0.75, 0.25], [0.1, 0.9]]))


def test_rollout_discard_and_keepdim_normalisation_by_hand():
    # discard 0.5 of the 2 non-CLS-column entries -> drop the 0.5 at (0, 1); the CLS column is kept.
    # (A + I) = [[1.5, 0], [0.2, 1.8]]: rows sum to 1.5 and 2.0, so each ROW is divided by its own sum.
    result = rollout_from_attentions([_attn([[0.5, 0.5], [0.2, 0.8]])], discard_ratio=0.5)
    assert torch.allclose(result[0], torch.tensor([[1.0, 0.0], [0.1, 0.9]]))
    # the classic bug, a / a.sum(-1) without keepdim, divides columns instead: (1, 0) would read 0.2 / 1.5
    assert not torch.isclose(result[0, 1, 0], torch.tensor(0.2 / 1.5))


def test_rollout_two_layers_multiply_in_order():
    first = _attn([[0.5, 0.5], [0.2, 0.8]])  # -> [[.75, .25], [.1, .9]]
    second = _attn([[0.9, 0.1], [0.4, 0.6]])  # -> [[.95, .05], [.2, .8]]
    result = rollout_from_attentions([first, second])
    expected = torch.tensor([[0.95, 0.05], [0.2, 0.8]]) @ torch.tensor([[0.75, 0.25], [0.1, 0.9]])
    assert torch.allclose(result[0], expected)
    assert torch.allclose(result[0], torch.tensor([[0.7175, 0.2825], [0.23, 0.77]]))


@pytest.mark.parametrize(
    "fusion, fused",
    [("mean", [[0.5, 0.5], [0.5, 0.5]]), ("max", [[0.8, 0.8], [0.7, 0.7]]), ("min", [[0.2, 0.2], [0.3, 0.3]])],
)
def test_rollout_head_fusion(fusion, fused):
    attention = _attn([[0.8, 0.2], [0.3, 0.7]], [[0.2, 0.8], [0.7, 0.3]])
    fused = torch.tensor(fused) + torch.eye(2)
    expected = fused / fused.sum(dim=-1, keepdim=True)
    assert torch.allclose(rollout_from_attentions([attention], head_fusion=fusion)[0], expected)


def test_rollout_is_per_item_in_a_batch():
    generator = torch.Generator().manual_seed(0)
    layers = [torch.rand(3, 2, 5, 5, generator=generator).softmax(-1) for _ in range(3)]
    together = rollout_from_attentions(layers, "max", 0.6)
    for b in range(3):
        alone = rollout_from_attentions([layer[b : b + 1] for layer in layers], "max", 0.6)
        assert torch.allclose(together[b], alone[0], atol=1e-6)


def test_rollout_rejects_bad_settings(tiny_model):
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout(tiny_model, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        AttentionRollout(tiny_model, discard_ratio=1.0)


# --------------------------------------------------------------------------- gradient rollout


def test_gradient_rollout_one_layer_by_hand():
    attention = _attn([[0.6, 0.4], [0.5, 0.5]], [[0.2, 0.8], [0.1, 0.9]])
    gradient = _attn([[1.0, -1.0], [2.0, 0.0]], [[0.5, 0.5], [-1.0, 1.0]])
    # (G*A)+ per head: [[.6, 0], [1, 0]] and [[.1, .4], [0, .9]]; mean: [[.35, .2], [.5, .45]]
    expected = torch.eye(2) + torch.tensor([[0.35, 0.2], [0.5, 0.45]])
    assert torch.allclose(gradient_rollout_from_attentions([attention], [gradient])[0], expected)


def _probe_gradients(model, pixel_values, targets, monkeypatch):
    """Each layer's attention gradient by an independent route: a zero 'probe' added to the attention
    probabilities inside the eager kernel; d(target logit)/d(probe of layer l) = d/dA_l."""
    import transformers.models.vit.modeling_vit as vit

    original = vit.eager_attention_forward
    probes, attentions = [], []

    def probed(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        weights = torch.softmax(torch.matmul(query, key.transpose(2, 3)) * scaling, dim=-1)
        probe = torch.zeros_like(weights, requires_grad=True)
        probes.append(probe)
        attentions.append(weights.detach())
        weights = weights + probe
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    monkeypatch.setattr(vit, "eager_attention_forward", probed)
    logits = model(pixel_values=pixel_values).logits
    gradients = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), probes)
    monkeypatch.setattr(vit, "eager_attention_forward", original)
    return attentions, list(gradients)


def hand_gradient_rollout(attentions, gradients) -> np.ndarray:
    """Chefer et al. 2021, written out in numpy: W_l = mean over heads of max(G_l * A_l, 0); R = I, then
    R <- R + W_l @ R layer by layer (first layer first), i.e. R = (I + W_L) ... (I + W_1). [B, T, T]."""
    attentions = [np.asarray(a, dtype=np.float64) for a in attentions]
    batch, _, tokens, _ = attentions[0].shape
    relevance = np.repeat(np.eye(tokens)[None], batch, axis=0)
    for attention, gradient in zip(attentions, gradients):
        weighted = np.maximum(np.asarray(gradient, dtype=np.float64) * attention, 0.0).mean(axis=1)
        relevance = relevance + weighted @ relevance
    return relevance


def test_gradient_rollout_pairs_each_layer_with_its_own_gradient(monkeypatch):
    """The pipeline's maps against the formula worked out here, on a model small enough to read: a 16x32 input in
    16x16 patches is 2 patches + CLS = 3 tokens, 2 layers of 2 heads. The attentions and their gradients come by an
    independent route (the probe); the map is the CLS row's two patch columns, bilinearly upsampled (numpy's interp:
    column x sits at patch coordinate (x + 0.5) * 2 / 32 - 0.5, clamped to the two patch centres)."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=[16, 32], patch_size=16, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=16, num_labels=2, attn_implementation="eager")
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    pixel_values = torch.randn(2, 3, 16, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1])
    explanation = GradientRollout(model).explain(pixel_values, targets=targets)
    attentions, gradients = _probe_gradients(model, pixel_values, targets, monkeypatch)
    assert [tuple(a.shape) for a in attentions] == [(2, 2, 3, 3)] * 2

    def as_map(relevance):  # [B, 3, 3] -> [B, 16, 32]
        columns = (np.arange(32) + 0.5) * 2 / 32 - 0.5
        rows = [np.interp(columns, [0.0, 1.0], cls_row[1:]) for cls_row in relevance[:, 0]]
        return np.repeat(np.stack(rows)[:, None], 16, axis=1)

    expected = as_map(hand_gradient_rollout(attentions, gradients))
    assert np.ptp(expected[:, 0]) > 0  # the two patches differ: a map with something to compare
    np.testing.assert_allclose(explanation.raw, expected, rtol=1e-4, atol=1e-7)
    # pairing the gradients with the wrong layers (the hook-order bug) gives another map
    reversed_pairing = as_map(hand_gradient_rollout(attentions, gradients[::-1]))
    assert not np.allclose(explanation.raw, reversed_pairing, rtol=1e-3, atol=1e-7)
    # and changing one layer's gradient changes the map
    perturbed = [g.clone() for g in gradients]
    perturbed[1] = perturbed[1] * 0
    assert not np.allclose(expected, as_map(hand_gradient_rollout(attentions, perturbed)), rtol=1e-3, atol=1e-7)


def test_gradient_rollout_is_class_specific(tiny_model, batch):
    explainer = GradientRollout(tiny_model)
    assert not np.allclose(explainer.explain(batch, 0).raw, explainer.explain(batch, 1).raw)


# --------------------------------------------------------------------------- the common call shape


@pytest.mark.parametrize("make", [
    lambda m: AttentionRollout(m),
    lambda m: AttentionRollout(m, "max", 0.9),
    lambda m: GradientRollout(m),
    lambda m: ShapExplainer(m, max_evals=64, batch_size=32),
])
def test_heatmaps_shape_finite_normalised_and_batch_safe(tiny_model, batch, make):
    explainer = make(tiny_model)
    maps = explainer(batch)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.allclose(maps.reshape(3, -1).max(axis=1), 1.0)
    alone = explainer(batch[1:2])
    np.testing.assert_allclose(alone[0], maps[1], atol=1e-4)


def test_none_target_is_the_predicted_class(tiny_model, batch):
    explanation = GradientRollout(tiny_model).explain(batch)
    np.testing.assert_array_equal(explanation.targets, explanation.probabilities.argmax(axis=1))
    with pytest.raises(ValueError, match="target"):
        GradientRollout(tiny_model).explain(batch, targets=[0, 5, 1])


def test_normalize_heatmaps_flat_and_nan():
    maps = np.stack([np.full((4, 4), 3.0), np.arange(16.0).reshape(4, 4)])
    maps[1, 0, 0] = np.nan
    out = normalize_heatmaps(maps)
    assert np.isfinite(out).all() and out[0].max() == 0.0 and out[1].max() == 1.0


@pytest.mark.parametrize("cls", [AttentionRollout, GradientRollout])
def test_missing_attentions_give_a_clear_error(cls, batch):
    sdpa_model = build_model_from_config(TINY_CONFIG, attn_implementation="sdpa").eval()
    with pytest.raises(MissingAttentionsError, match='attn_implementation="eager"'):
        cls(sdpa_model)(batch)


# --------------------------------------------------------------------------- SHAP


class QuadrantModel(torch.nn.Module):
    """Logits from the mean brightness of the top-left quadrant only: the right answer is known."""

    def forward(self, pixel_values):
        half = pixel_values.shape[-1] // 2
        score = pixel_values[:, 0, :half, :half].mean(dim=(1, 2)) * 4.0
        return torch.stack([score, -score], dim=1)


@pytest.mark.parametrize("masker", ["blur(16,16)", "constant(0.5)"])
def test_shap_concentrates_on_the_quadrant_the_model_reads(masker):
    generator = torch.Generator().manual_seed(3)
    gray = torch.rand(2, 1, 64, 64, generator=generator)
    gray[:, :, 4:28, 4:28] = 0.95  # a bright object in the quadrant the model reads, plus texture elsewhere
    pixel_values = ((gray - 0.5) / 0.5).expand(-1, 3, -1, -1)
    explainer = ShapExplainer(QuadrantModel(), masker=masker, max_evals=200, batch_size=50, class_names=["Fe", "X-ray"])
    explanation = explainer.explain(pixel_values)
    values = explanation.raw  # [B, classes, H, W]
    assert values.shape == (2, 2, 64, 64)
    magnitude = np.abs(values).sum(axis=1)
    share = magnitude[:, :32, :32].sum(axis=(1, 2)) / magnitude.sum(axis=(1, 2))
    assert (share > 0.9).all(), share
    np.testing.assert_allclose(values[:, 0], -values[:, 1], atol=1e-6)  # two classes: log-odds are opposite
    assert explanation.heatmaps[:, :32, :32].sum() > 0.9 * explanation.heatmaps.sum()


def test_shap_is_deterministic_and_validates_its_settings(tiny_model, batch):
    explainer = ShapExplainer(tiny_model, max_evals=40, batch_size=20)
    np.testing.assert_array_equal(explainer.shap_values(batch[:1]), explainer.shap_values(batch[:1]))
    # inpainting works on the 8-bit range the masker expects (fills masked regions from their borders,
    # so it is not used for the quadrant test: a border outside the quadrant legitimately gets credit)
    inpainted = ShapExplainer(tiny_model, masker="inpaint_telea", max_evals=40, batch_size=20).shap_values(batch[:1])
    assert np.isfinite(inpainted).all() and np.abs(inpainted).sum() > 0
    with pytest.raises(ValueError, match="shap_masker"):
        make_masker("gaussian", (8, 8, 1))
    with pytest.raises(ValueError, match="max_evals"):
        ShapExplainer(tiny_model, max_evals=2)


def test_log_odds_is_stable_for_saturated_logits():
    out = log_odds(torch.tensor([[60.0, -60.0], [0.0, 0.0]], dtype=torch.float64))
    np.testing.assert_allclose(out.numpy(), [[120.0, -120.0], [0.0, 0.0]])


# --------------------------------------------------------------------------- faithfulness helpers


def test_deletion_beats_random_for_the_true_explanation():
    model = QuadrantModel()
    gray = torch.full((1, 64, 64), 0.1)
    gray[:, :32, :32] = 0.9
    pixel_values = ((gray - 0.5) / 0.5).expand(3, -1, -1)
    baseline = deletion.baseline_images(pixel_values[None], "mean")[0]
    truth = np.zeros((64, 64))
    truth[:32, :32] = 1.0
    target = 0
    probability = pert.probability_from_log_odds  # the curves are log-odds; the AUCs below read probabilities
    deleted, inserted = map(probability, deletion.deletion_insertion_curves(
        model, pixel_values, baseline, deletion.saliency_order(truth), target, steps=16
    ))
    rand_del, rand_ins = map(probability, deletion.deletion_insertion_curves(
        model, pixel_values, baseline, deletion.random_order(4096, 0, 0), target, steps=16
    ))
    assert len(deleted) == 17 and deleted[0] == pytest.approx(rand_del[0])
    assert stats.curve_auc(deleted) < stats.curve_auc(rand_del)
    assert stats.curve_auc(inserted) > stats.curve_auc(rand_ins)
    assert stats.curve_auc(np.array([1.0, 0.0])) == pytest.approx(0.5)


def test_ground_truth_scores_by_hand():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    mask[8:10, 8:10] = 2  # a 2x2 focus
    heatmap = np.zeros((20, 20))
    heatmap[8:10, 8:10] = 3.0
    heatmap[0, 0] = 1.0
    scores = ground_truth.ground_truth_scores(heatmap, mask)
    assert scores.foci_mass == pytest.approx(12.0 / 13.0)
    assert scores.pointing_game == 1.0
    assert scores.foci_mass_uniform == pytest.approx(4 / 400)
    heatmap[0, 0] = 10.0
    assert ground_truth.ground_truth_scores(heatmap, mask).pointing_game == 0.0
    assert ground_truth.ground_truth_scores(heatmap, np.ones((20, 20), np.uint8)) is None  # no foci: nothing to score


def test_randomized_copy_cascades_from_the_head(tiny_model):
    head_only = randomization.randomized_copy(tiny_model, seed=0, num_stages=1)
    assert not torch.equal(head_only.classifier.weight, tiny_model.classifier.weight)
    assert torch.equal(head_only.vit.layers[-1].mlp.fc1.weight, tiny_model.vit.layers[-1].mlp.fc1.weight)
    two = randomization.randomized_copy(tiny_model, seed=0, num_stages=2)
    assert not torch.equal(two.vit.layers[-1].mlp.fc1.weight, tiny_model.vit.layers[-1].mlp.fc1.weight)
    assert torch.equal(two.vit.layers[0].mlp.fc1.weight, tiny_model.vit.layers[0].mlp.fc1.weight)
    everything = randomization.randomized_copy(tiny_model, seed=0)
    assert not torch.equal(everything.vit.embeddings.cls_token, tiny_model.vit.embeddings.cls_token)
    again = randomization.randomized_copy(tiny_model, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(everything.parameters(), again.parameters()))
    assert randomization.num_cascade_stages(tiny_model) == 1 + 4 + 1  # head, 4 blocks, embeddings


def test_rollout_ignores_the_classifier_and_the_sanity_check_says_so(tiny_model, batch):
    """Attention rollout never looks at the head: randomising only the head leaves it unchanged (Spearman 1),
    while gradient rollout changes. This is the point of the model-randomisation check."""
    head_random = randomization.randomized_copy(tiny_model, seed=0, num_stages=1)
    rollout = AttentionRollout(tiny_model)
    grad = GradientRollout(tiny_model)
    assert randomization.spearman(rollout(batch)[0], rollout.with_model(head_random)(batch)[0]) == pytest.approx(1.0)
    assert randomization.spearman(grad(batch, 0)[0], grad.with_model(head_random)(batch, 0)[0]) < 0.99
