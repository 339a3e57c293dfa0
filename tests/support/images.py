"""BPS-like images, as arrays, file bytes and TIFF files. Three drawers, each kept for the tests built on its numbers:

- `bps_like_image`: a perturbed tile of the one real BPS crop (shared/), so data-layer tests see real 16-bit
  statistics; without shared/ a drawn nucleus on a camera offset.
- `bps_like_tiff`: a drawn uint16 nucleus crop with few large (Fe) or many small (X-ray) foci, written to a file.
- `nucleus_crop_with_mask`: a drawn crop and its ground-truth mask in the agreed format (0 background, 1 nucleus,
  2 foci, 3 neighbours), for the explanation tests.

tifffile and PIL are imported inside the functions that write files (`tests.support` is imported by every bench).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from .paths import REAL_IMAGE


@functools.cache
def _real_crop() -> np.ndarray | None:
    """The real BPS crop in shared/, read once; None when shared/ is absent."""
    if not REAL_IMAGE.is_file():
        return None
    import tifffile

    return tifffile.imread(REAL_IMAGE)


def bps_like_image(seed: int, size: int = 48) -> np.ndarray:
    """A uint16 size x size crop: a perturbed tile of the real image (or a drawn nucleus if it is absent)."""
    rng = np.random.default_rng(seed)
    base = _real_crop()
    if base is None:
        yy, xx = np.mgrid[:size, :size]
        r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
        base = 400 + 500 * (r2 < (size / 3) ** 2) + rng.normal(0, 20, (size, size))
        return np.clip(base, 0, 65535).astype(np.uint16)
    tile = np.rot90(base, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    y = int(rng.integers(0, tile.shape[0] - size + 1))
    x = int(rng.integers(0, tile.shape[1] - size + 1))
    crop = tile[y:y + size, x:x + size].astype(np.float64)
    crop = crop * rng.uniform(0.9, 1.1) + rng.normal(0, 8, crop.shape)
    return np.clip(crop, 0, 65535).astype(np.uint16)


def tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, compression="zlib")
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bps_like_tiff(path: Path, label: str, seed: int | np.random.Generator, height: int = 72, width: int = 66) -> Path:
    """A uint16 nucleus crop written to `path`: camera-offset background, a nucleus, few large (Fe) or many small
    (X-ray) foci. `seed` is an int or a generator shared by several crops (it is advanced)."""
    import tifffile

    rng = np.random.default_rng(seed)  # a Generator passes through as itself
    yy, xx = np.mgrid[:height, :width]
    image = rng.normal(300, 10, (height, width))
    image[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2] += 350
    for _ in range(3 if label == "Fe" else 10):
        cy, cx = rng.integers(height // 3, 2 * height // 3), rng.integers(width // 3, 2 * width // 3)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < (4 if label == "Fe" else 1.5) ** 2] += 1500
    tifffile.imwrite(path, np.clip(image, 0, 65535).astype(np.uint16))
    return path


def nucleus_crop_with_mask(rng: np.random.Generator, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 image, uint8 mask) of one 72-99 px nucleus crop with a neighbour's edge in a corner. Fe: 3 large
    bright foci, X-ray: 10 small dim ones; the class signal lives only in the foci, as in the synthetic data layer."""
    height, width = int(rng.integers(72, 100)), int(rng.integers(72, 100))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    background = rng.uniform(280, 450)
    image = np.full((height, width), background) + rng.normal(0, 12, (height, width))
    mask = np.zeros((height, width), np.uint8)
    cy, cx = height / 2 + rng.normal(0, 2), width / 2 + rng.normal(0, 2)
    ry, rx = rng.uniform(0.28, 0.34) * height, rng.uniform(0.28, 0.34) * width
    nucleus = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    neighbour = (yy - height) ** 2 + xx**2 <= (0.22 * height) ** 2
    image[nucleus | neighbour] += background
    mask[neighbour] = 3
    mask[nucleus] = 1
    count, radius, bright = (3, 2.6, 1400.0) if label == "Fe" else (10, 1.2, 500.0)
    for _ in range(count):
        angle, dist = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.55))
        fy, fx = cy + dist * ry * np.sin(angle), cx + dist * rx * np.cos(angle)
        spot = np.exp(-0.5 * ((yy - fy) ** 2 + (xx - fx) ** 2) / radius**2)
        image += bright * spot
        mask[(spot > 0.3) & nucleus] = 2
    return np.clip(image, 0, 65535).astype(np.uint16), mask
