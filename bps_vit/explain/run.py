"""The explain step: a saved checkpoint + images -> heatmap figures and `explain_metrics.json`.

Reads only what earlier steps wrote (a model folder or Hub id, a prepared split or raw TIFFs),
so it reruns on any checkpoint. Reproducible by construction: the images are chosen with a
seeded generator from sorted lists (`selection`), every random choice is keyed by the image's
position in that list, not by the process that handles it (`scoring`), the batches are cut before
they are shared out, and timings (which vary) go to `explain_timings.json`, never into the
metrics file.

Under `accelerate launch --num_processes N scripts/explain.py ...` the batches are split across
processes, the per-image results gathered, and the main process writes one metrics file and
the figures, the same as a single-process run.

The parts, in the order they run: `arguments` -> `selection` -> `scoring` (the methods on each
batch) -> `metrics.verdicts` (the numbers and their verdicts) -> `report` (files, figures, log lines).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from ..distributed import distributed_state
from ..manifest import SHAM_SPLIT
from ..model import InferenceModel, load_for_inference
from ..provenance import model_fingerprint
from ..results import ExplanationResults, Skipped, SkippedFile
from . import report
from .arguments import METHODS, ExplainArguments
from .methods.registry import method_spec
from .metrics import causal, verdicts
from .records import ExplainedImage
from .scoring import build_explainers, explain_batch, randomized_models
from .selection import choose_images, items_from_paths, items_from_split

__all__ = ["METHODS", "METRICS_FILE", "TIMINGS_FILE", "ExplainArguments", "explain"]

logger = logging.getLogger(__name__)

METRICS_FILE = "explain_metrics.json"
TIMINGS_FILE = "explain_timings.json"
# sham images (0 Gy) sit in the folder of their experimental branch: a grouping, not a truth about damage
SHAM_LABELS_NOTE = "branch (sham: not a truth)"
# settings that say where things are, not how the explanation was made: left out of the metrics file
NOT_SETTINGS = ("model", "output_dir", "progress", "disable_tqdm", "images", "data_dir")


@dataclass
class Gathered:
    """Every process's explained images, skipped files and timings, on the main process."""

    images: list[ExplainedImage]
    skipped: list[SkippedFile]
    seconds: list[dict[str, float]]  # one dict per process


def _load(args: ExplainArguments, device) -> tuple[ExplainArguments, InferenceModel, dict[str, str]]:
    """(the arguments with only the methods that can explain the model, the model on this process's device, the
    refused methods with their reasons). A refused method is logged by name with its reason and the run goes on
    with the others; when none is left, the run is refused before any work."""
    loaded = load_for_inference(args.model)
    loaded.model.to(device)
    refused = {name: reason for name in args.method_list() if (reason := method_spec(name).refusal(loaded.model))}
    usable = [name for name in args.method_list() if name not in refused]
    if not usable:
        raise ValueError(f"--methods {args.methods!r}: " + "; ".join(refused.values()))
    for reason in refused.values():
        logger.warning("refused: %s", reason)
    return replace(args, methods=",".join(usable)), loaded, refused


def _choose(args: ExplainArguments, labels: list[str]) -> tuple[list[list], str]:
    """(batches of (index, item), the source name: the split or "images")."""
    if args.images:
        candidates, source = items_from_paths(args.images, labels), "images"
    else:
        candidates, source = items_from_split(Path(args.data_dir), args.split, labels), args.split
    indexed = list(enumerate(choose_images(candidates, args.num_images, args.seed)))
    return [indexed[i : i + args.batch_size] for i in range(0, len(indexed), args.batch_size)], source


