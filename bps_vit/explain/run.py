"""The explain step: a saved checkpoint + images -> heatmap figures and `explain_metrics.json`.

Reads only what earlier steps wrote (a model folder or Hub id, a prepared split or raw TIFFs),
so it reruns on any checkpoint. Reproducible by construction: the images are chosen with a
seeded generator from sorted lists, every random choice is keyed by the image's position in
that list (not by the process that handles it), the batches are cut before they are shared
out, and timings (which vary) go to `explain_timings.json`, never into the metrics file.

Under `accelerate launch --num_processes N scripts/explain.py ...` the batches are split across
processes, the per-image results gathered, and the main process writes one metrics file and
the figures, the same as a single-process run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cli import ProgressArguments
from ..distributed import distributed_state
from ..imaging import IMAGE_SUFFIXES, ImageReadError, Preprocessor, display_image, read_image
from ..manifest import SHAM_SPLIT
from ..results import ExplanationResults, weights_fingerprint
from . import causal, stats
from . import faithfulness as faith
from . import perturbation as pert
from .base import Explainer
from .grad_rollout import GradientRollout
from .rollout import HEAD_FUSIONS, AttentionRollout
from .shap_explainer import ShapExplainer

# sham images (0 Gy) sit in the folder of their experimental branch: a grouping, not a truth about damage
SHAM_LABELS_NOTE = "branch (sham: not a truth)"

logger = logging.getLogger(__name__)

METHODS = ("rollout", "grad_rollout", "shap")
METRICS_FILE = "explain_metrics.json"
TIMINGS_FILE = "explain_timings.json"
DECIMALS = 4  # metrics are rounded so that float noise (thread count, process split) cannot change the file


@dataclass
class ExplainArguments(ProgressArguments):
    """Arguments of `scripts/explain.py` (also accepted from a single .yaml/.json file)."""

    model: str = field(metadata={"help": "Saved model folder (outputs/<run>) or Hub id of a fine-tuned BPS model."})
    data_dir: str = field(
        default="data/bps", metadata={"help": "Prepared data folder (train|validation|test/{Fe,X-ray}/*.tif, masks/)."}
    )
    split: str = field(default="test", metadata={"help": "Split folder of --data_dir to take images from."})
    images: list[str] | None = field(
        default=None,
        metadata={"help": "Explain these image files (TIFF, PNG, JPEG, as predict) or folders of them instead of a "
                  "split (labels from a class-named parent folder or a meta.csv beside them; masks from a masks/ "
                  "folder beside them)."},
    )
    num_images: int = field(
        default=8, metadata={"help": "How many images (balanced over classes, seeded); <= 0 = all."}
    )
    methods: str = field(
        default="rollout,grad_rollout,shap", metadata={"help": f"Comma-separated, from {', '.join(METHODS)}."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where figures/ and the JSON files go (default <model>/explain)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Images per explanation batch."})
    head_fusion: str = field(
        default="mean", metadata={"help": f"Attention rollout head fusion: {', '.join(HEAD_FUSIONS)}."}
    )
    discard_ratio: float = field(
        default=0.0, metadata={"help": "Attention rollout: share of lowest attentions dropped per layer, in [0, 1)."}
    )
    perturbation_space: str = field(
        default="raw",
        metadata={"help": "Where deletion/insertion and SHAP remove pixels: raw (the 16-bit image before the stretch, "
                  "then the model's preprocessing) or model (the normalised model input)."},
    )
    shap_masker: str = field(
        default="opening",
        metadata={"help": 'SHAP masker: "opening" (raw space); model space: "blur", "blur(h,w)", '
                  '"inpaint_telea", "inpaint_ns", "constant(v)".'},
    )
    shap_output: str = field(
        default="log_odds",
        metadata={"help": "What SHAP explains: log_odds (default; stays informative for confident models) "
                  "or probability."},
    )
    shap_max_evals: int = field(default=500, metadata={"help": "SHAP model evaluations per image."})
    shap_batch_size: int = field(default=64, metadata={"help": "Masked images per SHAP forward batch."})
    faithfulness_steps: int = field(default=32, metadata={"help": "Deletion/insertion steps per curve."})
    faithfulness_batch_size: int = field(
        default=64, metadata={"help": "Images per forward batch for the deletion/insertion curves."}
    )
    faithfulness_baseline: str = field(
        default="opening",
        metadata={"help": "What removed pixels become: opening (foci-free local level; raw or model space), "
                  "blur or mean (model space only)."},
    )
    causal_dilation: int = field(
        default=2, metadata={"help": "Causal foci test: foci dilated by this many raw pixels."}
    )
    randomization: str = field(
        default="all", metadata={"help": "Model-randomisation check: all, classifier, cascade or none."}
    )
    max_figures: int = field(
        default=16, metadata={"help": "Per-image figures to draw (the metrics use every image); <0 = all."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for image choice, random baselines and SHAP."})

    def method_list(self) -> list[str]:
        methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown or not methods:
            raise ValueError(
                f"--methods {self.methods!r}: unknown {unknown or 'empty list'}; choose from {', '.join(METHODS)}"
            )
        return list(dict.fromkeys(methods))

    def validate(self) -> None:
        self.method_list()
        if self.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"--head_fusion must be one of {HEAD_FUSIONS}; got {self.head_fusion!r}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError(f"--discard_ratio must be in [0, 1); got {self.discard_ratio}")
        if self.perturbation_space not in pert.SPACES:
            raise ValueError(f"--perturbation_space must be one of {pert.SPACES}; got {self.perturbation_space!r}")
        allowed = ("opening",) if self.perturbation_space == "raw" else faith.BASELINES
        if self.faithfulness_baseline not in allowed:
            raise ValueError(f"--faithfulness_baseline in {self.perturbation_space} space must be one of {allowed}; "
                             f"got {self.faithfulness_baseline!r}")
        if self.perturbation_space == "raw" and self.shap_masker not in ("opening",):
            raise ValueError(f"--shap_masker {self.shap_masker!r} masks the model input; in raw space use opening "
                             "(or pass --perturbation_space model)")
        if self.randomization not in faith.RANDOMIZATIONS:
            raise ValueError(f"--randomization must be one of {faith.RANDOMIZATIONS}; got {self.randomization!r}")
        if self.batch_size < 1 or self.faithfulness_batch_size < 1 or self.faithfulness_steps < 2:
            raise ValueError("--batch_size and --faithfulness_batch_size must be >= 1, --faithfulness_steps >= 2")

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        if Path(self.model).is_dir():
            return Path(self.model) / "explain"
        return Path("outputs") / self.model.replace("/", "__") / "explain"


# --------------------------------------------------------------------------- choosing images


@dataclass(frozen=True)
class ImageItem:
    path: str
    label: str | None
    mask_path: str | None
    branch: str | None = None  # sham only: the experimental branch folder (Fe or X-ray), not a truth

    @property
    def group(self) -> str:
        return self.label or self.branch or ""

    @property
    def filename(self) -> str:
        return Path(self.path).name


def _images_in(folder: Path) -> list[Path]:
    """The image files predict takes (imaging.IMAGE_SUFFIXES), so both steps accept the same inputs."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _mask_for(image: Path, mask_dirs: list[Path]) -> str | None:
    for folder in mask_dirs:
        candidate = folder / image.name
        if candidate.is_file():
            return str(candidate)
    return None


