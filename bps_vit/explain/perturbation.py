"""Perturbations that really remove the signal, and the check that says whether they do.

A deletion curve or a SHAP value means "what the model loses when these pixels are gone". That
only holds if "gone" removes the information. A Gaussian blur of the model's input does not,
when the class is also written into the image's large-scale brightness (as a per-image stretch
does): a fully blurred BPS nucleus is still classified correctly. So:

- `metrics.verdicts.whole_image_check` asks the model about images perturbed *everywhere*; a
  perturbation that leaves its balanced accuracy far from chance does not remove the signal,
  and nothing built on it may be called "better".
- `RawImage` perturbs where the pipeline's input really is, the raw 16-bit image before the
  stretch: removed pixels take a value that carries no foci (`opening_fill`, the nucleus or
  background level around them), then the model's own preprocessing (`Preprocessor.gray`) runs.
- `target_log_odds` and `probabilities_of` are what the model says about a stack of perturbed images.
  (`methods.base.resample_map` moves heatmaps and masks between the raw and the model resolution.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np
import torch

from ..imaging import Preprocessor
from ..threads import map_in_threads
from .methods.base import log_odds, model_device, model_logits

#: where pixels are removed (`--perturbation_space`)
Space = Literal["raw", "model"]
SPACES: tuple[str, ...] = get_args(Space)


def opening_fill(raw: np.ndarray, radius_fraction: float = 0.1) -> np.ndarray:
    """The image with every focus removed: a grey-level morphological opening (a rolling-ball background).

    Erosion then dilation with a disk of radius `radius_fraction` x the longer side removes every
    bright structure smaller than the disk (foci, ~1-6 px) and keeps the nucleus (radius ~0.3 x the
    side) with its shape and level. Needs no mask, so it works on real images too. Measured on the
    demo: with the whole image opened the model is at chance, while block medians (8x8) still let
    large Fe foci through (README). Same dtype as `raw` (integers stay integers, as in a file).
    """
    raw = np.asarray(raw)
    gray = raw if raw.ndim == 2 else raw.astype(np.float32).mean(axis=2)
    if gray.dtype not in (np.uint8, np.uint16, np.float32):
        gray = gray.astype(np.float32)
    radius = max(1, int(round(radius_fraction * max(gray.shape))))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.morphologyEx(np.ascontiguousarray(gray), cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REPLICATE)


@dataclass
class RawImage:
    """One raw image, its foci-free fill, and the model's preprocessing: masks in raw pixels -> model input."""

    raw: np.ndarray
    preprocessor: Preprocessor
    fill: np.ndarray | None = None
    threads: int = 2

    def __post_init__(self) -> None:
        self.raw = np.asarray(self.raw)
        if self.raw.ndim == 3:  # colour files: perturb the grey image the stretch would make
            self.raw = self.raw.astype(np.float32).mean(axis=2)
        if self.fill is None:
            self.fill = opening_fill(self.raw)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.raw.shape[:2])

    def grays(self, removed: np.ndarray) -> np.ndarray:
        """[N,H,W] bool masks at raw resolution (True = pixel replaced by the fill) -> [N,h,w] model greys."""
        removed = np.asarray(removed, dtype=bool)

        def one(mask):
            return self.preprocessor.gray(np.where(mask, self.fill, self.raw).astype(self.raw.dtype, copy=False))

        return np.stack(map_in_threads(one, list(removed), self.threads))

    def pixel_values(self, removed: np.ndarray) -> torch.Tensor:
        return self.preprocessor.normalize(self.grays(removed))


@torch.no_grad()
def target_log_odds(model: torch.nn.Module, pixel_values: torch.Tensor, target: int | np.ndarray,
                    batch_size: int = 64) -> np.ndarray:
    """log(p_t / (1 - p_t)) of each image's target class, from logits (stable when p rounds to 1)."""
    device = model_device(model)
    targets = torch.as_tensor(np.broadcast_to(np.asarray(target), (len(pixel_values),)).copy()).long()
    out = []
    for start in range(0, len(pixel_values), batch_size):
        logits = model_logits(model(pixel_values=pixel_values[start:start + batch_size].to(device))).double().cpu()
        out.append(log_odds(logits).gather(1, targets[start:start + batch_size, None])[:, 0])
    return torch.cat(out).numpy()


def probability_from_log_odds(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(values, dtype=np.float64)))


def step_masks(order: np.ndarray, shape: tuple[int, int], steps: int) -> np.ndarray:
    """[steps+1, H, W] bool: the first round(k/steps * N) pixels of `order` for k = 0..steps."""
    num_pixels = shape[0] * shape[1]
    counts = np.round(np.linspace(0, num_pixels, steps + 1)).astype(np.int64)
    rank = np.empty(num_pixels, dtype=np.int64)
    rank[np.asarray(order)] = np.arange(num_pixels)
    return rank.reshape(1, *shape) < counts.reshape(-1, 1, 1)


@torch.no_grad()
def probabilities_of(model: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    device = model_device(model)
    out = [model_logits(model(pixel_values=pixel_values[s:s + batch_size].to(device))).float().softmax(-1).cpu()
           for s in range(0, len(pixel_values), batch_size)]
    return torch.cat(out).numpy()