def _explain_batches(args: ExplainArguments, loaded: InferenceModel, batches: list[list], state) -> Gathered:
    """Share the batches out between the processes, explain them, and gather everything in image order."""
    explainers = build_explainers(args, loaded.model, loaded.preprocessor)
    randomized = randomized_models(args, loaded.model)
    local_images, local_skipped = [], []
    local_seconds = {name: 0.0 for name in [*explainers, "faithfulness"]}
    with state.split_between_processes(batches) as my_batches:
        bar = tqdm(total=sum(len(b) for b in my_batches), unit="image", desc="explain",
                   disable=not (args.show_progress and state.is_main_process))
        for batch in my_batches:
            images, skipped, seconds = explain_batch(
                batch, args, loaded.model, loaded.preprocessor, explainers, randomized, loaded.label2id
            )
            local_images += images
            local_skipped += skipped
            for key, value in seconds.items():
                local_seconds[key] += value
            bar.update(len(batch))
        bar.close()
    return Gathered(
        images=sorted(gather_object(local_images), key=lambda image: image.index),
        skipped=sorted(gather_object(local_skipped), key=lambda skip: (skip.path, skip.reason)),
        seconds=gather_object([local_seconds]),
    )


def build_results(args: ExplainArguments, gathered: Gathered, labels: list[str], source: str,
                  refused: dict[str, str] | None = None) -> ExplanationResults:
    """What explain_metrics.json holds: settings, the perturbation check, the causal test, the methods' summaries
    with their verdicts, one line per image; floats rounded (`report.rounded`), so the file is the same for any
    thread count or process split."""
    images, methods = gathered.images, args.method_list()
    checks = verdicts.perturbation_check(images, args.perturbation_space, args.faithfulness_baseline, args.shap_masker)
    sham = source == SHAM_SPLIT
    results = ExplanationResults(
        model=args.model,
        split=source,
        num_images=len(images),
        labels=list(labels),
        labels_note=SHAM_LABELS_NOTE if sham else None,
        settings={k: v for k, v in asdict(args).items() if k not in NOT_SETTINGS},
        perturbation_space=args.perturbation_space,
        perturbation_check=checks,
        causal_foci_test=causal.causal_test(images, args.causal_dilation),
        causal_foci_test_note=("skipped on sham: no truth to score accuracy against, and 0 Gy nuclei have no foci "
                               "to ablate") if sham else None,
        methods=verdicts.summarize(images, methods, args.randomization, checks, args.seed),
        refused_methods=dict(refused or {}),
        skipped=Skipped(len(gathered.skipped), list(gathered.skipped)),
        per_image=[report.image_record(image, methods, labels) for image in images],
    )
    results = ExplanationResults.from_dict(report.rounded(results.to_dict()))
    results.model_fingerprint = model_fingerprint(args.model)
    return results


def _timings(gathered: Gathered, methods: list[str], state) -> dict[str, Any]:
    total_images = len(gathered.images)
    return {
        "methods": {
            name: {"seconds_per_image": sum(s[name] for s in gathered.seconds) / total_images} for name in methods
        },
        "faithfulness_seconds_per_image": sum(s["faithfulness"] for s in gathered.seconds) / total_images,
        "num_processes": state.num_processes,
        "device": str(state.device),
        "torch_threads": torch.get_num_threads(),
        "note": "Process time summed over processes, per image; varies between runs, "
                "so kept out of explain_metrics.json.",
    }


def explain(args: ExplainArguments) -> ExplanationResults | None:
    """Run the explain step; returns what it wrote to explain_metrics.json (on the main process; None on the others)."""
    args.validate()
    state = distributed_state()  # no global reseed: every random choice has its own seeded generator
    args, loaded, refused = _load(args, state.device)
    batches, source = _choose(args, loaded.labels)
    gathered = _explain_batches(args, loaded, batches, state)
    if not state.is_main_process:
        return None
    if not gathered.images:
        skipped = gathered.skipped
        raise RuntimeError(f"No image could be explained; {len(skipped)} skipped: {skipped[:5]}")

    output_dir = args.resolved_output_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    results = build_results(args, gathered, loaded.labels, source, refused)
    results.to_json(output_dir / METRICS_FILE)
    timings = _timings(gathered, args.method_list(), state)
    (output_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n")
    figure_dir = output_dir / "figures"
    report.write_figures(gathered.images, results, loaded.labels, loaded.stretch, args, figure_dir)
    report.log_summary(results)
    written = len(list(figure_dir.glob("*.png")))
    logger.info("Wrote %s, %s and %d figures to %s", METRICS_FILE, TIMINGS_FILE, written, output_dir)
    return results
