"""The causal foci test on images with ground-truth masks: does the model read the damage itself?

For each image: (a) untouched, (b) the true foci (mask label 2, dilated by `dilation` px)
replaced by the nucleus median in the raw 16-bit image, (c) the same number of randomly chosen
non-foci nucleus pixels replaced the same way; each then goes through the model's own
preprocessing. A model that reads the foci falls to chance under (b) and stays at (a) under (c).
A model that reads something else (nucleus size, plate brightness) does not.
"""

from __future__ import annotations

import numpy as np

from ...metrics import balanced_accuracy
from ...results import CausalCondition, CausalTest
from ...synthetic_image import MASK_NUCLEUS
from ..perturbation import RawImage
from ..records import ExplainedImage
from .ground_truth import FOCI_LABEL, dilate
from .verdicts import CHANCE_TOLERANCE

NUCLEUS_LABEL = MASK_NUCLEUS
CONDITIONS = ("untouched", "foci_ablated", "random_nucleus_ablated")


def ablation_masks(label_mask: np.ndarray, dilation: int, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(foci pixels, as many random non-foci nucleus pixels) as raw-resolution bool masks."""
    label_mask = np.asarray(label_mask)
    foci = dilate(label_mask == FOCI_LABEL, dilation)
    candidates = np.flatnonzero(((label_mask == NUCLEUS_LABEL) | (label_mask == FOCI_LABEL)) & ~foci)
    count = min(int(foci.sum()), candidates.size)
    chosen = np.random.default_rng([int(seed), int(index), 7]).choice(candidates, size=count, replace=False)
    random = np.zeros(label_mask.size, dtype=bool)
    random[chosen] = True
    return foci, random.reshape(label_mask.shape)


def nucleus_fill(raw: np.ndarray, label_mask: np.ndarray) -> np.ndarray:
    """An image of the nucleus median (pixels of label 1, foci excluded), in the raw dtype."""
    nucleus = np.asarray(label_mask) == NUCLEUS_LABEL
    level = np.median(raw[nucleus]) if nucleus.any() else np.median(raw)
    return np.full_like(raw, np.rint(level) if np.issubdtype(raw.dtype, np.integer) else level)


def causal_inputs(image: RawImage, label_mask: np.ndarray, dilation: int, seed: int, index: int):
    """Model greys [3,h,w] for (a), (b), (c) and the number of pixels ablated."""
    foci, random = ablation_masks(label_mask, dilation, seed, index)
    ablate = RawImage(image.raw, image.preprocessor, fill=nucleus_fill(image.raw, label_mask), threads=1)
    masks = np.stack([np.zeros_like(foci), foci, random])
    return ablate.grays(masks), int(foci.sum())


def summarize_causal(probabilities: np.ndarray, labels: np.ndarray, dilation: int) -> CausalTest | None:
    """probabilities [N,3,K] for the three conditions, labels [N] -> the test's table and verdicts."""
    if len(labels) == 0:
        return None
    labels = np.asarray(labels)
    table = {}
    for k, name in enumerate(CONDITIONS):
        probs = np.asarray(probabilities[:, k], dtype=np.float64)
        predictions = probs.argmax(axis=1)
        table[name] = CausalCondition(
            accuracy=float((predictions == labels).mean()),
            balanced_accuracy=balanced_accuracy(labels, predictions),
            mean_p_true=float(probs[np.arange(len(labels)), labels].mean()),
        )
    chance = 1.0 / len(np.unique(labels))
    untouched, foci, random = (table[name].balanced_accuracy for name in CONDITIONS)
    return CausalTest(
        n=int(len(labels)),
        space="raw",
        fill="nucleus median (mask label 1)",
        foci_dilation_px=int(dilation),
        chance=chance,
        tolerance=CHANCE_TOLERANCE,
        **table,
        foci_ablated_near_chance=bool(abs(foci - chance) <= CHANCE_TOLERANCE),
        random_ablation_near_untouched=bool(abs(random - untouched) <= CHANCE_TOLERANCE),
    )


def causal_test(images: list[ExplainedImage], dilation: int) -> CausalTest | None:
    """The test's table over the explained images that carry causal probabilities (labelled, raw-size mask)."""
    rows = [image for image in images if image.causal is not None]
    if not rows:
        return None
    return summarize_causal(np.array([image.causal for image in rows]), np.array([image.true_id for image in rows]),
                            dilation)