def _labels_from_meta(folder: Path) -> dict[str, str]:
    meta = folder / "meta.csv"
    if not meta.is_file():
        return {}
    from ..meta import read_meta_csv

    return {row.filename: row.particle_type for row in read_meta_csv(meta).rows}


def items_from_split(data_dir: Path, split: str, labels: list[str]) -> list[ImageItem]:
    """Every image of `data_dir/split/<label>/`, with its mask from `data_dir/masks/` when present.

    On the sham split the class folder is the experimental branch of an unirradiated (0 Gy) nucleus,
    so it is kept as `branch` and the image has no label: nothing is scored against it."""
    split_dir = data_dir / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"--data_dir {data_dir} has no {split}/ folder. Prepare the data first (scripts/prepare_data.py) "
            "or pass --images with TIFF files or folders."
        )
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
    unknown = [p.name for p in class_dirs if p.name not in labels]
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown} are not labels of the model ({labels}).")
    mask_dirs = [data_dir / "masks"]
    sham = split == SHAM_SPLIT
    items = [
        ImageItem(str(path), None if sham else class_dir.name, _mask_for(path, mask_dirs),
                  class_dir.name if sham else None)
        for class_dir in class_dirs
        for path in _images_in(class_dir)
    ]
    if not items:
        raise FileNotFoundError(f"{split_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders.")
    return items


def items_from_paths(inputs: list[str], labels: list[str]) -> list[ImageItem]:
    """Image files and folders of images (not recursive; the suffixes predict takes), deduplicated and sorted."""
    paths: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = _images_in(path)
            if not found:
                raise FileNotFoundError(f"--images {path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}).")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"--images {path}: no such file or folder.")
    unique: dict[Path, Path] = {}
    for path in paths:  # dedupe by real location, but report paths as the user wrote them
        unique.setdefault(path.resolve(), path)
    items = []
    meta_cache: dict[Path, dict[str, str]] = {}
    for path in sorted(unique.values(), key=lambda p: (str(p.parent), p.name)):
        folder = path.parent
        if folder not in meta_cache:
            meta_cache[folder] = _labels_from_meta(folder)
        label = folder.name if folder.name in labels else meta_cache[folder].get(path.name)
        items.append(ImageItem(str(path), label if label in labels else None, _mask_for(path, [folder / "masks"])))
    return items


