"""Load a published or local BPS model and predict: files and folders to a CSV, or score a prepared split.

The preprocessing is the model's own: `imaging.Preprocessor.from_processor` (the `Stretch`
stored in its `preprocessor_config.json`, a float resize to the processor's size, its mean/std),
exactly as in training, so a user never re-types percentiles. Decoding 16-bit TIFFs is the slow
part: on a GPU it runs in DataLoader workers while the GPU runs the forward pass; on a CPU, whose
cores the forward pass already uses, threads decode each batch between forwards
(`default_num_workers`). A file that cannot be read becomes a row with its error in `status`; the run
goes on. Under `accelerate launch --num_processes N` the images are split across processes and
gathered, and the main process writes one CSV identical to a single-process run.

The file is over 450 lines because it holds the whole predict step in the order it runs, in three
marked sections: predicting files (`predict_paths`), scoring a prepared split (`score_split`, also
what the multi-process training test checks against), and the script's body (`run_predict`). All
three speak in `Prediction` rows, whose error column is the step's one way of reporting a bad file.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .cli import ProgressArguments
from .distributed import distributed_state
from .image_checks import bps_shape_warnings
from .imaging import (
    IMAGE_SUFFIXES,
    ImageReadError,
    Preprocessor,
    Stretch,
    read_image,
)
from .manifest import SHAM_SPLIT, SPLITS, condition_of, read_manifest
from .model import labels_of
from .provenance import model_fingerprint
from .results import PredictionError, PredictionResults, fmt
from .threads import map_in_threads, one_intraop_thread

logger = logging.getLogger(__name__)

SCORABLE_SPLITS = (*SPLITS, SHAM_SPLIT)


@dataclass
class Prediction:
    """One input file: `status` is "ok" or "error: <why>"; label/probs are None on error.

    `warning` says why the image is not what the model was trained on (colour, not 16-bit, not crop-shaped;
    `image_checks.bps_shape_warnings`): the prediction is made, but may not mean much.
    """

    path: str
    status: str
    label: str | None = None
    probs: list[float] | None = None
    warning: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _error(path: str, message: str) -> Prediction:
    return Prediction(path=path, status="error: " + " ".join(str(message).split()))


def collect_image_paths(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], list[Prediction]]:
    """Files to predict from files and folders (recursive, image suffixes only, sorted).

    Returns (files, problems): a missing path or an image-less folder is a problem row for the
    CSV, never a silent drop. Non-image files inside folders are skipped and counted in the log.
    """
    files: list[str] = []
    problems: list[Prediction] = []
    seen: set[str] = set()
    skipped = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for child in sorted(path.rglob("*")):
                if not child.is_file():
                    continue
                if child.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(str(child))
                else:
                    skipped += 1
            if not found:
                problems.append(_error(str(path), f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})"))
            candidates = found
        elif path.is_file():
            candidates = [str(path)]
        else:
            problems.append(_error(str(path), "no such file or folder"))
            continue
        for candidate in candidates:
            if candidate not in seen:
                seen.add(candidate)
                files.append(candidate)
    if skipped:
        logger.info("Skipped %d non-image files inside the given folders.", skipped)
    return files, problems


class _ModelInputs:
    """Dataset: index -> (index, HxW float32 at model resolution or None, error or None, warning).

    Runs `Preprocessor.gray` (decode + stretch + float resize), the training preprocessing, in the
    DataLoader workers; errors are returned as data so one bad file never ends the run. The decoded
    array is judged by `bps_shape_warnings` on the way, so the warning costs no second read.
    """

    def __init__(self, paths: Sequence[str], preprocessor: Preprocessor):
        self.paths = list(paths)
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            array = read_image(path)
            channels = 1 if array.ndim == 2 else array.shape[2]
            warning = "; ".join(bps_shape_warnings(array.shape[0], array.shape[1], channels, str(array.dtype)))
            return index, self.preprocessor.gray(array, name=path), None, warning
        except ImageReadError as err:
            return index, None, str(err), ""
        except Exception as err:  # a reader bug or odd file must not end a 77k-image run
            return index, None, f"{path}: {type(err).__name__}: {err}", ""


class _NormalizeBatch:
    """Collate in the worker: stack the good images and normalise them to `pixel_values`."""

    def __init__(self, preprocessor: Preprocessor):
        self.preprocessor = preprocessor

    def __call__(self, items):
        good = [(i, gray) for i, gray, err, _ in items if err is None]
        errors = [(i, err) for i, _, err, _ in items if err is not None]
        warnings = {i: warning for i, _, _, warning in items if warning}
        if not good:
            return [], None, errors, warnings
        return [i for i, _ in good], self.preprocessor.normalize(np.stack([g for _, g in good])), errors, warnings


def default_num_workers(num_processes: int = 1, device_type: str = "cpu") -> int:
    """Decoding worker processes per process.

    On a GPU the forward pass leaves the CPU free, so decoding runs in DataLoader workers
    (one per spare core, at most 8). On a CPU-only machine the forward pass already uses every
    core: a worker process competes with it (`bench/eval_throughput.py` measures how much), so the
    batches are decoded in-process, between forwards, by threads (`threads.map_in_threads`).
    """
    if device_type == "cpu":
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus // max(1, num_processes) - 1))


def _in_process_batches(dataset: "_ModelInputs", batch_size: int, collate: "_NormalizeBatch"):
    """Batches decoded in this process: threads decode while the forward pass waits (it owns the cores)."""
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        with one_intraop_thread() as threads:  # small per-image torch ops: one thread each, `threads` at once
            batch = collate(map_in_threads(dataset.__getitem__, indices, threads))
        yield batch  # outside the block: the forward pass gets every thread back


def _predict_local(model, preprocessor, paths, batch_size, num_workers, progress, device) -> list[Prediction]:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    labels = labels_of(model.config)
    results: list[Prediction | None] = [None] * len(paths)
    if not paths:
        return []
    inputs, collate = _ModelInputs(paths, preprocessor), _NormalizeBatch(preprocessor)
    if num_workers > 0:
        loader = DataLoader(
            inputs,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate,
            prefetch_factor=4,
            pin_memory=device.type == "cuda",
        )
    else:
        loader = _in_process_batches(inputs, batch_size, collate)
    dtype = next(model.parameters()).dtype
    with tqdm(total=len(paths), unit="img", desc="predict", disable=not progress) as bar, torch.inference_mode():
        for indices, pixel_values, errors, warnings in loader:
            for i, message in errors:
                results[i] = _error(paths[i], message)
            if indices:
                logits = model(pixel_values=pixel_values.to(device=device, dtype=dtype, non_blocking=True)).logits
                probs = logits.float().softmax(dim=-1).cpu().numpy()
                for i, row in zip(indices, probs):
                    results[i] = Prediction(path=paths[i], status="ok", label=labels[int(row.argmax())],
                                            probs=[float(p) for p in row], warning=warnings.get(i, ""))
            bar.update(len(indices) + len(errors))
    return [r for r in results if r is not None]


def check_batch_size(batch_size: int) -> None:
    """The one batch-size rule: `predict_paths` (the app calls it too) and the script's early check."""
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1; got {batch_size}")


