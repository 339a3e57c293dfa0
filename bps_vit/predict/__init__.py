"""The predict step: load a published or local BPS model, then predict files and folders into a CSV
(`inference`), or score a prepared split with the training metrics (`scoring`). This face holds the
script's arguments and body (`run_predict`), which only check, load, call one of the two, and write.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from huggingface_hub import hf_hub_download

from ..cli import ProgressArguments
from ..distributed import distributed_state
from ..manifest import SHAM_SPLIT
from ..model import ensure_resolvable, load_for_inference, resolve_inference_dtype
from ..provenance import model_fingerprint
from ..results import PredictionResults, RunResults, SchemaError, fmt
from .inference import (
    Prediction,
    check_batch_size,
    collect_image_paths,
    default_num_workers,
    predict_paths,
    write_predictions_csv,
)
from .scoring import SCORABLE_SPLITS, manifest_rows, score_split

__all__ = ["PredictArguments", "Prediction", "collect_image_paths", "default_num_workers", "predict_paths",
           "run_predict", "score_split", "write_predictions_csv"]

logger = logging.getLogger(__name__)


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
    path = Path(model) / RunResults.FILENAME
    if not Path(model).is_dir():
        try:
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
    state = distributed_state()
    rows = check_predict_args(args)
    loaded = load_for_inference(args.model, attn_implementation=args.attn_implementation, dtype=args.dtype)
    if state.is_main_process:
        logger.info("Predicting with %s on %d process(es), device %s.", args.model, state.num_processes, state.device)
        if trained_on_synthetic(args.model):
            logger.warning("%s was trained on SYNTHETIC images (its bps_results.json says so): its calls on real BPS "
                           "crops mean nothing. Use a model trained on the NASA data.", args.model)
    common = dict(batch_size=args.batch_size, num_workers=args.num_workers, progress=args.show_progress)
    metrics = extra = None
    if args.data_dir:
        predictions, extra, metrics = score_split(loaded, args.data_dir, args.split, include_sham=args.include_sham,
                                                  rows=rows, **common)
    else:
        files, problems = collect_image_paths(args.paths)
        predictions = predict_paths(loaded, files, **common) + problems
    errors = [p for p in predictions if not p.ok]
    summary = {"output": args.output, "n": len(predictions), "n_ok": len(predictions) - len(errors),
               "n_errors": len(errors), "metrics_output": None, "metrics": metrics}
    if state.is_main_process:
        summary["metrics_output"] = _write_outputs(args, loaded.labels, predictions, extra, metrics)
        _log_errors(errors, args.output)
        warn_odd_inputs(predictions, args.output)
        _log_counts(predictions, errors, extra, args)
        if metrics is not None:
            report_metrics(metrics, args.output, Path(summary["metrics_output"]))
    state.wait_for_everyone()
    return summary


def _write_outputs(args: PredictArguments, labels: list[str], predictions: list[Prediction],
                   extra: dict | None, metrics: PredictionResults | None) -> str | None:
    """The CSV, and with --data_dir the metrics JSON (its path returned), stamped with the settings and weights."""
    write_predictions_csv(predictions, labels, args.output, extra)
    if metrics is None:
        return None
    out = args.metrics_path()
    metrics.settings = {k: v for k, v in asdict(args).items() if k != "paths"}
    metrics.model_fingerprint = model_fingerprint(args.model)  # hashed once, by the process that writes
    metrics.to_json(out)
    return str(out)


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
