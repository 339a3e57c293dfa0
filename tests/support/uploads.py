"""Upload files the app must handle: every kind of bad one (answered with a message while the app keeps serving) and
odd but readable ones (accepted, with a note)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import bps_like_tiff


def bad_files(folder: Path) -> dict[str, Path]:
    """Every kind of bad upload the app must answer with a message (and keep serving)."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    good = bps_like_tiff(folder / "good_for_truncation.tif", "Fe", 0).read_bytes()
    files = {
        "corrupt": folder / "corrupt.tif",
        "truncated": folder / "truncated.tif",
        "text": folder / "notes.tif",
        "empty": folder / "empty.tif",
        "multipage": folder / "stack.tif",
        "huge": folder / "huge.tif",
        "nan_float": folder / "nan.tif",
    }
    files["corrupt"].write_bytes(b"II*\x00" + b"\x00" * 40)
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["text"].write_text("this is a lab note, not an image\n")
    files["empty"].write_bytes(b"")
    tifffile.imwrite(files["multipage"], np.zeros((3, 40, 40), np.uint16), photometric="minisblack")
    tifffile.imwrite(files["huge"], np.zeros((10_000, 10_000), np.uint8), compression="zlib", rowsperstrip=1000)
    nan = np.full((40, 40), 100.0, np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(files["nan_float"], nan)
    (folder / "good_for_truncation.tif").unlink()
    return files


def odd_but_readable(folder: Path) -> dict[str, Path]:
    """Images the model can read that were not what it was trained on: accepted, with a note."""
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    files = {"float": folder / "float.tif", "rgb": folder / "photo.png", "gray8": folder / "view.png"}
    tifffile.imwrite(files["float"], rng.normal(500, 50, (60, 60)).astype(np.float32))
    Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(files["rgb"])
    Image.fromarray(rng.integers(0, 255, (50, 40), dtype=np.uint8)).save(files["gray8"])
    return files
