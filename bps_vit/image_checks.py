"""Check every image once before it is split: readable, an image by its bytes, large enough, and its sha256;
and the one rule for what a BPS crop looks like (`bps_shape_warnings`).

A corrupt, empty or non-image file is skipped and reported by `split.write_split` (count and list
in `split_report.json`), never dropped silently, and the content hash finds byte-identical copies
that would leak across splits. A usable image that is not BPS-like (colour, 8-bit, odd shape) is
kept with a warning, worded by `bps_shape_warnings` for prepare, predict, explain and the app alike.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from .imaging import ImageReadError, read_image, sniff_format

#: Smaller than this on a side cannot be a nucleus crop (real crops are ~100-280 px).
MIN_IMAGE_SIDE = 8

#: What a BPS crop is: one channel of raw 16-bit camera counts (53BP1 fluorescence), one nucleus, roughly square,
#: about 100-280 px a side (the generator in `synthetic` draws 100-280 by default). The side range is wide on
#: purpose, from the smallest crop the generator accepts (32 px) to about twice the largest, so only a different
#: kind of image (a thumbnail, a whole field, a strip) is flagged; the model still runs on it, but was never
#: trained on anything like it.
BPS_DTYPE = "uint16"
BPS_MIN_SIDE = 32
BPS_MAX_SIDE = 600
BPS_MAX_ASPECT = 2.0


@dataclass(frozen=True)
class ImageCheck:
    """One file's verdict. `category` is empty for a usable image."""

    filename: str
    category: str = ""  # missing | zero-byte | not-an-image | corrupt | too-small | unsafe-path | download-failed
    reason: str = ""
    sha256: str = ""
    nbytes: int = 0
    kind: str = ""  # e.g. "TIFF uint16 gray 141x149"
    warning: str = ""  # why a usable image is not BPS-like (`bps_shape_warnings`): colour, 8-bit, odd shape

    @property
    def ok(self) -> bool:
        return not self.category


def check_image(filename: str, path: Path | None, *, decode: bool = True) -> ImageCheck:
    """Read the file once: size, sha256, format sniffed from the bytes, and (with `decode`) a full decode."""
    if path is None or not path.is_file():
        return ImageCheck(filename, "missing", f"no file at {path}" if path else "no file for this row")
    data = path.read_bytes()
    if not data:
        return ImageCheck(filename, "zero-byte", "the file is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    fmt = sniff_format(data[:8])
    if fmt is None:
        return ImageCheck(filename, "not-an-image", f"not an image file (starts with {data[:8]!r})", digest, len(data))
    kind = fmt
    if decode:
        try:
            array = read_image(data, name=filename)
        except ImageReadError as err:
            return ImageCheck(filename, "corrupt", f"{fmt} that cannot be decoded: {str(err).split(': ', 1)[-1]}",
                              digest, len(data))
        n_channels = 1 if array.ndim == 2 else array.shape[2]
        channels = "gray" if n_channels == 1 else f"{n_channels}ch"
        kind = f"{fmt} {array.dtype} {channels} {array.shape[0]}x{array.shape[1]}"
        if min(array.shape[:2]) < MIN_IMAGE_SIDE:
            return ImageCheck(filename, "too-small", f"{array.shape[0]}x{array.shape[1]} px is too small for a nucleus "
                              f"crop (minimum {MIN_IMAGE_SIDE} px)", digest, len(data), kind)
        warning = "; ".join(bps_shape_warnings(array.shape[0], array.shape[1], n_channels, str(array.dtype)))
        return ImageCheck(filename, "", "", digest, len(data), kind, warning)
    return ImageCheck(filename, "", "", digest, len(data), kind)


def bps_shape_warnings(height: int, width: int, channels: int, dtype: str) -> list[str]:
    """Why an image is not what the model was trained on (colour, not 16-bit, not crop-shaped); [] for a BPS crop.

    One rule for every step that takes images (predict's `warning` column, prepare's console summary, the
    app's notes): the image is still used, the user is told what was assumed.
    """
    warnings = []
    if channels >= 3:
        warnings.append(f"a colour image ({channels} channels), averaged to one grey channel; BPS images are "
                        "single-channel 53BP1 fluorescence")
    kind = np.dtype(dtype).kind
    if kind == "u" and np.dtype(dtype).itemsize == 1:
        warnings.append("an 8-bit image: BPS crops are raw 16-bit counts, and an 8-bit view has lost most of "
                        "their grey levels (the stretch is applied to what is left)")
    elif kind == "f":
        warnings.append("a floating-point image; it was stretched by its own percentiles like a 16-bit one, but "
                        "the model was trained on raw 16-bit counts")
    elif kind in "iu" and np.dtype(dtype) != np.dtype(BPS_DTYPE):
        warnings.append(f"a {dtype} image, not the raw {BPS_DTYPE} counts the model was trained on")
    low, high = sorted((height, width))
    if low < BPS_MIN_SIDE or high > BPS_MAX_SIDE or high > BPS_MAX_ASPECT * low:
        warnings.append(f"{width} x {height} px is not shaped like a BPS nucleus crop (about 100-280 px, roughly "
                        f"square; flagged outside {BPS_MIN_SIDE}-{BPS_MAX_SIDE} px or beyond {BPS_MAX_ASPECT:g}:1)")
    return warnings


def check_images(
    filenames: Sequence[str], sources: Mapping[str, Path], *, decode: bool = True, num_workers: int = 8,
    disable_tqdm: bool = False,
) -> dict[str, ImageCheck]:
    """`check_image` for many files on a thread pool (file reads, zlib and tifffile release the GIL)."""
    results: dict[str, ImageCheck] = {}
    with ThreadPoolExecutor(max_workers=max(1, num_workers), thread_name_prefix="bps-check") as pool:
        jobs = pool.map(lambda name: check_image(name, sources.get(name), decode=decode), filenames, chunksize=64)
        for check in tqdm(jobs, total=len(filenames), unit="img", desc="Checking images", disable=disable_tqdm):
            results[check.filename] = check
    return results