def predict_paths(
    model,
    processor,
    stretch: Stretch | None,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Predict image files, in input order. Under `accelerate launch`, each process takes its share and the
    results are gathered, so every process returns the full list."""
    state = distributed_state()
    paths = [str(p) for p in paths]
    preprocessor = Preprocessor.from_processor(processor, stretch or Stretch.from_processor(processor))
    check_batch_size(batch_size)
    model.eval()
    device = state.device
    if num_workers is None:
        num_workers = default_num_workers(state.num_processes, device.type)
    model.to(device)
    if state.num_processes == 1:
        return _predict_local(model, preprocessor, paths, batch_size, num_workers, progress, device)

    from accelerate.utils import gather_object

    with state.split_between_processes(list(range(len(paths)))) as mine:
        mine = list(mine)
    local = _predict_local(
        model,
        preprocessor,
        [paths[i] for i in mine],
        batch_size,
        num_workers,
        progress and state.is_local_main_process,
        device,
    )
    gathered = gather_object([(i, p) for i, p in zip(mine, local)])
    by_index = dict(gathered)
    return [by_index[i] for i in range(len(paths))]


def write_predictions_csv(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    output: str | os.PathLike,
    extra: dict[str, dict[str, str]] | None = None,
) -> Path:
    """CSV: path, status, predicted_label, prob_<label>..., warning (+ extra columns per path); written atomically."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    extra_columns = sorted({k for row in extra.values() for k in row})
    header = ["path", "status", "predicted_label"] + [f"prob_{label}" for label in labels] + ["warning"] + extra_columns
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for p in predictions:
            probs = [f"{v:.6f}" for v in p.probs] if p.probs is not None else [""] * len(labels)
            more = extra.get(p.path, {})
            writer.writerow([p.path, p.status, p.label or ""] + probs + [p.warning]
                            + [more.get(c, "") for c in extra_columns])
    os.replace(tmp, output)
    return output


# --------------------------------------------------------------------------- scoring a prepared split


def _split_items(data_dir: Path, rows: list[dict[str, str]], split: str) -> list[tuple[str, dict[str, str]]]:
    root = data_dir.resolve()
    items = []
    for row in rows:
        if row["split"] != split:
            continue
        path = (data_dir / row["path"]).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"{data_dir}/manifest.csv: path {row['path']!r} points outside the data folder.")
        items.append((str(path), row))
    return items


