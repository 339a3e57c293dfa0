"""Deletion and insertion (Petsiuk, Das & Saenko 2018, RISE): remove (or insert) pixels in the order a heatmap
ranks them and follow the target class's log-odds. A faithful map makes the model lose its call fast on deletion
(low AUC) and regain it fast on insertion (high AUC), and must beat the same curves for a random pixel order.

Every step is batched: the whole deletion/insertion path of an image is one stack of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from ..perturbation import RawImage, probability_from_log_odds, step_masks, target_log_odds
from . import stats
from .stats import mean_or_none

#: what a removed pixel becomes (`--faithfulness_baseline`); the Literal types give the flags their argparse choices
Baseline = Literal["opening", "blur", "mean"]

BASELINES: tuple[str, ...] = get_args(Baseline)


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
    """Target-class log-odds after removing / inserting the first k/steps of `order`, k = 0..steps, in model space.

    `pixel_values` and `baseline` are one image [3,H,W]. Returns (deletion, insertion), each
    `steps + 1` long; all 2 x (steps + 1) images go through the model in batches. The raw-space
    twin is `perturbation.raw_deletion_insertion`; both use the same step masks and log-odds.
    """
    masks = torch.from_numpy(step_masks(order, tuple(pixel_values.shape[-2:]), steps))[:, None]
    masks = masks.to(pixel_values.device)
    image, base = pixel_values.float()[None], baseline.float().to(pixel_values.device)[None]
    stack = torch.cat([torch.where(masks, base, image), torch.where(masks, image, base)])
    curve = target_log_odds(model, stack, target, batch_size)
    return curve[: steps + 1], curve[steps + 1:]

def raw_deletion_insertion(model, image: RawImage, order: np.ndarray, target: int, steps: int = 32,
                           batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Target log-odds after deleting / inserting the first k/steps of a raw-pixel `order`, k = 0..steps.

    Deleting puts the fill in the raw image; inserting starts from the fill and puts raw pixels
    back. Every image then goes through the model's own preprocessing.
    """
    masks = step_masks(order, image.shape, steps)
    stack = image.pixel_values(np.concatenate([masks, ~masks]))
    curve = target_log_odds(model, stack, target, batch_size)
    return curve[: steps + 1], curve[steps + 1:]


def probability_auc(log_odds_curve) -> float:
    """AUC of a deletion/insertion curve on the probability scale (the number RISE reports)."""
    return stats.curve_auc(probability_from_log_odds(log_odds_curve))


@dataclass(frozen=True)
class RandomOrderScores:
    """The random pixel order's AUCs, per image (log-odds) and as means (probability): every method's baseline."""

    deletion: list[float]
    insertion: list[float]
    deletion_auc: float | None
    insertion_auc: float | None

    @classmethod
    def of(cls, deletion_curves: Sequence[np.ndarray], insertion_curves: Sequence[np.ndarray]) -> RandomOrderScores:
        return cls(
            deletion=[stats.curve_auc(curve) for curve in deletion_curves],
            insertion=[stats.curve_auc(curve) for curve in insertion_curves],
            deletion_auc=mean_or_none([probability_auc(curve) for curve in deletion_curves]),
            insertion_auc=mean_or_none([probability_auc(curve) for curve in insertion_curves]),
        )


def curve_scores(deletion_curves: Sequence[np.ndarray], insertion_curves: Sequence[np.ndarray],
                 random: RandomOrderScores, seed: int) -> dict:
    """The `MethodSummary` fields of deletion and insertion: the AUCs beside the random order's, and the paired
    per-image log-odds gains over it (a saturated probability does not move; log-odds do). Each gain is > 0 when the
    map beats the random order: random minus map on deletion (the map should fall faster), map minus random on
    insertion (it should rise faster)."""
    deletion = [stats.curve_auc(curve) for curve in deletion_curves]
    insertion = [stats.curve_auc(curve) for curve in insertion_curves]
    return {
        "deletion_auc": mean_or_none([probability_auc(curve) for curve in deletion_curves]),
        "insertion_auc": mean_or_none([probability_auc(curve) for curve in insertion_curves]),
        "random_deletion_auc": random.deletion_auc,
        "random_insertion_auc": random.insertion_auc,
        "deletion_log_odds_gain": stats.bootstrap_mean_ci(np.subtract(random.deletion, deletion), seed),
        "insertion_log_odds_gain": stats.bootstrap_mean_ci(np.subtract(insertion, random.insertion), seed),
    }
