"""A tiny trained BPS model and a `data/bps`-shaped folder with ground-truth masks, for explain tests.

Fe-like images carry a few large bright foci, X-ray-like ones many small dim foci (the signal
lives only in the foci, as in the synthetic data layer); masks follow the agreed format
(0 background, 1 nucleus, 2 foci, 3 neighbours). A tiny ViT (configs/model/vit_tiny.json)
is trained a few dozen steps so that its explanations have something to explain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch

from bps_vit.imaging import Preprocessor, Stretch
from bps_vit.model import build_model_from_config

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "configs" / "model" / "vit_tiny.json"
LABELS = ("Fe", "X-ray")


def draw_image(rng: np.random.Generator, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 image, uint8 mask) of one nucleus crop."""
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


def make_prepared_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """`root/{train,test}/{Fe,X-ray}/*.tif` + `root/masks/*.tif`; returns root."""
    rng = np.random.default_rng(seed)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    plate = 100
    for split, count in per_class.items():
        for label in LABELS:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            plate += 1
            for i in range(count):
                image, mask = draw_image(rng, label)
                name = f"P{plate}_{70000000000 + plate}-A{1 + i % 9}_{i:03d}_{i % 7:03d}_proj.tif"
                tifffile.imwrite(folder / name, image)
                tifffile.imwrite(root / "masks" / name, mask)
    return root


def train_tiny_model(data_dir: Path, out_dir: Path, steps: int = 80, seed: int = 0) -> Path:
    """Train the tiny ViT on data_dir/train and save it like the training step does."""
    from transformers import ViTImageProcessor

    torch.manual_seed(seed)
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    Stretch().attach_to(processor)
    preprocessor = Preprocessor.from_processor(processor)
    paths, targets = [], []
    for target, label in enumerate(LABELS):
        for path in sorted((data_dir / "train" / label).glob("*.tif")):
            paths.append(path)
            targets.append(target)
    pixels = preprocessor(paths)
    labels = torch.tensor(targets)
    model = build_model_from_config(TINY_CONFIG, labels=LABELS, attn_implementation="eager")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randperm(len(paths), generator=generator)[:16]
        flips = torch.rand(4, generator=generator)
        x = pixels[batch]
        x = torch.flip(x, dims=[-1]) if flips[0] > 0.5 else x
        x = torch.flip(x, dims=[-2]) if flips[1] > 0.5 else x
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
