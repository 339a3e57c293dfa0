"""SHAP for the ViT with an image masker (shap's Partition explainer, Owen values).

SHAP hides image regions (blurred, inpainted or set to a constant), asks the model again, and
shares the change in the model's output between the regions. It is model-agnostic, so it
checks the attention-based maps from the outside. Values are signed (positive pushes towards
the class, negative away from it) and by default in log-odds, log(p / (1 - p)): a confident
model's probability sits at 0.999 whatever is masked, so probability-unit SHAP values vanish
(~1e-7) while log-odds still show which regions carry the decision.

The masker works on the image the model sees before normalisation: HWC, [0, 255] floats (the
inpainting maskers need an 8-bit range). BPS images are one fluorescence channel repeated three
times; masking the three copies separately would show the model colours that never occur, so
such images are masked as one channel (HxWx1) and repeated again inside the model function.

`explain_raw` masks where the pipeline's input really is: the raw 16-bit image at its own
resolution, hidden pixels taking the foci-free `opening_fill`, then the model's own
preprocessing. Its values are moved to the model grid by `perturbation.resample_map` (sums kept).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .base import (
    Explainer,
    Explanation,
    Targets,
    log_odds,
    model_device,
    model_logits,
    resample_map,
    resolve_targets,
)

OUTPUTS = ("log_odds", "probability")
RAW_MASKERS = ("opening",)
MASKER_HELP = (
    '"opening" (raw space), "blur" (kernel = a quarter of the image), "blur(h,w)", "inpaint_telea", "inpaint_ns", '
    '"constant" or "constant(v)" with v in [0, 1]'
)
PIXEL_SCALE = 255.0


@dataclass
class ShapSettings:
    """SHAP's settings: `max_evals` masked forwards per image (seconds of work), the masker, the output units."""

    max_evals: int = 500
    masker: str = "blur"
    batch_size: int = 64
    seed: int = 0
    output: str = "log_odds"


def positive_part_heatmaps(values: np.ndarray) -> np.ndarray:
    """[B,H,W] signed values -> the part that supports the class, scaled to [0, 1] by its max."""
    positive = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, None)
    peak = positive.reshape(positive.shape[0], -1).max(axis=1)
    scale = np.divide(1.0, peak, out=np.zeros_like(peak), where=peak > 0)
    return positive * scale[:, None, None]


def make_masker(spec: str, shape: tuple[int, int, int]):
    """A shap image masker from a short text spec (command-line friendly)."""
    import shap  # deferred: shap takes seconds to import; only the SHAP method needs it

    spec = spec.strip()
    height, width, _ = shape
    if spec in RAW_MASKERS:
        raise ValueError(f"--shap_masker {spec} fills the raw image; it needs --perturbation_space raw")
    if spec == "blur":
        spec = f"blur({max(height // 4, 1)},{max(width // 4, 1)})"
    if re.fullmatch(r"blur\(\s*\d+\s*,\s*\d+\s*\)", spec):
        return shap.maskers.Image(spec.replace(" ", ""), shape)
    if spec in ("inpaint_telea", "inpaint_ns"):
        return shap.maskers.Image(spec, shape)
    match = re.fullmatch(r"constant(?:\(\s*([-+0-9.eE]+)\s*\))?", spec)
    if match:
        value = float(match.group(1)) if match.group(1) else 0.0
        return shap.maskers.Image(np.full(shape, value * PIXEL_SCALE, dtype=np.float32), shape)
    raise ValueError(f"--shap_masker {spec!r} is not understood; use {MASKER_HELP}")


