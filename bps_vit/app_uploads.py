"""Checks on an image a stranger uploads, made from its header before the pixels are decoded.

The app serves whoever opens the page, so a file is judged on its size and its header first:
a 10,000 x 10,000 image or a 1,000-page TIFF is refused after reading a few hundred bytes of
tags, not after 200 MB of decoding. What passes is decoded by the same `imaging.read_image` as
every other step. Images that the model can read but were not what it was trained on (colour,
float) are accepted with a note saying what was done with them, as `scripts/predict.py` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .image_checks import bps_shape_warnings
from .imaging import ImageReadError, is_tiff, read_image

MAX_UPLOAD_BYTES = 50 * 2**20
MAX_PIXELS = 4096 * 4096  # a whole microscope field; BPS crops are ~150 x 150


@dataclass(frozen=True)
class ImageHeader:
    """What a file says about itself: size in pixels, samples per pixel, sample type, page count."""

    height: int
    width: int
    channels: int
    dtype: str
    pages: int
    kind: str  # "TIFF" or Pillow's format name


def read_header(path: str | os.PathLike, name: str | None = None) -> ImageHeader:
    """The header of a TIFF (tifffile parses the tags, not the pixel data) or a Pillow image (opened lazily)."""
    path = Path(path)
    label = name or path.name
    with path.open("rb") as handle:
        magic = handle.read(4)
    try:
        if is_tiff(magic):
            return _tiff_header(path)
        return _pil_header(path)
    except ImageReadError:
        raise
    except Exception as err:  # tifffile/Pillow raise many types for a file that is not an image
        what = "a corrupt or truncated TIFF" if is_tiff(magic) else "not an image (nor TIFF, PNG or JPEG)"
        raise ImageReadError(
            f"{label}: {what} ({type(err).__name__}: {err}). Upload the 16-bit TIFF crop again, or a PNG/JPEG."
        ) from err


def _tiff_header(path: Path) -> ImageHeader:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        pages = len(tif.pages)
        channels = int(page.samplesperpixel)
        if channels > 1 and page.shape[-1] != channels:  # planar (channel-first) samples: read_image expects HxWxC
            raise ImageReadError(
                f"{path.name}: a planar TIFF with {channels} channel-first samples; save it as one grey channel."
            )
        return ImageHeader(int(page.imagelength), int(page.imagewidth), channels, str(page.dtype), pages, "TIFF")


def _pil_header(path: Path) -> ImageHeader:
    with Image.open(path) as image:  # lazy: the pixels are not decoded here
        width, height = image.size
        bands = len(image.getbands())
        dtype = {"I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}.get(image.mode, "uint8")
        return ImageHeader(height, width, bands, dtype, int(getattr(image, "n_frames", 1)), str(image.format))


def check_upload(
    path: str | os.PathLike,
    name: str | None = None,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> list[str]:
    """Refuse (ImageReadError, naming the file and the fix) or accept with notes for the user."""
    path = Path(path)
    label = name or path.name
    if not path.is_file():
        raise ImageReadError(f"{label}: the upload did not arrive; upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise ImageReadError(f"{label}: the file is empty (0 bytes); upload the image file itself.")
    if size > max_bytes:
        raise ImageReadError(
            f"{label}: {size / 2**20:.1f} MB is more than the {max_bytes / 2**20:.0f} MB this app accepts; "
            "upload single nucleus crops."
        )
    header = read_header(path, label)
    if header.pages > 1:
        raise ImageReadError(
            f"{label}: a multi-page {header.kind} ({header.pages} pages); which page is the crop is ambiguous. "
            "Save the one crop as a single-page TIFF."
        )
    if header.height * header.width > max_pixels:
        raise ImageReadError(
            f"{label}: {header.width} x {header.height} pixels is far larger than a BPS nucleus crop (~150 x 150); "
            f"this app accepts at most {max_pixels:,} pixels. Crop the nucleus first."
        )
    if header.channels not in (1, 2, 3, 4):
        raise ImageReadError(f"{label}: {header.channels} samples per pixel; upload a single-channel (grey) image.")
    notes = [f"{label}: {warning}." for warning in bps_shape_warnings(header.height, header.width, header.channels,
                                                                      header.dtype)]
    if np.dtype(header.dtype).kind == "f":
        _check_float(path, label)
    return notes


def _check_float(path: Path, label: str) -> None:
    """A float image is stretched by its own percentiles like a 16-bit one, if every value is finite."""
    values = read_image(path, name=label)
    if not np.isfinite(values).all():
        raise ImageReadError(f"{label}: the float image holds NaN or infinite values; save the raw 16-bit TIFF.")
