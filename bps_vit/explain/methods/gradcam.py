"""Grad-CAM (Selvaraju et al. 2017) on the last encoder block, through Captum's `LayerGradCam`: the class-specific
method that every supported backbone has, Swin included.

Grad-CAM weights each channel of a layer's feature map by the mean gradient of the target logit over the map, sums
the channels and keeps the positive part. A transformer block's input is a token sequence [B, T, C], not a map, so,
as pytorch-grad-cam's `reshape_transform` does for ViT and Swin, the patch tokens are viewed as a [B, C, rows, cols]
map with the prefix tokens (CLS, distillation, registers) left out (`backbones.TokenLayout`). The layer is the norm
that opens the last block (`backbones.last_block_norm`, pytorch-grad-cam's `blocks[-1].norm1`): there the patch
tokens still reach what the head pools through the block's attention, whereas after the last block a CLS head reads
no patch token and their gradient is zero. Swin's last block sees the grid after its patch mergings (`last_grid`).

Captum attributes to a module's output; `TokenGrid` is that module, an identity on the grid view, called by a
forward hook on the norm only while an explanation runs. Why Captum and not the `grad-cam` package: README,
"Grad-CAM".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ...backbones import last_block_norm
from .base import (
    Explainer,
    Explanation,
    Targets,
    model_device,
    model_layout,
    model_logits,
    normalize_heatmaps,
    resolve_targets,
)


class TokenGrid(torch.nn.Module):
    """Identity on the patch tokens seen as a feature map [B, C, rows, cols]: the layer Captum hooks."""

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid


@contextmanager
def grid_view(norm: torch.nn.Module, grid: TokenGrid, num_prefix: int, rows: int, cols: int) -> Iterator[None]:
    """While inside, `norm`'s output [B, T, C] passes its patch tokens through `grid` as [B, C, rows, cols]; the
    model computes exactly what it computed before (a reshape there and back)."""

    def hook(module, args, output):
        prefix, patches = output[:, :num_prefix], output[:, num_prefix:]
        batch, tokens, channels = patches.shape
        if tokens != rows * cols:
            raise ValueError(f"{tokens} patch tokens at the last block do not fill a {rows}x{cols} grid")
        as_map = grid(patches.transpose(1, 2).reshape(batch, channels, rows, cols))
        return torch.cat([prefix, as_map.flatten(2).transpose(1, 2)], dim=1)

    handle = norm.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class GradCam(Explainer):
    """Grad-CAM of the target class on the last block's patch tokens, upsampled bilinearly to the input size."""

    name = "gradcam"

    def explain(self, pixel_values: torch.Tensor, targets: Targets = None) -> Explanation:
        from captum.attr import LayerAttribution, LayerGradCam  # deferred: an optional import (see the registry)

        layout, norm = model_layout(self.model), last_block_norm(self.model)
        pixel_values = pixel_values.to(model_device(self.model))
        if targets is None:  # the predicted class: one forward without gradients to know it
            with torch.no_grad():
                resolved = resolve_targets(None, model_logits(self.model(pixel_values=pixel_values)))
        else:  # checked against the batch size and the number of classes; Captum's own forward gives the logits
            resolved = resolve_targets(targets, torch.empty(len(pixel_values), self.model.config.num_labels))
        size = tuple(pixel_values.shape[-2:])
        grid, seen = TokenGrid(), {}

        def forward(inputs: torch.Tensor) -> torch.Tensor:
            seen["logits"] = model_logits(self.model(pixel_values=inputs))
            return seen["logits"]

        # a leaf input that requires grad keeps the graph alive even when the weights are frozen
        inputs = pixel_values.detach().clone().requires_grad_(True)
        with grid_view(norm, grid, layout.num_prefix, *layout.last_grid(*size)), torch.enable_grad():
            cams = LayerGradCam(forward, grid).attribute(inputs, target=resolved.to(inputs.device),
                                                         relu_attributions=True)
        raw = LayerAttribution.interpolate(cams.detach().float(), size, interpolate_mode="bilinear")[:, 0]
        raw = raw.cpu().numpy()
        return Explanation(heatmaps=normalize_heatmaps(raw), raw=raw, targets=resolved.cpu().numpy(),
                           probabilities=seen["logits"].detach().float().softmax(-1).cpu().numpy())