def choose_images(items: list[ImageItem], num_images: int, seed: int) -> list[ImageItem]:
    """A seeded, class-balanced choice, interleaved by class (Fe, X-ray, Fe, ...) so every figure set shows both."""
    if num_images <= 0 or num_images >= len(items):
        chosen_groups = {}
        for item in items:
            chosen_groups.setdefault(item.group, []).append(item)
    else:
        groups: dict[str, list[ImageItem]] = {}
        for item in items:
            groups.setdefault(item.group, []).append(item)
        names = sorted(groups)
        quota = {name: 0 for name in names}
        remaining = num_images
        while remaining > 0:  # round robin over classes that still have images
            progressed = False
            for name in names:
                if remaining and quota[name] < len(groups[name]):
                    quota[name] += 1
                    remaining -= 1
                    progressed = True
            if not progressed:
                break
        rng = np.random.default_rng(seed)
        chosen_groups = {}
        for name in names:
            picks = rng.choice(len(groups[name]), size=quota[name], replace=False) if quota[name] else []
            chosen_groups[name] = [groups[name][i] for i in sorted(picks)]
    ordered: list[ImageItem] = []
    lists = [chosen_groups[name] for name in sorted(chosen_groups)]
    for position in range(max((len(group) for group in lists), default=0)):
        ordered += [group[position] for group in lists if position < len(group)]
    return ordered


# --------------------------------------------------------------------------- the work on one batch


def build_explainers(
    args: ExplainArguments, model, preprocessor: Preprocessor, labels: list[str]
) -> dict[str, Explainer]:
    explainers: dict[str, Explainer] = {}
    for method in args.method_list():
        if method == "rollout":
            explainers[method] = AttentionRollout(model, args.head_fusion, args.discard_ratio)
        elif method == "grad_rollout":
            explainers[method] = GradientRollout(model)
        else:
            mean, std = (
                (preprocessor.image_mean, preprocessor.image_std)
                if preprocessor.do_normalize
                else ((0.0,) * 3, (1.0,) * 3)
            )
            explainers[method] = ShapExplainer(
                model, mean, std, masker=args.shap_masker, max_evals=args.shap_max_evals,
                batch_size=args.shap_batch_size, seed=args.seed, class_names=labels, output=args.shap_output,
            )
    return explainers


def _randomized_models(args: ExplainArguments, model) -> list[tuple[str, torch.nn.Module]]:
    """(name, model) pairs for the sanity check; seeded, so identical on every process."""
    if args.randomization == "none":
        return []
    if args.randomization == "all":
        return [("all", faith.randomized_copy(model, seed=args.seed))]
    if args.randomization == "classifier":
        return [("classifier", faith.randomized_copy(model, seed=args.seed, num_stages=1))]
    stages = faith.num_cascade_stages(model)
    return [(f"top{k}", faith.randomized_copy(model, seed=args.seed, num_stages=k)) for k in range(1, stages + 1)]


def _read_batch(batch, preprocessor):
    """Decode a batch: (raws, greys, kept (index, item), skipped, warnings aligned with kept).

    A usable image that is not BPS-like (colour, 8-bit, odd shape) is explained with the warning predict
    gives (`upload.bps_shape_warnings`), logged once here (each file is read once) and kept per image."""
    from ..upload import bps_shape_warnings

    raws, grays, kept, skipped, warnings = [], [], [], [], []
    for index, item in batch:
        try:
            raw = read_image(item.path, name=item.path)
            grays.append(preprocessor.gray(raw))
            raws.append(raw)
            kept.append((index, item))
        except ImageReadError as err:
            skipped.append({"path": item.path, "reason": str(err)})
            continue
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        warning = "; ".join(bps_shape_warnings(raw.shape[0], raw.shape[1], channels, str(raw.dtype)))
        if warning:
            logger.warning("%s: %s", item.path, warning)
        warnings.append(warning)
    return raws, grays, kept, skipped, warnings


def _explain_all(explainers, model_or_none, pixel_values, raw_images, targets, space):
    """method -> Explanation (on `model_or_none` instead of each explainer's own model when given)."""
    out = {}
    for name, explainer in explainers.items():
        explainer = explainer if model_or_none is None else explainer.with_model(model_or_none)
        if name == "shap" and space == "raw":
            out[name] = explainer.explain_raw(raw_images, pixel_values, targets=targets)
        else:
            out[name] = explainer.explain(pixel_values, targets=targets)
    return out


