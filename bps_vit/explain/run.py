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

from ..distributed import distributed_state
from ..imaging import TIFF_SUFFIXES, ImageReadError, Preprocessor, display_image, read_image
from . import faithfulness as faith
from .base import Explainer
from .grad_rollout import GradientRollout
from .rollout import HEAD_FUSIONS, AttentionRollout
from .shap_explainer import ShapExplainer

logger = logging.getLogger(__name__)

METHODS = ("rollout", "grad_rollout", "shap")
METRICS_FILE = "explain_metrics.json"
TIMINGS_FILE = "explain_timings.json"
DECIMALS = 4  # metrics are rounded so that float noise (thread count, process split) cannot change the file


@dataclass
class ExplainArguments:
    """Arguments of `scripts/explain.py` (also accepted from a single .yaml/.json file)."""

    model: str = field(metadata={"help": "Saved model folder (outputs/<run>) or Hub id of a fine-tuned BPS model."})
    data_dir: str = field(default="data/bps", metadata={"help": "Prepared data folder (train|validation|test/{Fe,X-ray}/*.tif, masks/)."})
    split: str = field(default="test", metadata={"help": "Split folder of --data_dir to take images from."})
    images: list[str] | None = field(
        default=None,
        metadata={"help": "Explain these TIFF files or folders of raw TIFFs instead of a split (labels from a "
                  "class-named parent folder or a meta.csv beside them; masks from a masks/ folder beside them)."},
    )
    num_images: int = field(default=8, metadata={"help": "How many images (balanced over classes, seeded); <= 0 = all."})
    methods: str = field(default="rollout,grad_rollout,shap", metadata={"help": f"Comma-separated, from {', '.join(METHODS)}."})
    output_dir: str | None = field(default=None, metadata={"help": "Where figures/ and the JSON files go (default <model>/explain)."})
    batch_size: int = field(default=8, metadata={"help": "Images per explanation batch."})
    head_fusion: str = field(default="mean", metadata={"help": f"Attention rollout head fusion: {', '.join(HEAD_FUSIONS)}."})
    discard_ratio: float = field(default=0.0, metadata={"help": "Attention rollout: share of lowest attentions dropped per layer, in [0, 1)."})
    shap_masker: str = field(default="blur", metadata={"help": 'SHAP masker: "blur", "blur(h,w)", "inpaint_telea", "inpaint_ns", "constant(v)".'})
    shap_output: str = field(default="log_odds", metadata={"help": "What SHAP explains: log_odds (default; stays informative for confident models) or probability."})
    shap_max_evals: int = field(default=500, metadata={"help": "SHAP model evaluations per image."})
    shap_batch_size: int = field(default=64, metadata={"help": "Masked images per SHAP forward batch."})
    faithfulness_steps: int = field(default=32, metadata={"help": "Deletion/insertion steps per curve."})
    faithfulness_batch_size: int = field(default=64, metadata={"help": "Images per forward batch for the deletion/insertion curves."})
    faithfulness_baseline: str = field(default="blur", metadata={"help": "What removed pixels become: blur or mean."})
    randomization: str = field(default="all", metadata={"help": "Model-randomisation check: all, classifier, cascade or none."})
    max_figures: int = field(default=16, metadata={"help": "Per-image figures to draw (the metrics use every image); <0 = all."})
    seed: int = field(default=0, metadata={"help": "Seed for image choice, random baselines and SHAP."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def method_list(self) -> list[str]:
        methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown or not methods:
            raise ValueError(f"--methods {self.methods!r}: unknown {unknown or 'empty list'}; choose from {', '.join(METHODS)}")
        return list(dict.fromkeys(methods))

    def validate(self) -> None:
        self.method_list()
        if self.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"--head_fusion must be one of {HEAD_FUSIONS}; got {self.head_fusion!r}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError(f"--discard_ratio must be in [0, 1); got {self.discard_ratio}")
        if self.faithfulness_baseline not in faith.BASELINES:
            raise ValueError(f"--faithfulness_baseline must be one of {faith.BASELINES}; got {self.faithfulness_baseline!r}")
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

    @property
    def filename(self) -> str:
        return Path(self.path).name


def _tiffs_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)


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
    """Every TIFF of `data_dir/split/<label>/`, with its mask from `data_dir/masks/` when present."""
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
    items = [
        ImageItem(str(path), class_dir.name, _mask_for(path, mask_dirs))
        for class_dir in class_dirs
        for path in _tiffs_in(class_dir)
    ]
    if not items:
        raise FileNotFoundError(f"{split_dir}: no TIFF images in its class folders.")
    return items


def items_from_paths(inputs: list[str], labels: list[str]) -> list[ImageItem]:
    """TIFF files and folders of TIFFs (not recursive), deduplicated and sorted."""
    paths: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = _tiffs_in(path)
            if not found:
                raise FileNotFoundError(f"--images {path}: the folder holds no .tif/.tiff files.")
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
            chosen_groups.setdefault(item.label or "", []).append(item)
    else:
        groups: dict[str, list[ImageItem]] = {}
        for item in items:
            groups.setdefault(item.label or "", []).append(item)
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


def build_explainers(args: ExplainArguments, model, preprocessor: Preprocessor, labels: list[str]) -> dict[str, Explainer]:
    explainers: dict[str, Explainer] = {}
    for method in args.method_list():
        if method == "rollout":
            explainers[method] = AttentionRollout(model, args.head_fusion, args.discard_ratio)
        elif method == "grad_rollout":
            explainers[method] = GradientRollout(model)
        else:
            mean, std = (preprocessor.image_mean, preprocessor.image_std) if preprocessor.do_normalize else ((0.0,) * 3, (1.0,) * 3)
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
    grays, kept, skipped = [], [], []
    for index, item in batch:
        try:
            grays.append(preprocessor.gray(item.path))
            kept.append((index, item))
        except ImageReadError as err:
            skipped.append({"path": item.path, "reason": str(err)})
    if not kept:
        return [], skipped, seconds
    device = next(model.parameters()).device
    pixel_values = preprocessor.normalize(np.stack(grays)).to(device)
    with torch.no_grad():
        probabilities = model(pixel_values=pixel_values).logits.float().softmax(-1).cpu().numpy()
    targets = probabilities.argmax(axis=1)

    explanations = {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        explanations[name] = explainer.explain(pixel_values, targets=targets)
        seconds[name] += time.perf_counter() - start

    start = time.perf_counter()
    randomized_maps = {
        name: [(stage, explainer.with_model(rmodel)(pixel_values, targets=targets)) for stage, rmodel in randomized]
        for name, explainer in explainers.items()
    }
    baselines = faith.baseline_images(pixel_values, args.faithfulness_baseline)
    height, width = pixel_values.shape[-2:]
    records = []
    for row, (index, item) in enumerate(kept):
        target = int(targets[row])
        curve_kw = dict(target=target, steps=args.faithfulness_steps, batch_size=args.faithfulness_batch_size)
        random_del, random_ins = faith.deletion_insertion_curves(
            model, pixel_values[row], baselines[row], faith.random_order(height * width, args.seed, index), **curve_kw
        )
        label_mask = None
        if item.mask_path:
            try:
                label_mask = faith.resize_mask(read_image(item.mask_path), height, width)
            except ImageReadError as err:
                skipped.append({"path": item.mask_path, "reason": f"mask unreadable, ground-truth scores skipped: {err}"})
        record: dict[str, Any] = {
            "index": index,
            "path": item.path,
            "filename": item.filename,
            "label": item.label,
            "true_id": label2id.get(item.label) if item.label is not None else None,
            "target": target,
            "probabilities": probabilities[row].astype(np.float64).tolist(),
            "random_deletion": random_del,
            "random_insertion": random_ins,
            "has_mask": label_mask is not None,
            "mask_path": item.mask_path,
            "methods": {},
        }
        for name, explanation in explanations.items():
            heatmap = explanation.heatmaps[row]
            deletion, insertion = faith.deletion_insertion_curves(
                model, pixel_values[row], baselines[row], faith.saliency_order(heatmap), **curve_kw
            )
            method_record = {
                "heatmap": heatmap.astype(np.float32),
                "deletion": deletion,
                "insertion": insertion,
                "randomization": {stage: faith.spearman(heatmap, maps[row]) for stage, maps in randomized_maps[name]},
                "ground_truth": faith.ground_truth_scores(heatmap, label_mask) if label_mask is not None else None,
            }
            if name == "shap":
                method_record["shap_values"] = explanation.raw[row].astype(np.float32)  # [classes,H,W], signed
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


def summarize(records: list[dict[str, Any]], methods: list[str], randomization: str) -> dict[str, Any]:
    """Mean metrics per method, each next to its baseline, and whether the method beats it."""
    summary: dict[str, Any] = {}
    random_del = faith.mean_or_none([faith.curve_auc(r["random_deletion"]) for r in records])
    random_ins = faith.mean_or_none([faith.curve_auc(r["random_insertion"]) for r in records])
    for name in methods:
        per = [r["methods"][name] for r in records]
        truths = [m["ground_truth"] for m in per if m["ground_truth"] is not None]
        stages = list(per[0]["randomization"]) if per else []
        spearman_by_stage = {s: faith.mean_or_none([m["randomization"][s] for m in per]) for s in stages}
        final_stage = stages[-1] if stages else None
        result = {
            "deletion_auc": faith.mean_or_none([faith.curve_auc(m["deletion"]) for m in per]),
            "insertion_auc": faith.mean_or_none([faith.curve_auc(m["insertion"]) for m in per]),
            "random_deletion_auc": random_del,
            "random_insertion_auc": random_ins,
            "randomization_spearman": spearman_by_stage.get(final_stage) if final_stage else None,
            "foci_mass": faith.mean_or_none([t["foci_mass"] for t in truths]),
            "foci_mass_baseline": faith.mean_or_none([t["foci_mass_baseline"] for t in truths]),
            "foci_mass_uniform": faith.mean_or_none([t["foci_mass_uniform"] for t in truths]),
            "pointing_game": faith.mean_or_none([t["pointing_game"] for t in truths]),
            "pointing_game_baseline": faith.mean_or_none([t["pointing_game_baseline"] for t in truths]),
            "pointing_game_uniform": faith.mean_or_none([t["pointing_game_uniform"] for t in truths]),
            "num_images_with_foci": len(truths),
        }
        if randomization in ("classifier", "cascade"):
            result["randomization_spearman_by_stage"] = spearman_by_stage
        result["beats_baseline"] = _verdicts(result)
        summary[name] = result
    return summary


def _verdicts(result: dict[str, Any]) -> dict[str, bool | None]:
    """Plain yes/no per check, so a method that does no better than its baseline says so."""

    def better(value, baseline, lower_is_better=False):
        if value is None or baseline is None:
            return None
        return bool(value < baseline) if lower_is_better else bool(value > baseline)

    strongest_mass = max((b for b in (result["foci_mass_baseline"], result["foci_mass_uniform"]) if b is not None), default=None)
    strongest_point = max(
        (b for b in (result["pointing_game_baseline"], result["pointing_game_uniform"]) if b is not None), default=None
    )
    return {
        "deletion": better(result["deletion_auc"], result["random_deletion_auc"], lower_is_better=True),
        "insertion": better(result["insertion_auc"], result["random_insertion_auc"]),
        "randomization": None if result["randomization_spearman"] is None else bool(result["randomization_spearman"] < 0.5),
        "foci_mass": better(result["foci_mass"], strongest_mass),
        "pointing_game": better(result["pointing_game"], strongest_point),
    }


def _one_line(name: str, result: dict[str, Any]) -> str:
    """A log line a user can read without opening the JSON: each score next to its baseline."""

    def pair(key, baseline_key, verdict):
        value, baseline = result.get(key), result.get(baseline_key)
        if value is None:
            return None
        ok = result["beats_baseline"].get(verdict)
        mark = "" if ok is None else (" better" if ok else " NOT better")
        return f"{key} {value:.3f} vs {baseline if baseline is None else round(baseline, 3)}{mark}"

    parts = [
        pair("deletion_auc", "random_deletion_auc", "deletion"),
        pair("insertion_auc", "random_insertion_auc", "insertion"),
        pair("foci_mass", "foci_mass_baseline", "foci_mass"),
        pair("pointing_game", "pointing_game_baseline", "pointing_game"),
    ]
    if result.get("randomization_spearman") is not None:
        parts.append(f"randomisation Spearman {result['randomization_spearman']:.3f}")
    return f"{name}: " + "; ".join(p for p in parts if p)


# --------------------------------------------------------------------------- figures


def _figure_rows(records, methods, labels, stretch, args):
    from ..figures import ExplanationRow

    rows = []
    for record in records[: (len(records) if args.max_figures < 0 else args.max_figures)]:
        raw = read_image(record["path"])
        image = display_image(raw, stretch)
        mask = read_image(record["mask_path"]) == faith.FOCI_LABEL if record["has_mask"] else None
        probs = record["probabilities"]
        rows.append(
            ExplanationRow(
                name=record["filename"],
                image=image,
                intensity_range=stretch.bounds(raw),
                true_label=record["label"],
                predicted_label=labels[record["target"]],
                probability=float(probs[record["target"]]),
                heatmaps={m: record["methods"][m]["heatmap"] for m in methods if m != "shap"},
                shap_values=record["methods"]["shap"]["shap_values"] if "shap" in methods else None,
                class_names=list(labels),
                shap_units="log-odds" if args.shap_output == "log_odds" else "probability",
                foci_mask=mask,
            )
        )
    return rows


def _curves(records, methods):
    curves = {}
    for name in methods:
        curves[name] = (
            np.mean([r["methods"][name]["deletion"] for r in records], axis=0),
            np.mean([r["methods"][name]["insertion"] for r in records], axis=0),
        )
    curves["random"] = (
        np.mean([r["random_deletion"] for r in records], axis=0),
        np.mean([r["random_insertion"] for r in records], axis=0),
    )
    return curves


# --------------------------------------------------------------------------- the pipeline


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
                   disable=not (args.progress and state.is_main_process))
        for batch in my_batches:
            records, skipped, seconds = explain_batch(batch, args, model, preprocessor, explainers, randomized, label2id)
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
    settings = {k: v for k, v in asdict(args).items() if k not in ("model", "output_dir", "progress", "images", "data_dir")}
    metrics = {
        "model": args.model,
        "split": source,
        "num_images": len(records),
        "labels": labels,
        "settings": settings,
        "methods": summarize(records, methods, args.randomization),
        "skipped": {"count": len(skipped), "items": skipped},
        "per_image": [
            {
                "filename": r["filename"],
                "label": r["label"],
                "predicted": labels[r["target"]],
                "probability": r["probabilities"][r["target"]],
                "has_mask": r["has_mask"],
                **{
                    f"{name}_deletion_auc": faith.curve_auc(r["methods"][name]["deletion"]) for name in methods
                },
                **{
                    f"{name}_insertion_auc": faith.curve_auc(r["methods"][name]["insertion"]) for name in methods
                },
            }
            for r in records
        ],
    }
    metrics = _round(metrics)
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")

    total_images = len(records)
    timings = {
        "methods": {
            name: {"seconds_per_image": sum(s[name] for s in all_seconds) / total_images} for name in explainers
        },
        "faithfulness_seconds_per_image": sum(s["faithfulness"] for s in all_seconds) / total_images,
        "num_processes": state.num_processes,
        "device": str(state.device),
        "torch_threads": torch.get_num_threads(),
        "note": "Process time summed over processes, per image; varies between runs, so kept out of explain_metrics.json.",
    }
    (output_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n")

    figure_dir = output_dir / "figures"
    rows = _figure_rows(records, methods, labels, stretch, args)
    for row in rows:
        figures.plot_explanations([row], figure_dir / f"{Path(row.name).stem}.png")
    if rows:
        figures.plot_explanations(rows[:6], figure_dir / "explanations.png")
    figures.plot_faithfulness(_curves(records, methods), metrics["methods"], figure_dir / "faithfulness.png", len(records))
    for name, result in metrics["methods"].items():
        logger.info("%s", _one_line(name, result))
    if skipped:
        logger.warning("Skipped %d file(s): %s", len(skipped), "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:10]))
    written = len(list(figure_dir.glob("*.png")))
    logger.info("Wrote %s, %s and %d figures to %s", METRICS_FILE, TIMINGS_FILE, written, output_dir)
    return metrics
