"""Ground truth (synthetic data only): the share of heatmap mass inside the 53BP1 foci and the pointing game (does
the hottest pixel land on a focus?), each against maps that know nothing: a centred Gaussian (the nucleus is
centred in every crop) and a uniform map.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...synthetic_image import MASK_FOCI
from ..records import GroundTruthScores
from . import stats
from .stats import mean_or_none

#: The foci's label in a ground-truth mask (the mask format is the synthetic generator's: 0 background, 1 nucleus,
#: 2 foci, 3 neighbours).
FOCI_LABEL = MASK_FOCI


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label mask to the model's input size (labels stay labels)."""
    mask = np.asarray(mask)
    if mask.shape[:2] == (height, width):
        return mask.copy()
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)

def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
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

def ground_truth_scores(heatmap: np.ndarray, label_mask: np.ndarray) -> GroundTruthScores | None:
    """Foci mass and pointing game for one map, with the centre-Gaussian and uniform baselines.

    `label_mask` is already at the heatmap's size. None when the image has no foci (nothing to hit).
    """
    foci = np.asarray(label_mask) == FOCI_LABEL
    if not foci.any():
        return None
    height, width = foci.shape
    dilated = dilate(foci, pointing_tolerance(height, width))
    centre = centre_gaussian(height, width)
    return GroundTruthScores(
        foci_mass=foci_mass(heatmap, foci),
        foci_mass_baseline=foci_mass(centre, foci),
        foci_mass_uniform=float(foci.mean()),
        pointing_game=pointing_hit(heatmap, dilated),
        pointing_game_baseline=pointing_hit(centre, dilated),
        pointing_game_uniform=float(dilated.mean()),
    )


def ground_truth_summary(truths: list[GroundTruthScores], seed: int) -> dict:
    """The `MethodSummary` fields of the foci scores: each mean beside the centre and uniform maps', the paired gain
    over the centre map with its interval, and how many images had foci."""
    out: dict = {}
    for score in ("foci_mass", "pointing_game"):
        out[score] = mean_or_none([getattr(t, score) for t in truths])
        for baseline in ("baseline", "uniform"):
            out[f"{score}_{baseline}"] = mean_or_none([getattr(t, f"{score}_{baseline}") for t in truths])
        gains = [getattr(t, score) - getattr(t, f"{score}_baseline") for t in truths]
        out[f"{score}_gain"] = stats.bootstrap_mean_ci(gains, seed)
    out["num_images_with_foci"] = len(truths)
    out["foci_mass_ratio_to_centre"] = (
        out["foci_mass"] / out["foci_mass_baseline"] if out["foci_mass"] is not None and out["foci_mass_baseline"]
        else None
    )
    return out
