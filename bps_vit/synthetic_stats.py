"""Per-image statistics of a synthetic crop, measured against its ground-truth mask.

They check the generator's promise (`synthetic_image.py`): statistics blind to the foci carry no
class signal, the foci statistics carry all of it (tests/test_synthetic.py,
bench/synthetic_separability.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import tifffile

from .bps import MetaRow, parse_filename
from .split import select_rows
from .synthetic import MASKS_DIRNAME, plan_rows
from .synthetic_config import SyntheticConfig
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


# ----------------------------------------------------------------------------- layout against the real experiment


def _spread(values: list[int]) -> str:
    low, median, high = np.percentile(values, [25, 50, 75])
    return f"{median:g} [{low:g}-{high:g}], mean {np.mean(values):.1f}"


def layout_summary(rows: list[MetaRow]) -> dict[str, str]:
    """How crops nest in plates, wells and fields, read from their names: median [IQR], mean per level."""
    wells, fields, crops, conditions = defaultdict(set), defaultdict(set), defaultdict(int), defaultdict(set)
    for row in rows:
        name = parse_filename(row.filename)
        conditions[name.plate_id].add(row.condition)
        wells[name.plate_id].add(name.well)
        fields[(name.plate_id, name.well)].add(name.field)
        crops[(name.plate_id, name.well, name.field)] += 1
    wells_per_plate = [len(w) for w in wells.values()]
    return {
        "images": f"{len(rows):,}",
        "plates (conditions per plate)": f"{len(wells)} ({max(len(c) for c in conditions.values())})",
        "wells per plate": f"{int(np.median(wells_per_plate))} ({min(wells_per_plate)}-{max(wells_per_plate)})",
        "fields per well": _spread([len(f) for f in fields.values()]),
        "nuclei per field": _spread(list(crops.values())),
    }


def layout_comparison(real_rows: list[MetaRow], per_condition: int = 176, seed: int = 0) -> str:
    """Markdown table: the real meta.csv's layout against the synthetic default's, at full size and at a demo's
    size (the real data drawn `per_condition` per condition by prepare_data's own `--max_per_condition` code)."""
    subsample = select_rows(real_rows, max_per_condition=per_condition, seed=seed).rows
    columns = [
        ("real meta.csv", layout_summary(real_rows)),
        ("synthetic, same size", layout_summary(plan_rows(SyntheticConfig(num_images=len(real_rows), seed=seed)))),
        (f"real, {per_condition} per condition", layout_summary(subsample)),
        ("synthetic, same size", layout_summary(plan_rows(SyntheticConfig(num_images=len(subsample), seed=seed)))),
    ]
    lines = ["| | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key in columns[0][1]:
        lines.append(f"| {key} | " + " | ".join(summary[key] for _, summary in columns) + " |")
    return "\n".join(lines)
