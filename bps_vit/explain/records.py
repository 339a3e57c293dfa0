"""What the explain step knows about each image while it runs: its maps, curves and checks, typed.

`scoring` fills one `ExplainedImage` per image, with one `MethodOutput` per method. Every process's images are
gathered on the main process, where the metrics summarise them (`metrics.verdicts`, `metrics.causal`) and
`report` writes each image's line (`results.ImageRecord`) and figure. The arrays stay here; only numbers reach
explain_metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GroundTruthScores:
    """One map against the true foci of its image, beside the maps that know nothing (centre Gaussian, uniform)."""

    foci_mass: float  # share of the map on the foci
    foci_mass_baseline: float
    foci_mass_uniform: float
    pointing_game: float  # 1.0 when the map's maximum lands on a (dilated) focus
    pointing_game_baseline: float
    pointing_game_uniform: float


@dataclass
class MethodOutput:
    """One method on one image."""

    heatmap: np.ndarray  # [h, w] in [0, 1] at the model's resolution
    deletion: np.ndarray  # target log-odds after deleting the first k/steps of the map's order, k = 0..steps
    insertion: np.ndarray  # the same, inserting into the fully perturbed image
    randomization: dict[str, float]  # randomised-model stage -> Spearman of its map with this one
    ground_truth: GroundTruthScores | None  # None without foci to find (no mask, no foci, a sham nucleus)
    shap_values: np.ndarray | None = None  # SHAP: [classes, h, w], signed
    display: np.ndarray | None = None  # the map before scaling, so a figure can flag a near-flat one


@dataclass
class ExplainedImage:
    """One image: the model's call, the random-order curves every method must beat, the whole-image checks, the
    causal test's probabilities, and each method's output."""

    index: int  # position in the chosen list: the key of every random choice made for this image
    path: str
    filename: str
    label: str | None  # the true class, when known
    branch: str | None  # sham only: the experimental branch folder, not a truth
    warning: str  # why the image is not what the model was trained on ("" for a BPS crop)
    true_id: int | None
    target: int  # the predicted class: what every map explains
    probabilities: list[float]
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    whole_image: dict[str, list[float]]  # perturbation key -> probabilities with the whole image perturbed
    causal: list[list[float]] | None  # probabilities untouched / foci ablated / random nucleus pixels ablated
    has_mask: bool
    has_foci: bool
    mask_path: str | None
    methods: dict[str, MethodOutput] = field(default_factory=dict)
