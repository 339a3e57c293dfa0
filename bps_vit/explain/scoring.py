"""Running the methods on one batch of images: heatmaps, their curves and checks, one `ExplainedImage` each.

A batch is read and put through the model once (`read_batch`); every method, the randomised
models, the whole-image perturbations, the deletion/insertion curves and the causal test then
work from that one `ModelBatch`. Every random choice is keyed by the image's position in the
chosen list (`index`), never by the process that handles it, so a multi-process run writes
the same records as a single one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..image_checks import bps_shape_warnings
from ..imaging import ImageReadError, Preprocessor, read_image
from ..results import SkippedFile
from . import perturbation as pert
from .arguments import ExplainArguments
from .methods.base import Explainer, Explanation, model_device, resample_map
from .methods.registry import ExplainerSettings, build_explainer
from .methods.shap import ShapSettings, make_masker
from .metrics import causal, deletion, ground_truth, randomization
from .records import ExplainedImage, MethodOutput
from .selection import ImageItem

logger = logging.getLogger(__name__)

#: (image index, item): the index is the image's position in the chosen list, the key of its random choices
IndexedItem = tuple[int, ImageItem]


def build_explainers(args: ExplainArguments, model, preprocessor: Preprocessor) -> dict[str, Explainer]:
    """One explainer per --methods entry, built as the app builds them (`registry.build_explainer`)."""
    shap = ShapSettings(max_evals=args.shap_max_evals, masker=args.shap_masker, batch_size=args.shap_batch_size,
                        seed=args.seed, output=args.shap_output)
    settings = ExplainerSettings(head_fusion=args.head_fusion, discard_ratio=args.discard_ratio, shap=shap)
    return {method: build_explainer(method, model, preprocessor, settings) for method in args.method_list()}


def randomized_models(args: ExplainArguments, model) -> list[tuple[str, torch.nn.Module]]:
    """(name, model) pairs for the sanity check; seeded, so identical on every process."""
    if args.randomization == "none":
        return []
    if args.randomization == "all":
        return [("all", randomization.randomized_copy(model, seed=args.seed))]
    if args.randomization == "classifier":
        return [("classifier", randomization.randomized_copy(model, seed=args.seed, num_stages=1))]
    stages = randomization.num_cascade_stages(model)
    return [(f"top{k}", randomization.randomized_copy(model, seed=args.seed, num_stages=k))
            for k in range(1, stages + 1)]


# --------------------------------------------------------------------------- reading a batch


@dataclass
class ModelBatch:
    """The images of a batch that could be read, put through the model once."""

    kept: list[IndexedItem]
    warnings: list[str]  # aligned with `kept`; "" for a BPS-like image
    raw_images: list[pert.RawImage]
    pixel_values: torch.Tensor
    fill_pixels: torch.Tensor  # the model input of each raw image's foci-free opening fill
    probabilities: np.ndarray
    targets: np.ndarray  # the predicted class: what every map explains


def _decode(batch: list[IndexedItem], preprocessor: Preprocessor) -> tuple[list, list, list[IndexedItem], list, list]:
    """(raws, greys, kept, skipped, warnings), aligned with kept.

    A usable image that is not BPS-like (colour, 8-bit, odd shape) is explained with the warning predict
    gives (`image_checks.bps_shape_warnings`), logged once here (each file is read once) and kept per image."""
    raws, grays, kept, skipped, warnings = [], [], [], [], []
    for index, item in batch:
        try:
            raw = read_image(item.path, name=item.path)
            grays.append(preprocessor.gray(raw))
        except ImageReadError as err:
            skipped.append(SkippedFile(item.path, str(err)))
            continue
        raws.append(raw)
        kept.append((index, item))
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        warning = "; ".join(bps_shape_warnings(raw.shape[0], raw.shape[1], channels, str(raw.dtype)))
        if warning:
            logger.warning("%s: %s", item.path, warning)
        warnings.append(warning)
    return raws, grays, kept, skipped, warnings


def read_batch(batch: list[IndexedItem], model,
               preprocessor: Preprocessor) -> tuple[ModelBatch | None, list[SkippedFile]]:
    """(the readable images through the model, or None when none could be read; the skipped files)."""
    raws, grays, kept, skipped, warnings = _decode(batch, preprocessor)
    if not kept:
        return None, skipped
    device = model_device(model)
    pixel_values = preprocessor.normalize(np.stack(grays)).to(device)
    probabilities = pert.probabilities_of(model, pixel_values)
    raw_images = [pert.RawImage(raw, preprocessor) for raw in raws]
    fill_pixels = preprocessor.normalize(np.stack([preprocessor.gray(image.fill) for image in raw_images])).to(device)
    return ModelBatch(kept, warnings, raw_images, pixel_values, fill_pixels, probabilities,
                      probabilities.argmax(axis=1)), skipped


# --------------------------------------------------------------------------- what each method says


def run_explainers(explainers: dict[str, Explainer], batch: ModelBatch, space: str,
                   model: torch.nn.Module | None = None) -> dict[str, Explanation]:
    """method -> Explanation of the batch's targets (on `model` instead of each explainer's own when given)."""
    out = {}
    for name, explainer in explainers.items():
        explainer = explainer if model is None else explainer.with_model(model)
        if name == "shap" and space == "raw":
            out[name] = explainer.explain_raw(batch.raw_images, batch.pixel_values, targets=batch.targets)
        else:
            out[name] = explainer.explain(batch.pixel_values, targets=batch.targets)
    return out


def whole_image_perturbations(args: ExplainArguments, explainers: dict[str, Explainer],
                              batch: ModelBatch) -> dict[str, torch.Tensor]:
    """Every perturbation a number may rest on, applied to the whole image (for the perturbation check)."""
    pixel_values = batch.pixel_values
    perturbed = {
        "raw:opening": batch.fill_pixels,
        "model:blur": deletion.baseline_images(pixel_values, "blur"),
        "model:mean": deletion.baseline_images(pixel_values, "mean"),
    }
    shap = explainers.get("shap")
    if shap is not None and args.perturbation_space == "model":
        hwc = shap.to_hwc(pixel_values)
        masker = make_masker(args.shap_masker, hwc.shape[1:])
        hidden = np.zeros(int(np.prod(hwc.shape[1:])), dtype=bool)  # shap maskers take a flat mask, True = kept
        masked = np.stack([np.asarray(masker(hidden, image)[0]).reshape(hwc.shape[1:]) for image in hwc])
        perturbed[f"model:shap_masker:{args.shap_masker}"] = shap.to_pixel_values(masked)
    return perturbed


# --------------------------------------------------------------------------- deletion / insertion


@dataclass
class CurveScorer:
    """(deletion, insertion) target log-odds of one image, in the space `--perturbation_space` names."""

    model: torch.nn.Module
    args: ExplainArguments
    pixel_values: torch.Tensor  # [C,H,W]
    baseline: torch.Tensor | None  # [C,H,W], model space only
    raw_image: pert.RawImage
    index: int
    target: int

    def _order(self, heatmap: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
        """Pixels most salient first (`heatmap` already of `shape`); for None the random order of this image."""
        if heatmap is None:
            return deletion.random_order(shape[0] * shape[1], self.args.seed, self.index)
        return deletion.saliency_order(heatmap)

    def curves(self, heatmap: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        steps, batch_size = self.args.faithfulness_steps, self.args.faithfulness_batch_size
        if self.args.perturbation_space == "raw":
            shape = self.raw_image.shape  # the model-resolution map ranks raw pixels
            order = self._order(None if heatmap is None else resample_map(heatmap, shape), shape)
            return deletion.raw_deletion_insertion(self.model, self.raw_image, order, self.target, steps, batch_size)
        order = self._order(heatmap, tuple(self.pixel_values.shape[-2:]))
        return deletion.deletion_insertion_curves(self.model, self.pixel_values, self.baseline, order, self.target,
                                               steps, batch_size)


# --------------------------------------------------------------------------- one record per image


def _label_mask(item: ImageItem, skipped: list[SkippedFile]) -> np.ndarray | None:
    if not item.mask_path:
        return None
    try:
        return read_image(item.mask_path)
    except ImageReadError as err:
        skipped.append(SkippedFile(item.mask_path, f"mask unreadable, ground-truth scores skipped: {err}"))
        return None


def _causal_probabilities(model, preprocessor: Preprocessor, args: ExplainArguments, raw_image: pert.RawImage,
                          raw_mask: np.ndarray | None, index: int) -> list | None:
    """The model on the image untouched, foci ablated, random nucleus pixels ablated (needs a raw-size mask)."""
    if raw_mask is None or raw_mask.shape[:2] != raw_image.shape:
        return None
    grays, _ = causal.causal_inputs(raw_image, raw_mask, args.causal_dilation, args.seed, index)
    return pert.probabilities_of(model, preprocessor.normalize(grays)).astype(np.float64).tolist()


def _method_output(explanation: Explanation, row: int, name: str, scorer: CurveScorer,
                   randomized_maps: list[tuple[str, np.ndarray]], truth_mask: np.ndarray | None) -> MethodOutput:
    heatmap = explanation.heatmaps[row]
    deleted, inserted = scorer.curves(heatmap)
    output = MethodOutput(
        heatmap=heatmap.astype(np.float32),
        deletion=deleted,
        insertion=inserted,
        randomization={stage: randomization.spearman(heatmap, maps[row]) for stage, maps in randomized_maps},
        ground_truth=ground_truth.ground_truth_scores(heatmap, truth_mask) if truth_mask is not None else None,
    )
    if name == "shap":
        output.shap_values = explanation.raw[row].astype(np.float32)  # [classes,H,W], signed
    elif np.shape(explanation.raw[row]) == np.shape(heatmap):
        # the unnormalised map, so the figure can flag a near-flat one instead of stretching it
        output.display = np.asarray(explanation.raw[row], dtype=np.float32)
    return output


def _explained_image(batch: ModelBatch, row: int, label_mask: np.ndarray | None, true_id: int | None,
                     random_curves: tuple[np.ndarray, np.ndarray], whole: dict[str, np.ndarray]) -> ExplainedImage:
    """Everything about one image except the methods' outputs and the causal test."""
    index, item = batch.kept[row]
    return ExplainedImage(
        index=index,
        path=item.path,
        filename=item.filename,
        label=item.label,
        branch=item.branch,
        warning=batch.warnings[row],
        true_id=true_id,
        target=int(batch.targets[row]),
        probabilities=batch.probabilities[row].astype(np.float64).tolist(),
        random_deletion=random_curves[0],
        random_insertion=random_curves[1],
        whole_image={key: value[row].astype(np.float64).tolist() for key, value in whole.items()},
        causal=None,
        has_mask=label_mask is not None,
        has_foci=label_mask is not None and bool((label_mask == ground_truth.FOCI_LABEL).any()),
        mask_path=item.mask_path,
    )


