"""Gradient-weighted, class-specific rollout (Chefer, Gur & Wolf 2021,
"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers").

For each layer, the attention is weighted by the gradient of the target logit with respect
to that same attention, negative contributions are dropped and heads averaged:
Abar = mean_heads((dy_t/dA * A)^+); then R <- R + Abar @ R, starting from R = I.
The CLS row of R is the class-specific relevance of each patch (for a head that pools other tokens, the sum of the
rows it reads: `backbones.TokenLayout.head_weights`).

The pitfall this module avoids (and the tests check): gradients collected by backward hooks
arrive last layer first, and pairing them with attentions in forward order mixes layers.
Here `torch.autograd.grad` returns one gradient per attention tensor, in the same order.
"""

from __future__ import annotations

import torch

from .base import Explanation, RolloutExplainer, Targets, forward_with_attentions, model_device, resolve_targets


def gradient_rollout_from_attentions(
    attentions: list[torch.Tensor] | tuple[torch.Tensor, ...],
    gradients: list[torch.Tensor] | tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """Relevance [B,T,T] from per-layer attentions and their own gradients (both [B,heads,T,T], first layer first)."""
    if len(attentions) != len(gradients) or not attentions:
        raise ValueError(f"need one gradient per attention layer; got {len(attentions)} and {len(gradients)}")
    batch, _, tokens, _ = attentions[0].shape
    relevance = torch.eye(tokens, dtype=torch.float32, device=attentions[0].device).repeat(batch, 1, 1)
    for attention, gradient in zip(attentions, gradients):
        if gradient.shape != attention.shape:
            raise ValueError(f"gradient shape {tuple(gradient.shape)} != attention shape {tuple(attention.shape)}")
        weighted = (gradient.float() * attention.float()).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance


def attention_gradients(
    model: torch.nn.Module, pixel_values: torch.Tensor, targets: Targets = None
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """One forward + one backward for the batch: (attentions, their gradients, logits, targets).

    The images of a batch do not interact in a ViT, so the gradient of the sum of each
    image's target logit gives every image its own gradients.
    """
    # A leaf input that requires grad keeps the graph alive even when the weights are frozen.
    pixel_values = pixel_values.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits, attentions = forward_with_attentions(model, pixel_values)
        if not all(a.requires_grad for a in attentions):
            raise RuntimeError("attention maps carry no gradient; do not run gradient rollout under torch.no_grad()")
        resolved = resolve_targets(targets, logits.detach())
        selected = logits.gather(1, resolved[:, None]).sum()
        gradients = torch.autograd.grad(selected, attentions)
    return [a.detach() for a in attentions], [g.detach() for g in gradients], logits.detach(), resolved


class GradientRollout(RolloutExplainer):
    """Class-specific gradient-weighted rollout; one forward and one backward per batch."""

    name = "grad_rollout"
    gradient_weighted = True

    def explain(self, pixel_values: torch.Tensor, targets: Targets = None) -> Explanation:
        pixel_values = pixel_values.to(model_device(self.model))
        attentions, gradients, logits, resolved = attention_gradients(self.model, pixel_values, targets)
        relevance = gradient_rollout_from_attentions(attentions, gradients)
        return self.explanation_from_relevance(pixel_values, relevance, logits, resolved)