@contextmanager
def seeded_global_rngs(seed: int):
    """numpy's and torch's global generators seeded for one SHAP call, then put back as they were.

    shap draws from the global generators; seeding them makes SHAP reproducible, and restoring them
    afterwards keeps any other code that draws unseeded from them visibly non-deterministic (the
    explain determinism test would catch it) instead of silently fixed by our seed."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


class ShapExplainer(Explainer):
    """SHAP values per class for a batch; the heatmap is the target class's positive part."""

    name = "shap"

    def __init__(
        self,
        model: torch.nn.Module,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        masker: str = "blur",
        max_evals: int = 500,
        batch_size: int = 64,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        output: str = "log_odds",
    ):
        super().__init__(model)
        if max_evals < 10:
            raise ValueError(f"--shap_max_evals must be at least 10; got {max_evals}")
        if batch_size < 1:
            raise ValueError(f"--shap_batch_size must be at least 1; got {batch_size}")
        if output not in OUTPUTS:
            raise ValueError(f"--shap_output must be one of {OUTPUTS}; got {output!r}")
        self.output = output
        if masker not in RAW_MASKERS:
            make_masker(masker, (8, 8, 1))  # validate the spec now, not after the first forward
        self.image_mean = torch.tensor(list(image_mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        self.image_std = torch.tensor(list(image_std), dtype=torch.float32).reshape(1, -1, 1, 1)
        self.masker = masker
        self.max_evals = int(max_evals)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.class_names = list(class_names) if class_names is not None else None

    def to_hwc(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Normalised [B,3,H,W] -> [B,H,W,C] in [0, 255]; C = 1 when the three channels are copies."""
        images = pixel_values.detach().float().cpu() * self.image_std + self.image_mean
        hwc = (images * PIXEL_SCALE).permute(0, 2, 3, 1).numpy()
        if hwc.shape[-1] == 3 and np.allclose(hwc, hwc[..., :1], atol=1e-3):
            hwc = hwc[..., :1]
        return np.ascontiguousarray(hwc, dtype=np.float32)

    def to_pixel_values(self, hwc: np.ndarray) -> torch.Tensor:
        """Inverse of `to_hwc`: masked HWC images -> normalised [N,3,H,W] for the model."""
        images = torch.from_numpy(np.ascontiguousarray(hwc, dtype=np.float32)).permute(0, 3, 1, 2) / PIXEL_SCALE
        if images.shape[1] == 1:
            images = images.expand(-1, self.image_mean.shape[1], -1, -1)
        return (images - self.image_mean) / self.image_std

    def model_outputs(self, hwc: np.ndarray, output: str | None = None) -> np.ndarray:
        """The model function SHAP calls: masked HWC images -> [N,classes] log-odds or probabilities, in batches.

        Converted a batch at a time, so SHAP's thousands of masked images never sit in memory as tensors."""
        step = self.batch_size
        return np.concatenate([self.model_outputs_from_pixels(self.to_pixel_values(hwc[start:start + step]), output)
                               for start in range(0, len(hwc), step)])

    def shap_values(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Signed SHAP values [B,num_classes,H,W] (summed over channels) for every class.

        All classes come from one Owen-value pass, so they cost the same model evaluations as one.
        """
        import shap  # deferred: shap takes seconds to import; only the SHAP method needs it

        hwc = self.to_hwc(pixel_values)
        with seeded_global_rngs(self.seed):
            explainer = shap.Explainer(
                self.model_outputs,
                make_masker(self.masker, hwc.shape[1:]),
                output_names=self.class_names,
                seed=self.seed,
            )
            result = explainer(hwc, max_evals=self.max_evals, batch_size=self.batch_size, silent=True)
        values = np.asarray(result.values)  # [B,H,W,C,K]
        if values.ndim == 4:  # a single-output model: add the class axis
            values = values[..., None]
        return values.sum(axis=3).transpose(0, 3, 1, 2).astype(np.float32)

    def explain(self, pixel_values: torch.Tensor, targets: Targets = None) -> Explanation:
        probabilities = self.model_outputs(self.to_hwc(pixel_values), output="probability")
        resolved = resolve_targets(targets, torch.from_numpy(probabilities)).numpy()
        values = self.shap_values(pixel_values)
        target_values = values[np.arange(len(resolved)), resolved]
        return Explanation(
            heatmaps=positive_part_heatmaps(target_values),
            raw=values,
            targets=resolved,
            probabilities=probabilities.astype(np.float32),
        )

    def raw_shap_values(self, image, model_shape: tuple[int, int]) -> np.ndarray:
        """Signed SHAP values [num_classes, *model_shape] of one `perturbation.RawImage`, masked in raw space."""
        import shap  # deferred: shap takes seconds to import; only the SHAP method needs it

        raw = image.raw.astype(np.float32)[:, :, None]
        fill = image.fill.astype(np.float32)[:, :, None]
        dtype = image.raw.dtype

        def model_function(masked: np.ndarray) -> np.ndarray:
            values = np.rint(masked[..., 0]) if np.issubdtype(dtype, np.integer) else masked[..., 0]
            pixel_values = image.preprocessor.normalize(
                np.stack([image.preprocessor.gray(v.astype(dtype)) for v in values])
            )
            return self.model_outputs_from_pixels(pixel_values)

        with seeded_global_rngs(self.seed):
            masker = shap.maskers.Image(fill, raw.shape)
            explainer = shap.Explainer(model_function, masker, output_names=self.class_names, seed=self.seed)
            result = explainer(raw[None], max_evals=self.max_evals, batch_size=self.batch_size, silent=True)
        values = np.asarray(result.values)[0]  # [H,W,1,K] or [H,W,1]
        values = values[..., None] if values.ndim == 3 else values
        values = values.sum(axis=2).transpose(2, 0, 1)  # [K,H,W]
        area = values.shape[-2] * values.shape[-1] / float(model_shape[0] * model_shape[1])
        return resample_map(values, model_shape) * np.float32(area)  # the same total per class

    @torch.no_grad()
    def model_outputs_from_pixels(self, pixel_values: torch.Tensor, output: str | None = None) -> np.ndarray:
        """Normalised [N,3,H,W] pixel values -> [N,classes] log-odds or probabilities, in batches of batch_size."""
        output = output or self.output
        device = model_device(self.model)
        out = []
        for start in range(0, len(pixel_values), self.batch_size):
            logits = model_logits(self.model(pixel_values=pixel_values[start:start + self.batch_size].to(device)))
            logits = logits.double()
            out.append((log_odds(logits) if output == "log_odds" else logits.softmax(-1)).cpu().numpy())
        return np.concatenate(out)

    def explain_raw(self, images, pixel_values: torch.Tensor, targets: Targets = None) -> Explanation:
        """SHAP with the masker in raw space, for `images` (RawImage) whose model input is `pixel_values`."""
        probabilities = self.model_outputs_from_pixels(pixel_values, output="probability")
        resolved = resolve_targets(targets, torch.from_numpy(probabilities)).numpy()
        values = np.stack([self.raw_shap_values(image, tuple(pixel_values.shape[-2:])) for image in images])
        target_values = values[np.arange(len(resolved)), resolved]
        return Explanation(
            heatmaps=positive_part_heatmaps(target_values),
            raw=values.astype(np.float32),
            targets=resolved,
            probabilities=probabilities.astype(np.float32),
        )
