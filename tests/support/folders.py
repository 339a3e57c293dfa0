"""Folders laid out as the pipeline finds them: BPS file names, a miniature of the real design, `meta.csv`, a raw
folder as `aws s3 sync` leaves it, and a `data/bps`-shaped prepared folder with ground-truth masks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .images import bps_like_image, nucleus_crop_with_mask, tiff_bytes
from .tiny_models import LABELS


def bps_name(plate: int, well: str, field: int, obj: int, acquisition: str = "73665006707") -> str:
    return f"P{plate}_{acquisition}-{well}_{field:03d}_{obj:03d}_proj.tif"


#: (plate, particle, dose, hour): a miniature of the real design, one plate per condition.
SMALL_DESIGN = (
    (901, "Fe", 0.82, 4), (902, "Fe", 0.3, 4), (903, "Fe", 0.0, 4), (904, "Fe", 0.82, 48),
    (911, "X-ray", 1.0, 4), (912, "X-ray", 0.1, 4), (913, "X-ray", 0.0, 4), (914, "X-ray", 1.0, 48),
)


def design_rows(design=SMALL_DESIGN, wells=("A1", "B2", "C3"), fields=4,
                objects=3) -> list[tuple[str, float, str, int]]:
    """(filename, dose, particle, hour) for every plate x well x field x object."""
    rows = []
    for plate, particle, dose, hour in design:
        for well in wells:
            for field in range(1, fields + 1):
                for obj in range(1, objects + 1):
                    rows.append((bps_name(plate, well, field, obj), dose, particle, hour))
    return rows


def write_meta(path: Path, rows, header: str = "filename,dose_Gy,particle_type,hr_post_exposure") -> None:
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_raw_folder(root: Path, rows=None, *, size: int = 48, masks: bool = False) -> list[tuple]:
    """A flat raw folder (meta.csv + one uint16 TIFF per row, `bps_like_image`), like `aws s3 sync` gives."""
    rows = design_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(exist_ok=True)
    for index, (name, *_rest) in enumerate(rows):
        image = bps_like_image(index, size)
        (root / name).write_bytes(tiff_bytes(image))
        if masks:
            mask = (image > np.percentile(image, 60)).astype(np.uint8)
            (root / "masks" / name).write_bytes(tiff_bytes(mask))
    write_meta(root / "meta.csv", rows)
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_prepared_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """`root/{split}/{Fe,X-ray}/*.tif` + `root/masks/*.tif` (`nucleus_crop_with_mask`), `per_class[split]` crops per
    label, one plate per split and label; returns root."""
    import tifffile

    rng = np.random.default_rng(seed)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    plate = 100
    for split, count in per_class.items():
        for label in LABELS:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            plate += 1
            for i in range(count):
                image, mask = nucleus_crop_with_mask(rng, label)
                name = f"P{plate}_{70000000000 + plate}-A{1 + i % 9}_{i:03d}_{i % 7:03d}_proj.tif"
                tifffile.imwrite(folder / name, image)
                tifffile.imwrite(root / "masks" / name, mask)
    return root
