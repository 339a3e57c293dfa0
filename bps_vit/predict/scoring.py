"""Scoring a prepared split: predict its images (and the sham control's) and measure them with the training
metrics, so `predict --data_dir` reports what `bps_results.json` reports (per condition, sham control, baseline).
`score_split` is also what the multi-process training test checks against."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..manifest import SHAM_SPLIT, SPLITS, condition_of, read_manifest
from ..metrics import majority_baseline, sham_control, split_metrics
from ..model import InferenceModel
from ..results import PredictionError, PredictionResults
from .inference import Prediction, predict_paths

SCORABLE_SPLITS = (*SPLITS, SHAM_SPLIT)


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
    loaded: InferenceModel,
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
    data_dir = Path(data_dir)
    label2id = loaded.label2id
    rows, items, sham_items = _items_to_score(data_dir, split, include_sham, label2id, rows)
    all_items = items + sham_items
    predictions = predict_paths(loaded, [p for p, _ in all_items], batch_size=batch_size, num_workers=num_workers,
                                progress=progress)
    extra = {
        path: {"true_label": row["label"], "condition": str(condition_of(row)), "split": row["split"]}
        for path, row in all_items
    }
    labels, probs, conditions = _scored(predictions[: len(items)], items, label2id)
    if len(labels) == 0:
        raise ValueError(f"No image of split {split!r} could be read; see the status column for why.")
    sham_labels, sham_probs, _ = _scored(predictions[len(items) :], sham_items, label2id)
    train_labels = [label2id[row["label"]] for row in rows if row["split"] == "train" and row["label"] in label2id]
    name = getattr(loaded.model.config, "_name_or_path", None)
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