def explain_batch(
    batch: list[IndexedItem],
    args: ExplainArguments,
    model,
    preprocessor: Preprocessor,
    explainers: dict[str, Explainer],
    randomized: list[tuple[str, torch.nn.Module]],
    label2id: dict[str, int],
) -> tuple[list[ExplainedImage], list[SkippedFile], dict[str, float]]:
    """Explain and score one batch: (the explained images, skipped files, seconds per method)."""
    seconds: dict[str, float] = {name: 0.0 for name in [*explainers, "faithfulness"]}
    inputs, skipped = read_batch(batch, model, preprocessor)
    if inputs is None:
        return [], skipped, seconds
    space = args.perturbation_space
    explanations = {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        explanations.update(run_explainers({name: explainer}, inputs, space))
        seconds[name] += time.perf_counter() - start

    start = time.perf_counter()
    randomized_maps: dict[str, list] = {name: [] for name in explainers}
    for stage, random_model in randomized:
        for name, explanation in run_explainers(explainers, inputs, space, model=random_model).items():
            randomized_maps[name].append((stage, explanation.heatmaps))
    baselines = None
    if space == "model":
        baselines = deletion.baseline_images(inputs.pixel_values, args.faithfulness_baseline, fill=inputs.fill_pixels)
    whole = {key: pert.probabilities_of(model, value)
             for key, value in whole_image_perturbations(args, explainers, inputs).items()}
    images = []
    for row, (index, item) in enumerate(inputs.kept):
        scorer = CurveScorer(model, args, inputs.pixel_values[row], None if baselines is None else baselines[row],
                             inputs.raw_images[row], index, int(inputs.targets[row]))
        raw_mask = _label_mask(item, skipped)
        label_mask = None if raw_mask is None else ground_truth.resize_mask(raw_mask, *inputs.pixel_values.shape[-2:])
        true_id = label2id.get(item.label) if item.label is not None else None
        image = _explained_image(inputs, row, label_mask, true_id, scorer.curves(None), whole)
        if true_id is not None:
            image.causal = _causal_probabilities(model, preprocessor, args, inputs.raw_images[row], raw_mask, index)
        # foci scores ask "does the map find the damage?"; a sham (0 Gy) nucleus has none (its mask's foci are
        # endogenous, the same in both branches), and a mask without foci has nothing to hit: both are skipped
        truth_mask = label_mask if item.branch is None else None
        image.methods = {
            name: _method_output(explanation, row, name, scorer, randomized_maps[name], truth_mask)
            for name, explanation in explanations.items()
        }
        images.append(image)
    seconds["faithfulness"] += time.perf_counter() - start
    return images, skipped, seconds
