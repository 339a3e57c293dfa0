"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Each layer's attention is fused over heads, the residual connection is added as an identity,
rows are renormalised to sum to 1, and the layers are multiplied from the first to the last.
The CLS row of the product says how much each patch flowed into the class token.

Two bugs of popular public versions are avoided on purpose and tested: normalising with
`a / a.sum(dim=-1)` (no keepdim) silently divides by the wrong axis through broadcasting,
and dropping attentions for batch item 0 only. Rollout is class-agnostic: the same map
explains every class.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from .base import Explanation, RolloutExplainer, Targets, forward_with_attentions, model_device, resolve_targets

HeadFusion = Literal["mean", "max", "min"]
HEAD_FUSIONS: tuple[str, ...] = get_args(HeadFusion)


def fuse_heads(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """[B,heads,T,T] -> [B,T,T] by mean, max or min over heads."""
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}; got {head_fusion!r}")


def discard_lowest(fused: torch.Tensor, discard_ratio: float) -> torch.Tensor:
    """Zero the lowest `discard_ratio` share of attentions in each matrix of the batch.

    Attention *to* the CLS token (column 0) is never dropped: it is the path by which
    information reaches the class token, and dropping it would cut the rollout.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1); got {discard_ratio}")
    if discard_ratio == 0.0:
        return fused
    batch, tokens, _ = fused.shape
    candidates = fused.clone()
    candidates[:, :, 0] = float("inf")  # never ranked among the lowest
    num_drop = int(tokens * (tokens - 1) * discard_ratio)
    if num_drop == 0:
        return fused
    lowest = candidates.reshape(batch, -1).topk(num_drop, dim=-1, largest=False).indices
    kept = fused.reshape(batch, -1).clone()
    kept.scatter_(1, lowest, 0.0)
    return kept.reshape(batch, tokens, tokens)


def rollout_from_attentions(
    attentions: list[torch.Tensor] | tuple[torch.Tensor, ...],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
) -> torch.Tensor:
    """Attention rollout [B,T,T] from per-layer attention probabilities [B,heads,T,T] (first layer first).

    Per layer: fuse heads, drop the lowest attentions, add the identity (residual), divide each
    row by its sum (keepdim), then R <- A_layer @ R.
    """
    if not attentions:
        raise ValueError("rollout needs at least one layer of attentions")
    first = attentions[0]
    batch, _, tokens, _ = first.shape
    identity = torch.eye(tokens, dtype=torch.float32, device=first.device).expand(batch, tokens, tokens)
    result = identity.clone()
    for attention in attentions:
        fused = discard_lowest(fuse_heads(attention.float(), head_fusion), discard_ratio)
        with_residual = fused + identity
        with_residual = with_residual / with_residual.sum(dim=-1, keepdim=True)
        result = with_residual @ result
    return result


class AttentionRollout(RolloutExplainer):
    """Attention rollout for a ViT classifier loaded with eager attention; one forward per batch."""

    name = "rollout"
    class_specific = False

    def __init__(self, model: torch.nn.Module, head_fusion: str = "mean", discard_ratio: float = 0.0):
        super().__init__(model)
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}; got {head_fusion!r}")
        discard_lowest(torch.zeros(1, 2, 2), discard_ratio)  # validate early
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio

    @torch.no_grad()
    def explain(self, pixel_values: torch.Tensor, targets: Targets = None) -> Explanation:
        pixel_values = pixel_values.to(model_device(self.model))
        logits, attentions = forward_with_attentions(self.model, pixel_values)
        rollout = rollout_from_attentions(attentions, self.head_fusion, self.discard_ratio)
        return self.explanation_from_relevance(pixel_values, rollout, logits, resolve_targets(targets, logits))