def whole_image_perturbations(args, explainers, pixel_values, fill_pixels) -> dict[str, torch.Tensor]:
    """Every perturbation a number may rest on, applied to the whole image (item: the perturbation check)."""
    perturbed = {
        "raw:opening": fill_pixels,
        "model:blur": faith.baseline_images(pixel_values, "blur"),
        "model:mean": faith.baseline_images(pixel_values, "mean"),
    }
    shap = explainers.get("shap")
    if shap is not None and args.perturbation_space == "model":
        from .shap_explainer import make_masker

        hwc = shap.to_hwc(pixel_values)
        masker = make_masker(args.shap_masker, hwc.shape[1:])
        hidden = np.zeros(int(np.prod(hwc.shape[1:])), dtype=bool)  # shap maskers take a flat mask, True = kept
        masked = np.stack([np.asarray(masker(hidden, image)[0]).reshape(hwc.shape[1:]) for image in hwc])
        perturbed[f"model:shap_masker:{args.shap_masker}"] = shap.to_pixel_values(masked)
    return perturbed


def _curves(model, args, pixel_values, baselines, raw_image, heatmap, order_seed_index, target):
    """(deletion, insertion) target log-odds for a heatmap (None: the random order) in the chosen space."""
    steps, batch_size = args.faithfulness_steps, args.faithfulness_batch_size
    if args.perturbation_space == "raw":
        height, width = raw_image.shape
        if heatmap is None:
            order = faith.random_order(height * width, args.seed, order_seed_index)
        else:
            order = faith.saliency_order(pert.resample_map(heatmap, (height, width)))
        return pert.raw_deletion_insertion(model, raw_image, order, target, steps, batch_size)
    height, width = pixel_values.shape[-2:]
    if heatmap is None:
        order = faith.random_order(height * width, args.seed, order_seed_index)
    else:
        order = faith.saliency_order(heatmap)
    masks = torch.from_numpy(pert.step_masks(order, (height, width), steps))[:, None]
    image, base = pixel_values.float()[None], baselines.float()[None]
    stack = torch.cat([torch.where(masks, base, image), torch.where(masks, image, base)])
    curve = pert.target_log_odds(model, stack, target, batch_size)
    return curve[: steps + 1], curve[steps + 1:]


def _label_mask(item, skipped):
    if not item.mask_path:
        return None
    try:
        return read_image(item.mask_path)
    except ImageReadError as err:
        skipped.append({"path": item.mask_path, "reason": f"mask unreadable, ground-truth scores skipped: {err}"})
        return None


def explain_batch(
    batch: list[tuple[int, ImageItem]],
    args: ExplainArguments,
    model,
    preprocessor: Preprocessor,
    explainers: dict[str, Explainer],
    randomized: list[tuple[str, torch.nn.Module]],
    label2id: dict[str, int],
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, float]]:
    """Explain and score one batch: (per-image records, skipped images, seconds per method)."""
    seconds: dict[str, float] = {name: 0.0 for name in explainers}
    seconds["faithfulness"] = 0.0
    raws, grays, kept, skipped, warnings = _read_batch(batch, preprocessor)
    if not kept:
        return [], skipped, seconds
    device = next(model.parameters()).device
    pixel_values = preprocessor.normalize(np.stack(grays)).to(device)
    probabilities = pert.probabilities_of(model, pixel_values)
    targets = probabilities.argmax(axis=1)
    raw_images = [pert.RawImage(raw, preprocessor) for raw in raws]
    fill_pixels = preprocessor.normalize(np.stack([preprocessor.gray(image.fill) for image in raw_images])).to(device)
    space = args.perturbation_space

    explanations = {}
    for name in explainers:
        start = time.perf_counter()
        explanations.update(_explain_all({name: explainers[name]}, None, pixel_values, raw_images, targets, space))
        seconds[name] += time.perf_counter() - start

    start = time.perf_counter()
    randomized_maps = {name: [] for name in explainers}
    for stage, rmodel in randomized:
        for name, explanation in _explain_all(explainers, rmodel, pixel_values, raw_images, targets, space).items():
            randomized_maps[name].append((stage, explanation.heatmaps))
    baselines = None
    if space == "model":
        baselines = faith.baseline_images(pixel_values, args.faithfulness_baseline, fill=fill_pixels)
    whole = {key: pert.probabilities_of(model, value) for key, value in
             whole_image_perturbations(args, explainers, pixel_values, fill_pixels).items()}
    height, width = pixel_values.shape[-2:]
    records = []
    for row, (index, item) in enumerate(kept):
        target = int(targets[row])
        args_row = (model, args, pixel_values[row], None if baselines is None else baselines[row], raw_images[row])
        random_del, random_ins = _curves(*args_row, None, index, target)
        raw_mask = _label_mask(item, skipped)
        label_mask = faith.resize_mask(raw_mask, height, width) if raw_mask is not None else None
        true_id = label2id.get(item.label) if item.label is not None else None
        # foci scores ask "does the map find the damage?"; a sham (0 Gy) nucleus has none (its mask's foci are
        # endogenous, the same in both branches), and a mask without foci has nothing to hit: both are skipped
        truth_mask = label_mask if item.branch is None else None
        record: dict[str, Any] = {
            "index": index,
            "path": item.path,
            "filename": item.filename,
            "label": item.label,
            "branch": item.branch,
            "warning": warnings[row],
            "true_id": true_id,
            "target": target,
            "probabilities": probabilities[row].astype(np.float64).tolist(),
            "random_deletion": random_del,
            "random_insertion": random_ins,
            "whole_image": {key: value[row].astype(np.float64).tolist() for key, value in whole.items()},
            "causal": None,
            "has_mask": label_mask is not None,
            "has_foci": label_mask is not None and bool((label_mask == faith.FOCI_LABEL).any()),
            "mask_path": item.mask_path,
            "methods": {},
        }
        if raw_mask is not None and true_id is not None and raw_mask.shape[:2] == raw_images[row].shape:
            causal_grays, _ = causal.causal_inputs(raw_images[row], raw_mask, args.causal_dilation, args.seed, index)
            causal_probabilities = pert.probabilities_of(model, preprocessor.normalize(causal_grays))
            record["causal"] = causal_probabilities.astype(np.float64).tolist()
        for name, explanation in explanations.items():
            heatmap = explanation.heatmaps[row]
            deletion, insertion = _curves(*args_row, heatmap, index, target)
            method_record = {
                "heatmap": heatmap.astype(np.float32),
                "deletion": deletion,
                "insertion": insertion,
                "randomization": {stage: faith.spearman(heatmap, maps[row]) for stage, maps in randomized_maps[name]},
                "ground_truth": faith.ground_truth_scores(heatmap, truth_mask) if truth_mask is not None else None,
            }
            if name == "shap":
                method_record["shap_values"] = explanation.raw[row].astype(np.float32)  # [classes,H,W], signed
            elif np.shape(explanation.raw[row]) == np.shape(heatmap):
                # the unnormalised map, so the figure can flag a near-flat one instead of stretching it
                method_record["display"] = np.asarray(explanation.raw[row], dtype=np.float32)
            record["methods"][name] = method_record
        records.append(record)
    seconds["faithfulness"] += time.perf_counter() - start
    return records, skipped, seconds