def score_split(
    model,
    processor,
    stretch: Stretch | None,
    data_dir: str | os.PathLike,
    split: str = "test",
    *,
    include_sham: bool = True,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
    rows: list[dict[str, str]] | None = None,
) -> tuple[list[Prediction], dict[str, dict[str, str]], PredictionResults]:
    """Score a model on a prepared split with the training metrics (per condition, sham control, baseline).

    Returns (predictions, extra CSV columns per path, `PredictionResults` whose `splits[split]` and
    `sham_control` have the shape of bps_results.json's). Unreadable images are left out of the
    metrics and listed under `errors`. `model_fingerprint` is left to the writer (`run_predict`, main process).
    `rows`: the manifest's, when the caller has read them already (`manifest_rows`); else they are read here.
    """
    from .metrics import majority_baseline, sham_control, split_metrics

    data_dir = Path(data_dir)
    label2id = {label: i for i, label in enumerate(labels_of(model.config))}
    rows, items, sham_items = _items_to_score(data_dir, split, include_sham, label2id, rows)
    all_items = items + sham_items
    predictions = predict_paths(
        model, processor, stretch, [p for p, _ in all_items], batch_size=batch_size, num_workers=num_workers,
        progress=progress,
    )
    extra = {
        path: {"true_label": row["label"], "condition": str(condition_of(row)), "split": row["split"]}
        for path, row in all_items
    }
    labels, probs, conditions = _scored(predictions[: len(items)], items, label2id)
    if len(labels) == 0:
        raise ValueError(f"No image of split {split!r} could be read; see the status column for why.")
    sham_labels, sham_probs, _ = _scored(predictions[len(items) :], sham_items, label2id)
    train_labels = [label2id[row["label"]] for row in rows if row["split"] == "train" and row["label"] in label2id]
    name = getattr(model.config, "_name_or_path", None)
    metrics = PredictionResults(
        model=name,
        data_dir=str(data_dir),
        split=split,
        splits={split: split_metrics(labels, probs, conditions)},
        sham_control=sham_control(sham_labels, sham_probs) if len(sham_labels) else None,
        baseline=majority_baseline(train_labels, labels) if train_labels else None,
        errors=[PredictionError(p.path, p.status) for p in predictions if not p.ok],
    )
    return predictions, extra, metrics


def check_split(split: str) -> None:
    if split not in SCORABLE_SPLITS:
        raise ValueError(f"--split {split!r}: choose one of {list(SCORABLE_SPLITS)}.")


def manifest_rows(data_dir: Path, split: str) -> list[dict[str, str]]:
    """The manifest's rows, read once and checked: `split` is one to score, the folder exists and has its images."""
    check_split(split)
    if not data_dir.is_dir():
        raise ValueError(f"--data_dir {data_dir}: no such folder (looked at {data_dir.resolve()}).")
    rows = read_manifest(data_dir)
    if not any(row["split"] == split for row in rows):
        raise ValueError(f"{data_dir}/manifest.csv has no images with split={split!r}.")
    return rows


def _items_to_score(data_dir: Path, split: str, include_sham: bool, label2id: dict[str, int],
                    rows: list[dict[str, str]] | None = None):
    """(manifest rows, (path, row) of the split, (path, row) of the sham control), checked against the model.

    `rows` are the manifest's as `manifest_rows` returned them (run_predict checked them before loading the model).
    """
    rows = manifest_rows(data_dir, split) if rows is None else rows
    items = _split_items(data_dir, rows, split)
    sham_items = _split_items(data_dir, rows, SHAM_SPLIT) if include_sham and split != SHAM_SPLIT else []
    unknown = sorted({row["label"] for _, row in items + sham_items} - set(label2id))
    if unknown:
        known = list(label2id)
        raise ValueError(f"{data_dir}/manifest.csv has labels {unknown} that the model does not know ({known}).")
    return rows, items, sham_items


