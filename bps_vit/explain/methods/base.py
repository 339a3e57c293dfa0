"""The one call shape every explanation method shares, and the helpers they all need.

`explainer(pixel_values[B,3,H,W], targets) -> np.ndarray[B,H,W]`: one heatmap per image at the
model's input resolution, finite, scaled to [0, 1], for the target class (None = the class the
model predicts). `explainer.explain(...)` returns the same plus the raw (unscaled, possibly
signed) maps and the model's probabilities, which figures and faithfulness metrics need.
Keeping one shape lets the faithfulness code and the figures treat every method alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import TokenLayout, supported_list, token_layout

Targets = torch.Tensor | np.ndarray | list | int | None


class MissingAttentionsError(RuntimeError):
    """The model returned no attention maps (sdpa/flash attention instead of eager)."""


@dataclass
class Explanation:
    """What one method says about a batch.

    heatmaps: [B,H,W] in [0, 1] (the common call shape). raw: the method's own values before
    scaling ([B,H,W], or [B,num_classes,H,W] for SHAP, signed). targets: [B] class explained.
    probabilities: [B,num_classes] softmax of the model on the unmasked images.
    """

    heatmaps: np.ndarray
    raw: np.ndarray
    targets: np.ndarray
    probabilities: np.ndarray


def model_logits(output: Any) -> torch.Tensor:
    """Logits from a transformers output object or a plain tensor (simple test models)."""
    return output if isinstance(output, torch.Tensor) else output.logits


def model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """log(p_k / (1 - p_k)) per class, computed from logits without overflow (p can round to 1)."""
    num_classes = logits.shape[-1]
    if num_classes == 1:
        return logits
    others = logits[:, None, :].expand(-1, num_classes, -1).masked_fill(
        torch.eye(num_classes, dtype=torch.bool, device=logits.device), float("-inf")
    )
    return logits - torch.logsumexp(others, dim=-1)


def resolve_targets(targets: Targets, logits: torch.Tensor) -> torch.Tensor:
    """Targets as a LongTensor [B]: None -> argmax of the logits; an int -> that class for all."""
    batch, num_classes = logits.shape
    if targets is None:
        resolved = logits.argmax(dim=-1)
    elif isinstance(targets, int):
        resolved = torch.full((batch,), targets, dtype=torch.long)
    else:
        resolved = torch.as_tensor(np.asarray(targets) if isinstance(targets, list) else targets).long().reshape(-1)
        if resolved.numel() != batch:
            raise ValueError(f"got {resolved.numel()} targets for a batch of {batch} images")
    resolved = resolved.to(logits.device)
    if resolved.numel() and (int(resolved.min()) < 0 or int(resolved.max()) >= num_classes):
        raise ValueError(f"target classes must lie in [0, {num_classes - 1}]; got {resolved.tolist()}")
    return resolved


def normalize_heatmaps(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    """Scale each map to [0, 1] by its own min and max; a flat map becomes all zeros.

    Non-finite values (which would poison every metric) are treated as 0 first.
    """
    maps = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    maps = np.nan_to_num(maps.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    scaled = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    return scaled.reshape(maps.shape)


def collect_attentions(output: Any, model: torch.nn.Module | None = None) -> list[torch.Tensor]:
    """The per-layer attention probabilities [B,heads,T,T], or a clear error if there are none."""
    attentions = getattr(output, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        implementation = getattr(getattr(model, "config", None), "_attn_implementation", "unknown")
        raise MissingAttentionsError(
            f"The model returned no attention maps (attention implementation: {implementation!r}). "
            "Attention rollout needs eager attention: load the model with "
            "bps_vit.model.load_for_inference(path) (eager by default) or pass "
            'attn_implementation="eager" to from_pretrained; sdpa and flash attention do not return them.'
        )
    return list(attentions)


def forward_with_attentions(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list]:
    """(logits, per-layer attentions): the one forward both rollouts start from."""
    output = model(pixel_values=pixel_values, output_attentions=True)
    return model_logits(output), collect_attentions(output, model)


def tokens_to_image(relevance: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Per-patch relevance [B,P] (patch tokens in raster order) -> [B,H,W] by bilinear upsampling.

    Extra tokens before the patches (CLS, distillation, registers) must already be removed.
    """
    rows, cols = grid
    if relevance.shape[-1] != rows * cols:
        raise ValueError(f"{relevance.shape[-1]} patch scores do not fill a {rows}x{cols} patch grid")
    maps = relevance.reshape(relevance.shape[0], 1, rows, cols).float()
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]


