"""A tiny saved model and upload files, good and bad, for the app's tests (unit and browser)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELS = ("Fe", "X-ray")


def bps_like_tiff(path: Path, label: str, seed: int, height: int = 72, width: int = 66) -> Path:
    """A uint16 nucleus crop: camera-offset background, a nucleus, few large (Fe) or many small (X-ray) foci."""
    import tifffile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = rng.normal(300, 10, (height, width))
    image[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2] += 350
    for _ in range(3 if label == "Fe" else 10):
        cy, cx = rng.integers(height // 3, 2 * height // 3), rng.integers(width // 3, 2 * width // 3)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < (4 if label == "Fe" else 1.5) ** 2] += 1500
    tifffile.imwrite(path, np.clip(image, 0, 65535).astype(np.uint16))
    return path


def save_tiny_model(folder: Path, seed: int = 3) -> Path:
    """A random-init tiny ViT saved as training saves it (safetensors + processor with the stretch): instant."""
    import torch
    from transformers import ViTImageProcessor

    from bps_vit.imaging import Stretch
    from bps_vit.model import build_model_from_config

    torch.manual_seed(seed)
    model = build_model_from_config(REPO / "configs/model/vit_tiny.json", labels=LABELS)
    model.save_pretrained(folder)
    Stretch(low_percentile=1.0, high_percentile=99.0).attach_to(
        ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ).save_pretrained(folder)
    return folder


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
