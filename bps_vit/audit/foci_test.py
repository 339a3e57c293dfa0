"""The causal foci test (explain's, `explain/metrics/causal.py`) on one fold's model per strategy: does it read
the foci?

Synthetic data only: it needs the ground-truth masks (`masks/<filename>` in the prepared folder). The images are
images the fold's model never trained on, half per label, drawn with a seed: its held-out images, and for a label
they lack (a plate fold holds out one plate, so one label) its validation images, which a plate fold carves from
other plates. The model is the fold's saved best model, loaded as explain loads any checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bps import LABELS
from ..explain.metrics.causal import causal_inputs, summarize_causal
from ..explain.perturbation import RawImage, probabilities_of
from ..imaging import read_image
from ..model import load_for_inference
from ..results import CausalTest
from .folds import Fold, Image, Pool

MASKS_DIR = "masks"
DILATION_PX = 2  # as explain's default --causal_dilation


def images_for_test(pool: Pool, fold: Fold, data_dir: str | Path, count: int, seed: int) -> list[Image]:
    """Up to `count` untrained-on images of the fold that have a mask, half per label, in a seeded draw."""
    masks = Path(data_dir) / MASKS_DIR
    chosen: list[Image] = []
    for label in range(len(LABELS)):
        held_out = [i for i in fold.held_out if pool.images[i].label == label]
        positions = held_out or [i for i in fold.validation if pool.images[i].label == label]
        candidates = [pool.images[i] for i in positions if (masks / pool.images[i].filename).is_file()]
        take = min(len(candidates), count // len(LABELS))
        picks = np.random.default_rng([seed, label]).choice(len(candidates), size=take, replace=False)
        chosen += [candidates[i] for i in sorted(picks)]
    return chosen


def causal_foci_test(model_dir: str | Path, images: list[Image], data_dir: str | Path,
                     seed: int = 0) -> CausalTest | None:
    """Explain's causal test table (accuracy untouched, foci ablated, random nucleus pixels ablated); None
    without images."""
    if not images:
        return None
    loaded = load_for_inference(str(model_dir), dtype="float32")
    model, preprocessor = loaded.model, loaded.preprocessor
    probabilities, labels = [], []
    for index, image in enumerate(images):
        raw = read_image(Path(data_dir) / image.path)
        mask = read_image(Path(data_dir) / MASKS_DIR / image.filename)
        if mask.shape[:2] != raw.shape[:2]:
            continue
        grays, _ = causal_inputs(RawImage(raw, preprocessor, threads=1), mask, DILATION_PX, seed, index)
        probabilities.append(probabilities_of(model, preprocessor.normalize(grays)))
        labels.append(image.label)
    if not labels:
        return None
    return summarize_causal(np.stack(probabilities), np.array(labels), DILATION_PX)


def reading(test: CausalTest | None) -> str:
    """The test's answer in words."""
    if test is None:
        return "not run: it needs the ground-truth foci masks of synthetic data"
    numbers = (f"accuracy untouched {test.untouched.accuracy:.3f}, foci ablated "
               f"{test.foci_ablated.accuracy:.3f}, as many random nucleus pixels ablated "
               f"{test.random_nucleus_ablated.accuracy:.3f} (n={test.n})")
    if test.untouched.balanced_accuracy <= test.chance + test.tolerance:
        return f"says nothing here: the model is not above chance on these images even untouched: {numbers}"
    if test.foci_ablated_near_chance and test.random_ablation_near_untouched:
        return f"reads the foci: {numbers}"
    if not test.foci_ablated_near_chance:
        return f"does not rest on the foci alone (it still scores without them): {numbers}"
    return f"falls with the foci but also with other nucleus pixels: {numbers}"