def resample_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map (heatmap, SHAP values) [..., H, W] -> [..., *shape], float32.

    The one way maps travel between the raw image and the model input: up (to rank raw pixels
    by a model-resolution heatmap) and down (raw-resolution SHAP values onto the model grid).
    Downwards it is an area average (each model pixel the mean of the raw pixels it covers, so
    mass is kept, not aliased); upwards bilinear.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape[-2:] == tuple(shape):
        return values.copy()
    lead = values.shape[:-2]
    tensor = torch.from_numpy(np.ascontiguousarray(values)).reshape(-1, 1, *values.shape[-2:])
    if shape[0] <= values.shape[-2] and shape[1] <= values.shape[-1]:  # down: the average over each target pixel
        out = F.interpolate(tensor, size=tuple(shape), mode="area")
    else:
        out = F.interpolate(tensor, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*lead, *shape).numpy()


class Explainer:
    """Base class: subclasses implement `explain`; calling the explainer returns the heatmaps."""

    name = "explainer"
    class_specific = True  # False when the map does not depend on the target (plain rollout)

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def explain(self, pixel_values: torch.Tensor, targets: Targets = None) -> Explanation:
        raise NotImplementedError

    def __call__(self, pixel_values: torch.Tensor, targets: Targets = None) -> np.ndarray:
        return self.explain(pixel_values, targets).heatmaps

    def with_model(self, model: torch.nn.Module) -> "Explainer":
        """The same method and settings on another model (the randomisation sanity check)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.model = model
        return clone


def model_layout(model: torch.nn.Module) -> TokenLayout:
    """The model's token layout (`backbones.token_layout`); a model without one cannot be read token by token."""
    layout = token_layout(model)
    if layout is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
        raise ValueError(f"{model_type!r} models have no known token layout; supported architectures: "
                         f"{supported_list()}")
    return layout


class RolloutExplainer(Explainer):
    """Shared ending of the two rollouts: the rows of a token-relevance matrix that the head reads, as image-size
    maps."""

    gradient_weighted = False  # True when the relevance rows are weighted by the target's gradient

    def explanation_from_relevance(self, pixel_values: torch.Tensor, relevance: torch.Tensor,
                                   logits: torch.Tensor, targets: torch.Tensor) -> Explanation:
        """relevance [B,T,T] (prefix tokens first, patch tokens last) -> one map per image at the input size.

        The pooled output the head reads is a weighted sum of the last layer's token rows (`head_weights`: the CLS
        row, CLS and distillation averaged, the patch mean, or half CLS and half patch mean), so its relevance is
        that weighted sum of the relevance rows (gradient rollout: their plain sum, its gradients already weigh
        them); the columns of the prefix tokens (CLS, distillation, registers: learned constants, no pixels) are
        dropped."""
        layout = model_layout(self.model)
        grid = layout.grid(*pixel_values.shape[-2:])
        weights = layout.head_weights(relevance.shape[-1], gradient_weighted=self.gradient_weighted)
        weights = weights.to(relevance.device)
        pooled = torch.einsum("t,btk->bk", weights, relevance.float())
        raw = tokens_to_image(pooled[:, layout.num_prefix:], grid, tuple(pixel_values.shape[-2:])).cpu().numpy()
        return Explanation(
            heatmaps=normalize_heatmaps(raw),
            raw=raw,
            targets=targets.cpu().numpy(),
            probabilities=logits.float().softmax(-1).cpu().numpy(),
        )
