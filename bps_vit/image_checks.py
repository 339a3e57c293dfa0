"""Check every image once before it is split: readable, an image by its bytes, large enough, and its sha256.

A corrupt, empty or non-image file is skipped and reported by `split.write_split` (count and list
in `split_report.json`), never dropped silently, and the content hash finds byte-identical copies
that would leak across splits.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .imaging import sniff_format

#: Smaller than this on a side cannot be a nucleus crop (real crops are ~100-280 px).
MIN_IMAGE_SIDE = 8


@dataclass(frozen=True)
class ImageCheck:
    """One file's verdict. `category` is empty for a usable image."""

    filename: str
    category: str = ""  # missing | zero-byte | not-an-image | corrupt | too-small | unsafe-path | download-failed
    reason: str = ""
    sha256: str = ""
    nbytes: int = 0
    kind: str = ""  # e.g. "TIFF uint16 gray 141x149"
    warning: str = ""  # why a usable image is not BPS-like (`upload.bps_shape_warnings`): colour, 8-bit, odd shape

    @property
    def ok(self) -> bool:
        return not self.category


def check_image(filename: str, path: Path | None, *, decode: bool = True) -> ImageCheck:
    """Read the file once: size, sha256, format sniffed from the bytes, and (with `decode`) a full decode."""
    from .imaging import ImageReadError, read_image
    from .upload import bps_shape_warnings

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


def check_images(
    filenames: Sequence[str], sources: Mapping[str, Path], *, decode: bool = True, num_workers: int = 8,
    disable_tqdm: bool = False,
) -> dict[str, ImageCheck]:
    """`check_image` for many files on a thread pool (file reads, zlib and tifffile release the GIL)."""
    from tqdm.auto import tqdm

    results: dict[str, ImageCheck] = {}
    with ThreadPoolExecutor(max_workers=max(1, num_workers), thread_name_prefix="bps-check") as pool:
        jobs = pool.map(lambda name: check_image(name, sources.get(name), decode=decode), filenames, chunksize=64)
        for check in tqdm(jobs, total=len(filenames), unit="img", desc="Checking images", disable=disable_tqdm):
            results[check.filename] = check
    return results