# --------------------------------------------------------------------------- summary


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, DECIMALS) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def _prob_auc(log_odds_curve) -> float:
    return stats.curve_auc(pert.probability_from_log_odds(log_odds_curve))


def summarize(records: list[dict[str, Any]], methods: list[str], randomization: str,
              checks: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Per method: each score next to its baseline, paired per-image gains with bootstrap 95% intervals,
    and a verdict that reads "better" only when the interval lies above 0 and the perturbation it
    rests on removes the signal (`checks`, from `perturbation_check`)."""
    summary: dict[str, Any] = {}
    random_del = [stats.curve_auc(r["random_deletion"]) for r in records]
    random_ins = [stats.curve_auc(r["random_insertion"]) for r in records]
    for name in methods:
        per = [r["methods"][name] for r in records]
        truths = [m["ground_truth"] for m in per if m["ground_truth"] is not None]
        stages = list(per[0]["randomization"]) if per else []
        spearman_by_stage = {s: faith.mean_or_none([m["randomization"][s] for m in per]) for s in stages}
        final_stage = stages[-1] if stages else None
        deletion = [stats.curve_auc(m["deletion"]) for m in per]
        insertion = [stats.curve_auc(m["insertion"]) for m in per]
        result = {
            "deletion_auc": faith.mean_or_none([_prob_auc(m["deletion"]) for m in per]),
            "insertion_auc": faith.mean_or_none([_prob_auc(m["insertion"]) for m in per]),
            "random_deletion_auc": faith.mean_or_none([_prob_auc(r["random_deletion"]) for r in records]),
            "random_insertion_auc": faith.mean_or_none([_prob_auc(r["random_insertion"]) for r in records]),
            # paired per image, in log-odds (a saturated probability does not move): > 0 means better than random
            "deletion_log_odds_gain": stats.bootstrap_mean_ci(np.subtract(random_del, deletion), seed),
            "insertion_log_odds_gain": stats.bootstrap_mean_ci(np.subtract(insertion, random_ins), seed),
            "randomization_spearman": spearman_by_stage.get(final_stage) if final_stage else None,
            "foci_mass": faith.mean_or_none([t["foci_mass"] for t in truths]),
            "foci_mass_baseline": faith.mean_or_none([t["foci_mass_baseline"] for t in truths]),
            "foci_mass_uniform": faith.mean_or_none([t["foci_mass_uniform"] for t in truths]),
            "foci_mass_gain": stats.bootstrap_mean_ci([t["foci_mass"] - t["foci_mass_baseline"] for t in truths], seed),
            "pointing_game": faith.mean_or_none([t["pointing_game"] for t in truths]),
            "pointing_game_baseline": faith.mean_or_none([t["pointing_game_baseline"] for t in truths]),
            "pointing_game_uniform": faith.mean_or_none([t["pointing_game_uniform"] for t in truths]),
            "pointing_game_gain": stats.bootstrap_mean_ci(
                [t["pointing_game"] - t["pointing_game_baseline"] for t in truths], seed),
            "num_images_with_foci": len(truths),
        }
        result["foci_mass_ratio_to_centre"] = (
            result["foci_mass"] / result["foci_mass_baseline"] if result["foci_mass"] is not None
            and result["foci_mass_baseline"] else None
        )
        if randomization in ("classifier", "cascade"):
            result["randomization_spearman_by_stage"] = spearman_by_stage
        result["beats_baseline"], result["verdict_notes"] = _verdicts(name, result, checks or {})
        summary[name] = result
    return summary


def _verdicts(name: str, result: dict[str, Any], checks: dict[str, Any]) -> tuple[dict[str, bool | None], list[str]]:
    """Plain yes/no per check: yes only when the paired interval is above 0 and the perturbation the
    number rests on removes the signal; None (with a note) when it cannot be decided."""
    notes = []
    deletion_ok = checks.get("deletion_insertion_removes_signal", True)
    if not deletion_ok:
        notes.append(f"deletion/insertion baseline {checks.get('deletion_insertion')} does not remove the signal")
    map_ok = True
    if name == "shap" and not checks.get("shap_masker_removes_signal", True):
        map_ok = False
        notes.append(f"SHAP masker {checks.get('shap_masker')} does not remove the signal")
    spearman = result["randomization_spearman"]

    def verdict(gain_key, ok):
        return stats.excludes_zero_above(result[gain_key]) if ok else None

    return {
        "deletion": verdict("deletion_log_odds_gain", deletion_ok and map_ok),
        "insertion": verdict("insertion_log_odds_gain", deletion_ok and map_ok),
        "randomization": None if spearman is None else bool(spearman < 0.5),
        "foci_mass": verdict("foci_mass_gain", map_ok),
        "pointing_game": verdict("pointing_game_gain", map_ok),
    }, notes


def perturbation_check(records: list[dict[str, Any]], args: ExplainArguments, num_classes: int) -> dict[str, Any]:
    """What the model says when the whole image is perturbed, per perturbation, and which ones the numbers use."""
    labelled = all(r["true_id"] is not None for r in records)
    labels = np.array([r["true_id"] if labelled else r["target"] for r in records])
    targets = np.array([r["target"] for r in records])
    keys = list(records[0]["whole_image"]) if records else []
    perturbations = {key: pert.whole_image_check(np.array([r["whole_image"][key] for r in records]), labels, targets)
                     for key in keys}
    untouched = pert.whole_image_check(np.array([r["probabilities"] for r in records]), labels, targets)
    untouched.pop("removes_signal")
    deletion_key = f"{args.perturbation_space}:{args.faithfulness_baseline}"
    shap_key = "raw:opening" if args.perturbation_space == "raw" else f"model:shap_masker:{args.shap_masker}"
    # sham images have no truth (their folder is a branch): the check asks whether the perturbation moves the
    # model off its own prediction, which is what "removes the signal" means for the maps' numbers anyway
    sham = any(r.get("branch") is not None for r in records)
    return {
        "labels": "true" if labelled else ("predicted (sham: the branch is not a truth)" if sham
                                           else "predicted (no labels)"),
        "tolerance": pert.CHANCE_TOLERANCE,
        "untouched": untouched,
        "perturbations": perturbations,
        "deletion_insertion": deletion_key,
        "deletion_insertion_removes_signal": perturbations.get(deletion_key, {}).get("removes_signal"),
        "shap_masker": shap_key,
        "shap_masker_removes_signal": perturbations.get(shap_key, {}).get("removes_signal"),
    }


def causal_test(records: list[dict[str, Any]], num_classes: int, dilation: int) -> dict[str, Any] | None:
    rows = [r for r in records if r["causal"] is not None]
    if not rows:
        return None
    return causal.summarize_causal(np.array([r["causal"] for r in rows]), np.array([r["true_id"] for r in rows]),
                                   num_classes, dilation)


def _one_line(name: str, result: dict[str, Any]) -> str:
    """A log line a user can read without opening the JSON: each score next to its baseline and interval."""

    def mark(verdict):
        ok = result["beats_baseline"].get(verdict)
        return "" if ok is None else (" better" if ok else " NOT better")

    def gain(key, verdict, label):
        interval = result.get(key)
        if interval is None:
            return None
        low, high = interval["ci95"]
        return f"{label} {interval['mean']:+.3f} [{low:+.3f}, {high:+.3f}]{mark(verdict)}"

    parts = [
        gain("deletion_log_odds_gain", "deletion", "deletion gain vs random (log-odds AUC)"),
        gain("insertion_log_odds_gain", "insertion", "insertion gain"),
        None if result.get("foci_mass") is None else
        f"foci mass {result['foci_mass']:.3f} vs centre {result['foci_mass_baseline']:.3f}{mark('foci_mass')}",
        None if result.get("pointing_game") is None else
        f"pointing {result['pointing_game']:.3f} vs centre {result['pointing_game_baseline']:.3f}"
        f"{mark('pointing_game')}",
    ]
    if result.get("randomization_spearman") is not None:
        parts.append(f"randomisation Spearman {result['randomization_spearman']:.3f}")
    parts += [f"({note})" for note in result.get("verdict_notes", [])]
    return f"{name}: " + "; ".join(p for p in parts if p)


# --------------------------------------------------------------------------- figures


def _per_image(record: dict[str, Any], methods: list[str], labels: list[str]) -> dict[str, Any]:
    """One image's line in explain_metrics.json: prediction, warning, and foci scores only where foci exist."""
    line = {
        "filename": record["filename"],
        "label": record["label"],
        **({"branch": record["branch"]} if record.get("branch") is not None else {}),
        "predicted": labels[record["target"]],
        "probability": record["probabilities"][record["target"]],
        "has_mask": record["has_mask"],
        "has_foci": record["has_foci"],
        "warning": record["warning"],
        **{f"{name}_deletion_auc": _prob_auc(record["methods"][name]["deletion"]) for name in methods},
        **{f"{name}_insertion_auc": _prob_auc(record["methods"][name]["insertion"]) for name in methods},
    }
    for name in methods:
        truth = record["methods"][name]["ground_truth"] or {}
        line[f"{name}_foci_mass"] = truth.get("foci_mass")
        line[f"{name}_pointing_game"] = truth.get("pointing_game")
    if record.get("branch") is not None:
        line["foci_note"] = "foci metrics skipped: a sham (0 Gy) nucleus has no radiation damage to find"
    elif not record["has_foci"]:
        line["foci_note"] = ("foci metrics skipped: the mask has no foci (label 2)" if record["has_mask"]
                             else "foci metrics skipped: no mask")
    return line


def _figure_title(record: dict[str, Any]) -> tuple[str, str | None]:
    """(name, true label) for a figure row; a sham image shows its branch in the name and no truth (no ✓/✗).

    The branch goes on a second line after the file name, so `Path(name).stem` stays the file's stem."""
    if record.get("branch") is None:
        return record["filename"], record["label"]
    return f"{record['filename']}\nbranch: {record['branch']} (0 Gy sham, not a truth)", None


def _figure_rows(records, methods, labels, stretch, args):
    from ..figures import ExplanationRow

    rows = []
    for record in records[: (len(records) if args.max_figures < 0 else args.max_figures)]:
        raw = read_image(record["path"])
        image = display_image(raw, stretch)
        mask = read_image(record["mask_path"]) == faith.FOCI_LABEL if record["has_mask"] else None
        probs = record["probabilities"]
        name, true_label = _figure_title(record)
        rows.append(
            ExplanationRow(
                name=name,
                image=image,
                intensity_range=stretch.bounds(raw),
                intensity_mid=stretch.raw_level(0.5, stretch.bounds(raw)),
                true_label=true_label,
                predicted_label=labels[record["target"]],
                probability=float(probs[record["target"]]),
                heatmaps={m: record["methods"][m].get("display", record["methods"][m]["heatmap"])
                          for m in methods if m != "shap"},
                shap_values=record["methods"]["shap"]["shap_values"] if "shap" in methods else None,
                class_names=list(labels),
                shap_units="log-odds" if args.shap_output == "log_odds" else "probability",
                foci_mask=mask,
            )
        )
    return rows


def _mean_probability_curves(records, methods):
    """method -> mean (deletion, insertion) probability curves over images, with a "random" entry (figures)."""
    prob = pert.probability_from_log_odds
    curves = {}
    for name in methods:
        curves[name] = (
            np.mean([prob(r["methods"][name]["deletion"]) for r in records], axis=0),
            np.mean([prob(r["methods"][name]["insertion"]) for r in records], axis=0),
        )
    curves["random"] = (
        np.mean([prob(r["random_deletion"]) for r in records], axis=0),
        np.mean([prob(r["random_insertion"]) for r in records], axis=0),
    )
    return curves


# --------------------------------------------------------------------------- the pipeline


def _model_fingerprint(model: str) -> str | None:
    """The weights' sha256 (results.weights_fingerprint) for a folder or a Hub id in the local cache."""
    if Path(model).is_dir():
        return weights_fingerprint(model)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "model.safetensors")
    return weights_fingerprint(Path(cached).parent) if isinstance(cached, str) else None