def _scored(predictions: list[Prediction], items: list[tuple[str, dict[str, str]]], label2id: dict[str, int]):
    """(labels, probabilities, conditions) of the readable images among `items`."""
    kept = [(pred, row) for pred, (_, row) in zip(predictions, items, strict=True) if pred.ok]
    labels = np.array([label2id[row["label"]] for _, row in kept], dtype=np.int64)
    probs = np.array([pred.probs for pred, _ in kept], dtype=np.float64).reshape(len(kept), len(label2id))
    return labels, probs, [str(condition_of(row)) for _, row in kept]


# --------------------------------------------------------------------------- the script's body


@dataclass
class PredictArguments(ProgressArguments):
    """Arguments of scripts/predict.py (image paths may also be given positionally)."""

    model: str = field(metadata={"help": "Hub model id or local folder of a fine-tuned bps-vit model."})
    paths: list[str] = field(default_factory=list, metadata={"help": "Image files or folders (recursive)."})
    output: str = field(default="predictions.csv", metadata={"help": "CSV to write."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    num_workers: int | None = field(default=None, metadata={"help": "Decoding workers per process (default: auto)."})
    data_dir: str | None = field(default=None, metadata={"help": "Prepared folder (data/bps) to score a split of."})
    split: str = field(default="test",
                       metadata={"help": f"Split to score with --data_dir: {', '.join(SCORABLE_SPLITS)}."})
    include_sham: bool = field(default=True, metadata={"help": "With --data_dir: also score the sham control."})
    metrics_output: str | None = field(
        default=None, metadata={"help": "Metrics JSON with --data_dir (default: <output stem>_metrics.json)."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa (fast) or eager."})
    dtype: str = field(
        default="auto",
        metadata={"help": "auto (bf16 on a GPU that supports it, else fp32), float32, bfloat16, float16."},
    )

    def metrics_path(self) -> Path:
        return Path(self.metrics_output or Path(self.output).with_name(Path(self.output).stem + "_metrics.json"))


def _check_writable(path: Path, flag: str) -> None:
    """The output can be written: not a folder, and its nearest existing parent folder is writable."""
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a file name (e.g. {path / 'predictions.csv'}).")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write there ({parent} is not a writable folder).")


def check_predict_args(args: PredictArguments) -> list[dict[str, str]] | None:
    """Every check that needs no model, so a typo costs no model load (seconds on a CPU).

    Returns the manifest's rows with --data_dir (read here, once, and handed to `score_split`), else None.
    """
    from .model import ensure_resolvable, resolve_inference_dtype

    if not args.data_dir and not args.paths:
        raise ValueError("Give image files or folders to predict, or --data_dir DIR --split test to score a split.")
    check_batch_size(args.batch_size)  # again in predict_paths, but that runs after the model has loaded
    resolve_inference_dtype(args.dtype)
    rows = None
    if args.data_dir:
        rows = manifest_rows(Path(args.data_dir), args.split)
        _check_writable(args.metrics_path(), "--metrics_output")
    _check_writable(Path(args.output), "--output")
    ensure_resolvable(args.model, "--model")
    args.warn_if_deprecated(logger)
    return rows


def trained_on_synthetic(model: str) -> bool:
    """Whether the model's own results say it was trained on synthetic images (`data.source == "synthetic"` in the
    bps_results.json beside it, or on the Hub next to its weights); False when that cannot be told."""
    from .results import RunResults, SchemaError

    path = Path(model) / RunResults.FILENAME
    if not Path(model).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, RunResults.FILENAME))
        except Exception:  # offline, not published with results, no access: nothing to tell
            return False
    try:
        results = RunResults.from_json(path) if path.is_file() else None
    except SchemaError:
        return False
    return bool(results and results.data and results.data.synthetic)


def warn_odd_inputs(predictions: Sequence[Prediction], output: str) -> None:
    """One console line for the inputs that are not BPS-like crops; each one's reason is in the CSV."""
    odd = [p for p in predictions if p.warning]
    if not odd:
        return
    first = odd[0]
    more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
    logger.warning("%d of %d images are not what the model was trained on, see the warning column of %s: %s: %s%s",
                   len(odd), len(predictions), output, Path(first.path).name, first.warning, more)


def report_metrics(metrics: PredictionResults, csv_path: str, metrics_path: Path) -> None:
    """The split's metrics, the sham control's, and the files written: what a user runs `--split` for."""
    split = metrics.splits[metrics.split]
    baseline = f", majority-class baseline {fmt(metrics.baseline.accuracy, 3)}" if metrics.baseline else ""
    logger.info("%s: %d images scored: accuracy %s, balanced accuracy %s%s.", metrics.split, split.n,
                fmt(split.accuracy, 3), fmt(split.balanced_accuracy, 3), baseline)
    sham = metrics.sham_control
    if sham is not None:
        verdict = ("far from chance: a plate/batch signal" if sham.batch_signature_suspected
                   else "within chance, as it should be")
        logger.info("sham control: %d unirradiated images, balanced accuracy %s (%s); %s.", sham.n,
                    fmt(sham.balanced_accuracy, 3), verdict, sham.prediction_summary or "no predicted shares")
    logger.info("Wrote %s (predictions) and %s (metrics).", csv_path, metrics_path)


def run_predict(args: PredictArguments) -> dict[str, Any]:
    """Check the arguments, load the model, predict (or score a split), write the CSV (and metrics JSON)."""
    from .model import load_for_inference

    state = distributed_state()
    rows = check_predict_args(args)
    model, processor, stretch = load_for_inference(args.model, attn_implementation=args.attn_implementation,
                                                   dtype=args.dtype)
    labels = labels_of(model.config)
    if state.is_main_process:
        logger.info("Predicting with %s on %d process(es), device %s.", args.model, state.num_processes, state.device)
        if trained_on_synthetic(args.model):
            logger.warning("%s was trained on SYNTHETIC images (its bps_results.json says so): its calls on real BPS "
                           "crops mean nothing. Use a model trained on the NASA data.", args.model)
    common = dict(batch_size=args.batch_size, num_workers=args.num_workers, progress=args.show_progress)
    metrics = None
    if args.data_dir:
        predictions, extra, metrics = score_split(
            model, processor, stretch, args.data_dir, args.split, include_sham=args.include_sham, rows=rows, **common
        )
    else:
        files, problems = collect_image_paths(args.paths)
        predictions = predict_paths(model, processor, stretch, files, **common) + problems
        extra = None
    errors = [p for p in predictions if not p.ok]
    summary = {
        "output": args.output,
        "n": len(predictions),
        "n_ok": len(predictions) - len(errors),
        "n_errors": len(errors),
        "metrics_output": None,
    }
    if state.is_main_process:
        write_predictions_csv(predictions, labels, args.output, extra)
        if metrics is not None:
            out = args.metrics_path()
            metrics.settings = {k: v for k, v in asdict(args).items() if k != "paths"}
            metrics.model_fingerprint = model_fingerprint(args.model)  # hashed once, by the process that writes
            metrics.to_json(out)
            summary["metrics_output"] = str(out)
        _log_errors(errors, args.output)
        warn_odd_inputs(predictions, args.output)
        _log_counts(predictions, errors, extra, args)
        if metrics is not None:
            report_metrics(metrics, args.output, Path(summary["metrics_output"]))
    state.wait_for_everyone()
    summary["metrics"] = metrics
    return summary


def _log_errors(errors: Sequence[Prediction], output: str) -> None:
    for p in errors[:20]:
        logger.warning("%s", p.status if p.path in p.status else f"{p.path}: {p.status}")
    if len(errors) > 20:
        logger.warning("... and %d more unreadable inputs; see the status column of %s.", len(errors) - 20, output)


def _log_counts(predictions: Sequence[Prediction], errors: Sequence[Prediction], extra: dict | None,
                args: PredictArguments) -> None:
    """Inputs, predicted and errors; with --data_dir, the split and the sham control counted apart."""
    if extra is None:
        logger.info("Wrote %s: %d inputs, %d predicted, %d errors.", args.output, len(predictions),
                    len(predictions) - len(errors), len(errors))
        return
    failed = {p.path for p in errors}
    parts = []
    for split in dict.fromkeys(row["split"] for row in extra.values()):
        paths = [p.path for p in predictions if extra[p.path]["split"] == split]
        name = "sham control" if split == SHAM_SPLIT and args.split != SHAM_SPLIT else split
        parts.append(f"{name} {len(paths)} images ({sum(p in failed for p in paths)} errors)")
    logger.info("Predicted %s.", ", ".join(parts))
