"""The audit's images on disk and in memory: one decode for every fold, each fold's `RunInputs`, its files.

Every image of the prepared folder (the irradiated pool, then the sham images) is decoded once into one cache,
saved in the audit folder (`decoded/`, by the main process; every process then memory-maps it), so a killed audit
resumes without decoding again and is removed when the audit ends. A fold's splits are `select`s of that cache.

A fold's folder holds `manifest.csv` (the images it trained and validated on), then what `run_training` writes
(`bps_run.json`, the weights, `bps_results.json`, ...), then `predictions.csv` (its held-out and sham images) and,
last, `fold.json`: a fold with a `fold.json` whose fingerprint is this plan's is finished and is not trained again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
from accelerate import PartialState

from ..bps import LABELS
from ..data import decode_for_model
from ..provenance import RunMismatchError
from ..results import FoldRecord
from ..train import RunInputs
from .folds import Fold, Image, Pool

DECODED_DIR = "decoded"
FOLDS_DIR = "folds"
FOLD_MANIFEST = "manifest.csv"
FOLD_PREDICTIONS = "predictions.csv"
FOLD_MANIFEST_COLUMNS = ("filename", "role", "plate", "well", "field", "condition", "label")
PROBABILITY_COLUMNS = tuple(f"p_{label}" for label in LABELS)
PREDICTION_COLUMNS = ("filename", "role", "plate", "well", "field", "condition", "strategy", "fold", "label",
                      "prediction", *PROBABILITY_COLUMNS)


def fold_dir(root: str | Path, fold: Fold) -> Path:
    return Path(root) / FOLDS_DIR / fold.name


# ----------------------------------------------------------------------------- decode once


def pool_dataset(pool: Pool, data_dir: str | Path):
    """A `datasets.Dataset` of the pool's images, then the sham images (row i = `pool.images[i]`), undecoded."""
    images = pool.images + pool.sham
    features = datasets.Features({"image": datasets.Image(decode=False),
                                  "label": datasets.ClassLabel(names=list(LABELS)),
                                  "filename": datasets.Value("string"), "condition": datasets.Value("string")})
    return datasets.Dataset.from_dict({
        "image": [{"path": str(Path(data_dir) / image.path), "bytes": None} for image in images],
        "label": [image.label for image in images],
        "filename": [image.filename for image in images],
        "condition": [image.condition for image in images],
    }, features=features)


def decode_once(pool: Pool, data_args, preprocessor, root: str | Path):
    """The decoded pool (`data.decode_for_model`), from `root/decoded/` when a killed run of this audit left it."""
    state = PartialState()
    target = Path(root) / DECODED_DIR
    if state.is_main_process and not target.is_dir():
        decoded = decode_for_model(pool_dataset(pool, data_args.data_dir), preprocessor, data_args.cache_images,
                                   data_args.preprocessing_num_workers, "Decoding the audit's images (once)")
        staging = target.with_name(f".{DECODED_DIR}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        decoded.save_to_disk(str(staging))
        os.replace(staging, target)  # a killed save never looks complete
    state.wait_for_everyone()
    return datasets.load_from_disk(str(target))


def remove_decoded(root: str | Path) -> None:
    shutil.rmtree(Path(root) / DECODED_DIR, ignore_errors=True)


def fold_inputs(fold: Fold, pool: Pool, decoded, stretch, preprocessor, fingerprint: str) -> RunInputs:
    """What `run_training` trains this fold on: its training, validation and held-out (`test`) images, and the
    sham images, as `select`s of the one decode cache."""
    first_sham = len(pool.images)
    sham = decoded.select(range(first_sham, first_sham + len(pool.sham))) if pool.sham else None
    splits = {name: decoded.select(positions.tolist())
              for name, positions in (("train", fold.train), ("validation", fold.validation), ("test", fold.held_out))}
    return RunInputs(raw=splits, raw_sham=sham, decoded={**splits, "sham": sham}, stretch=stretch,
                     preprocessor=preprocessor, data_fingerprint=fingerprint, split_by=fold.strategy)


# ----------------------------------------------------------------------------- a fold's files


def _csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _image_columns(image: Image) -> dict:
    return {"filename": image.filename, "plate": image.plate, "well": image.well, "field": image.field,
            "condition": image.condition, "label": image.label_name}


def fold_manifest(pool: Pool, fold: Fold) -> str:
    """The text of the fold's `manifest.csv`: every image it trained or validated on, with its groups."""
    rows = [{**_image_columns(pool.images[i]), "role": role}
            for role, positions in (("train", fold.train), ("validation", fold.validation)) for i in positions]
    return _csv_text(FOLD_MANIFEST_COLUMNS, rows)


def fold_fingerprint(data_fingerprint: str | None, pool: Pool, fold: Fold) -> str:
    """What defines the fold's data: the prepared folder's manifest and the fold's own (so its held-out set too)."""
    text = f"{data_fingerprint}\n{fold.name}\n{fold_manifest(pool, fold)}"
    return hashlib.sha256(text.encode()).hexdigest()


def prediction_rows(pool: Pool, fold: Fold, probabilities: dict[str, np.ndarray]) -> list[dict]:
    """One row per held-out image and one per sham image (its `label` is its branch)."""
    parts = [("held_out", [pool.images[i] for i in fold.held_out], probabilities["test"])]
    if pool.sham:
        parts.append(("sham", pool.sham, probabilities["sham"]))
    rows = []
    for role, images, probs in parts:
        for image, p in zip(images, np.asarray(probs, dtype=np.float64), strict=True):
            rows.append({**_image_columns(image), "role": role, "strategy": fold.strategy, "fold": fold.index,
                         "prediction": LABELS[int(p.argmax())],
                         **{column: repr(float(v)) for column, v in zip(PROBABILITY_COLUMNS, p)}})
    return rows


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Atomically: a reader (or a resumed audit) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(_csv_text(columns, rows), encoding="utf-8")
    os.replace(staging, path)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def finished_fold(folder: Path, fingerprint: str) -> FoldRecord | None:
    """The fold's record when it finished on this plan's data; None when it has not finished."""
    path = folder / FoldRecord.FILENAME
    if not path.is_file() or not (folder / FOLD_PREDICTIONS).is_file():
        return None
    record = FoldRecord.from_json(path)
    if record.data_fingerprint != fingerprint:
        raise RunMismatchError(
            f"{folder} is a fold of another audit plan (other data, strategies, --num_folds or seeds). Resume with "
            "the command that started it, or start afresh with --overwrite_output_dir."
        )
    return record
