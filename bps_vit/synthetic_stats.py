"""Per-image statistics of a synthetic crop, measured against its ground-truth mask.

They check the generator's promise (`synthetic_image.py`): statistics blind to the foci carry no
class signal, the foci statistics carry all of it (tests/test_synthetic.py,
bench/synthetic_separability.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import tifffile

from .bps import MetaRow
from .synthetic import MASKS_DIRNAME
from .synthetic_image import MASK_BACKGROUND, MASK_FOCI, MASK_NEIGHBOUR, MASK_NUCLEUS

#: Statistics that ignore the foci: by construction they carry no class signal.
FOCI_BLIND_STATISTICS = (
    "height", "width", "background_level", "background_std", "nucleus_area", "nucleus_mean", "nucleus_std",
    "neighbour_fraction",
)
#: Statistics of the foci themselves (from the ground-truth mask): where the class signal is.
FOCI_STATISTICS = ("foci_count", "focus_mean_area", "focus_max_area", "focus_mean_contrast", "focus_max_contrast")


def image_statistics(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Simple per-image statistics from a synthetic image and its mask, for separability checks.

    The foci-blind ones use the nucleus core with the foci masked out; the foci ones measure connected
    foci regions (area in px, contrast = focus peak above the nucleus, in nucleus levels).
    """
    image = np.asarray(image, dtype=np.float32)
    background = image[mask == MASK_BACKGROUND]
    if background.size == 0:  # a crop filled by nuclei: fall back to the darkest pixels
        background = np.sort(image, axis=None)[: max(1, image.size // 20)]
    # The nucleus core (eroded by 20% of its radius) minus the foci. On the whole nucleus, masking out
    # large foci would leave relatively more of the dim rim: a geometric artefact of masking, not a signal.
    whole = (mask == MASK_NUCLEUS) | (mask == MASK_FOCI)
    radius = math.sqrt(np.count_nonzero(whole) / math.pi)
    size = 2 * max(1, int(round(0.2 * radius))) + 1
    core = cv2.erode(whole.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))).astype(bool)
    nucleus = image[core & (mask == MASK_NUCLEUS)]
    if nucleus.size == 0:
        nucleus = image[mask == MASK_NUCLEUS]
    background_level = float(np.median(background))
    nucleus_level = max(float(np.median(nucleus)) - background_level, 1.0)
    stats = {
        "height": float(image.shape[0]),
        "width": float(image.shape[1]),
        "background_level": background_level,
        "background_std": float(background.std()),
        "nucleus_area": float(np.count_nonzero(whole)),
        "nucleus_mean": float(nucleus.mean()),
        "nucleus_std": float(nucleus.std()),
        "neighbour_fraction": float(np.count_nonzero(mask == MASK_NEIGHBOUR) / mask.size),
    }
    count, labels, cc_stats, _ = cv2.connectedComponentsWithStats((mask == MASK_FOCI).astype(np.uint8), connectivity=8)
    areas = cc_stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    if count > 1:
        flat_labels = labels.ravel()
        peaks = np.full(count, -np.inf)
        np.maximum.at(peaks, flat_labels, image.ravel())
        contrasts = (peaks[1:] - background_level) / nucleus_level - 1.0
    else:
        contrasts = np.zeros(0)
    stats.update(
        foci_count=float(count - 1),
        focus_mean_area=float(areas.mean()) if areas.size else 0.0,
        focus_max_area=float(areas.max()) if areas.size else 0.0,
        focus_mean_contrast=float(contrasts.mean()) if contrasts.size else 0.0,
        focus_max_contrast=float(contrasts.max()) if contrasts.size else 0.0,
    )
    return stats


def dataset_statistics(raw_dir: str | Path, rows: list[MetaRow]) -> list[dict[str, float]]:
    """`image_statistics` for every row of a generated folder (reads <name>.tif and masks/<name>.tif)."""
    raw_dir = Path(raw_dir)
    return [
        image_statistics(tifffile.imread(raw_dir / row.filename),
                         tifffile.imread(raw_dir / MASKS_DIRNAME / row.filename))
        for row in rows
    ]