def explain(args: ExplainArguments) -> dict[str, Any]:
    """Run the explain step; returns the metrics (on the main process; {} on the others)."""
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from .. import figures
    from ..model import load_for_inference

    args.validate()
    methods = args.method_list()
    state = distributed_state()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    model, processor, stretch = load_for_inference(args.model)
    model.to(state.device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    label2id = {name: i for i, name in enumerate(labels)}
    preprocessor = Preprocessor.from_processor(processor, stretch)

    if args.images:
        candidates, source = items_from_paths(args.images, labels), "images"
    else:
        candidates, source = items_from_split(Path(args.data_dir), args.split, labels), args.split
    items = choose_images(candidates, args.num_images, args.seed)
    indexed = list(enumerate(items))
    batches = [indexed[i : i + args.batch_size] for i in range(0, len(indexed), args.batch_size)]

    explainers = build_explainers(args, model, preprocessor, labels)
    randomized = _randomized_models(args, model)
    local_records, local_skipped = [], []
    local_seconds = {name: 0.0 for name in [*explainers, "faithfulness"]}
    with state.split_between_processes(batches) as my_batches:
        bar = tqdm(total=sum(len(b) for b in my_batches), unit="image", desc="explain",
                   disable=not (args.show_progress and state.is_main_process))
        for batch in my_batches:
            records, skipped, seconds = explain_batch(
                batch, args, model, preprocessor, explainers, randomized, label2id
            )
            local_records += records
            local_skipped += skipped
            for key, value in seconds.items():
                local_seconds[key] += value
            bar.update(len(batch))
        bar.close()

    records = sorted(gather_object(local_records), key=lambda r: r["index"])
    skipped = sorted(gather_object(local_skipped), key=lambda s: (s["path"], s["reason"]))
    all_seconds = gather_object([local_seconds])
    if not state.is_main_process:
        return {}
    if not records:
        raise RuntimeError(f"No image could be explained; {len(skipped)} skipped: {skipped[:5]}")

    output_dir = args.resolved_output_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    checks = perturbation_check(records, args, len(labels))
    sham = source == SHAM_SPLIT
    settings = {
        k: v for k, v in asdict(args).items()
        if k not in ("model", "output_dir", "progress", "disable_tqdm", "images", "data_dir")
    }
    metrics = {
        "model": args.model,
        "split": source,
        "num_images": len(records),
        "labels": SHAM_LABELS_NOTE if sham else labels,
        **({"classes": labels} if sham else {}),
        "settings": settings,
        "perturbation_space": args.perturbation_space,
        "perturbation_check": checks,
        "causal_foci_test": causal_test(records, len(labels), args.causal_dilation),
        **({"causal_foci_test_note": "skipped on sham: no truth to score accuracy against, and 0 Gy nuclei "
            "have no foci to ablate"} if sham else {}),
        "methods": summarize(records, methods, args.randomization, checks, args.seed),
        "skipped": {"count": len(skipped), "items": skipped},
        "per_image": [_per_image(r, methods, labels) for r in records],
    }
    metrics = _round(metrics)
    metrics["model_fingerprint"] = _model_fingerprint(args.model)
    ExplanationResults.from_dict(metrics).to_json(output_dir / METRICS_FILE)

    total_images = len(records)
    timings = {
        "methods": {
            name: {"seconds_per_image": sum(s[name] for s in all_seconds) / total_images} for name in explainers
        },
        "faithfulness_seconds_per_image": sum(s["faithfulness"] for s in all_seconds) / total_images,
        "num_processes": state.num_processes,
        "device": str(state.device),
        "torch_threads": torch.get_num_threads(),
        "note": "Process time summed over processes, per image; varies between runs, "
                "so kept out of explain_metrics.json.",
    }
    (output_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n")

    figure_dir = output_dir / "figures"
    rows = _figure_rows(records, methods, labels, stretch, args)
    for row in rows:
        figures.plot_explanations([row], figure_dir / f"{Path(row.name).stem}.png")
    if rows:
        figures.plot_explanations(rows[:6], figure_dir / "explanations.png", total=len(records))
    figures.plot_faithfulness(
        _mean_probability_curves(records, methods), metrics["methods"], figure_dir / "faithfulness.png", len(records)
    )
    for name, result in metrics["methods"].items():
        logger.info("%s", _one_line(name, result))
    for key, check in checks["perturbations"].items():
        logger.info("whole image perturbed %s: balanced accuracy %.3f, mean p(target) %.3f -> %s", key,
                    check["balanced_accuracy"], check["mean_p_target"],
                    "removes the signal" if check["removes_signal"] else "does NOT remove the signal")
    if metrics["causal_foci_test"]:
        test = metrics["causal_foci_test"]
        logger.info("causal foci test (n=%d): accuracy untouched %.3f, foci ablated %.3f, random nucleus pixels %.3f",
                    test["n"], *(test[c]["accuracy"] for c in causal.CONDITIONS))
    if skipped:
        logger.warning(
            "Skipped %d file(s): %s", len(skipped), "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:10])
        )
    written = len(list(figure_dir.glob("*.png")))
    logger.info("Wrote %s, %s and %d figures to %s", METRICS_FILE, TIMINGS_FILE, written, output_dir)
    return metrics
