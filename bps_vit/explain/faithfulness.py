"""Is a heatmap faithful to the model, and does it point at the biology? Measured, not eyeballed.

- Deletion / insertion (Petsiuk, Das & Saenko 2018, RISE): remove (or insert) pixels in the
  order the heatmap ranks them and follow the target-class probability. A faithful map makes
  the probability fall fast on deletion (low AUC) and rise fast on insertion (high AUC), and
  must beat the same curves for a random pixel order.
- Model randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): re-initialise
  the weights and explain again. A map that still looks the same (high Spearman rank
  correlation) describes the image, not the model.
- Ground truth (synthetic data only): the share of heatmap mass inside the 53BP1 foci and the
  pointing game (does the hottest pixel land on a focus?), each against maps that know
  nothing: a centred Gaussian (the nucleus is centred in every crop) and a uniform map.

Every step is batched: the whole deletion/insertion path of an image is one stack of images.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import model_device, model_logits

FOCI_LABEL = 2
BASELINES = ("opening", "blur", "mean")
RANDOMIZATIONS = ("all", "classifier", "cascade", "none")


# --------------------------------------------------------------------------- deletion / insertion


def gaussian_blur(pixel_values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,C,H,W] (reflect padding), per channel."""
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, pixel_values.shape[-1] - 1, pixel_values.shape[-2] - 1)
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32, device=pixel_values.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = pixel_values.shape[1]
    x = pixel_values.float()
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
        groups=channels,
    )
    x = F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
        groups=channels,
    )
    return x


def baseline_images(pixel_values: torch.Tensor, kind: str = "blur", fill: torch.Tensor | None = None) -> torch.Tensor:
    """What a removed pixel becomes in model space: a strongly blurred copy (RISE's insertion start),
    the image mean, or `fill` (the model input of the raw image's foci-free `opening_fill`).

    Blur and mean work on normalised pixel values: they commute with the per-channel affine
    normalisation, so no round trip to raw pixels is needed.
    """
    if kind == "blur":
        return gaussian_blur(pixel_values, sigma=max(pixel_values.shape[-2:]) / 8.0)
    if kind == "mean":
        return pixel_values.float().mean(dim=(2, 3), keepdim=True).expand_as(pixel_values).clone()
    if kind == "opening":
        if fill is None:
            raise ValueError("the opening baseline needs the fill images (from the raw images)")
        return fill.float().to(pixel_values.device)
    raise ValueError(f"--faithfulness_baseline must be one of {BASELINES}; got {kind!r}")


def saliency_order(heatmap: np.ndarray) -> np.ndarray:
    """Pixel indices (flattened), most salient first; ties keep raster order (stable, deterministic)."""
    return np.argsort(-np.asarray(heatmap, dtype=np.float64).ravel(), kind="stable")


def random_order(num_pixels: int, seed: int, image_index: int) -> np.ndarray:
    """A random pixel order that depends on the image's global index, not on the process that runs it."""
    return np.random.default_rng([int(seed), int(image_index)]).permutation(num_pixels)


@torch.no_grad()
def deletion_insertion_curves(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    baseline: torch.Tensor,
    order: np.ndarray,
    target: int,
    steps: int = 32,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Target-class probability after removing / inserting the first k/steps of `order`, k = 0..steps.

    `pixel_values` and `baseline` are one image [3,H,W]. Returns (deletion, insertion), each
    `steps + 1` long. All 2 x (steps + 1) images go through the model in batches.
    """
    channels, height, width = pixel_values.shape
    num_pixels = height * width
    counts = np.round(np.linspace(0, num_pixels, steps + 1)).astype(np.int64)
    rank = np.empty(num_pixels, dtype=np.int64)
    rank[np.asarray(order)] = np.arange(num_pixels)
    rank_t = torch.from_numpy(rank).view(1, height, width)
    masks = rank_t < torch.from_numpy(counts).view(-1, 1, 1)  # [S+1,H,W], True = pixel already removed / inserted
    masks = masks[:, None].to(pixel_values.device)
    image = pixel_values.float()[None]
    base = baseline.float()[None]
    deleted = torch.where(masks, base, image)
    inserted = torch.where(masks, image, base)
    stack = torch.cat([deleted, inserted])
    probs = []
    device = model_device(model)
    for start in range(0, len(stack), batch_size):
        logits = model_logits(model(pixel_values=stack[start : start + batch_size].to(device)))
        probs.append(logits.float().softmax(-1)[:, target].cpu())
    curve = torch.cat(probs).numpy().astype(np.float64)
    return curve[: steps + 1], curve[steps + 1 :]


def curve_auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) < 2:
        return float("nan")
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


# --------------------------------------------------------------------------- model randomisation


def _reinit_module(module: torch.nn.Module, std: float, generator: torch.Generator) -> None:
    for child in module.modules():
        if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
            with torch.no_grad():
                child.weight.copy_(torch.randn(child.weight.shape, generator=generator) * std)
                if child.bias is not None:
                    child.bias.zero_()
        elif isinstance(child, torch.nn.LayerNorm):
            child.reset_parameters()
        for name in ("cls_token", "position_embeddings", "distillation_token"):
            param = getattr(child, name, None)
            if isinstance(param, torch.nn.Parameter):
                with torch.no_grad():
                    param.copy_(torch.randn(param.shape, generator=generator).clamp_(-2, 2) * std)


def _blocks_from_top(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Stages for cascading randomisation: the head (classifier + final norm + pooler), then the
    encoder blocks from the last to the first, then the embeddings."""
    backbone = getattr(model, getattr(model, "base_model_prefix", "vit"), None) or model
    layers = getattr(backbone, "layers", None)
    if layers is None:
        layers = getattr(getattr(backbone, "encoder", None), "layer", [])
    head = [getattr(model, "classifier", None), getattr(backbone, "layernorm", None), getattr(backbone, "pooler", None)]
    stages: list[torch.nn.Module] = [torch.nn.ModuleList([m for m in head if isinstance(m, torch.nn.Module)])]
    stages += list(reversed(list(layers)))
    if isinstance(getattr(backbone, "embeddings", None), torch.nn.Module):
        stages.append(backbone.embeddings)
    return stages


def randomized_copy(model: torch.nn.Module, seed: int = 0, num_stages: int | None = None) -> torch.nn.Module:
    """A copy of `model` with re-initialised weights, cascading from the top.

    num_stages: None = every weight; 1 = the classifier head (with the final norm); k = the head
    plus the top k-1 encoder blocks. Seeded, so every process builds the same random model.
    """
    clone = copy.deepcopy(model).eval()
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(int(seed))
    stages = _blocks_from_top(clone)
    if num_stages is None:
        _reinit_module(clone, std, generator)
    else:
        for stage in stages[:num_stages]:
            _reinit_module(stage, std, generator)
    return clone.to(model_device(model))


def num_cascade_stages(model: torch.nn.Module) -> int:
    return len(_blocks_from_top(model))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (NaN when either is constant)."""
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- ground truth (synthetic masks)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label mask to the model's input size (labels stay labels)."""
    import cv2

    mask = np.asarray(mask)
    if mask.shape[:2] == (height, width):
        return mask.copy()
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    mask = np.asarray(mask, dtype=np.uint8)
    if radius <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel).astype(bool)


def pointing_tolerance(height: int, width: int) -> int:
    """Slack for the pointing game: 3% of the image side (2 px at 64 px, 7 px at 224 px)."""
    return max(1, int(round(0.03 * max(height, width))))


def centre_gaussian(height: int, width: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """The 'knows nothing but the crop is centred' map."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    sy, sx = sigma_fraction * height, sigma_fraction * width
    return np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))


def foci_mass(heatmap: np.ndarray, foci: np.ndarray) -> float:
    """Share of the (non-negative) heatmap's total inside the foci; NaN for an all-zero map."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = heatmap.sum()
    return float(heatmap[np.asarray(foci, dtype=bool)].sum() / total) if total > 0 else float("nan")


def pointing_hit(heatmap: np.ndarray, foci_dilated: np.ndarray) -> float:
    """1.0 if the map's maximum (first in raster order on ties) lies on a (dilated) focus, else 0.0."""
    return float(np.asarray(foci_dilated, dtype=bool).ravel()[int(np.argmax(np.asarray(heatmap).ravel()))])


def ground_truth_scores(heatmap: np.ndarray, label_mask: np.ndarray) -> dict[str, float] | None:
    """Foci mass and pointing game for one map, with the centre-Gaussian and uniform baselines.

    `label_mask` is already at the heatmap's size. None when the image has no foci (nothing to hit).
    """
    foci = np.asarray(label_mask) == FOCI_LABEL
    if not foci.any():
        return None
    height, width = foci.shape
    dilated = dilate(foci, pointing_tolerance(height, width))
    centre = centre_gaussian(height, width)
    return {
        "foci_mass": foci_mass(heatmap, foci),
        "foci_mass_baseline": foci_mass(centre, foci),
        "foci_mass_uniform": float(foci.mean()),
        "pointing_game": pointing_hit(heatmap, dilated),
        "pointing_game_baseline": pointing_hit(centre, dilated),
        "pointing_game_uniform": float(dilated.mean()),
    }


def mean_or_none(values: Sequence[float]) -> float | None:
    """Mean of the finite values; None (JSON null) when there are none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None
