"""The prepared BPS folder as a `datasets.DatasetDict`, with the 16-bit-aware transform.

`data/bps/{train,validation,test}/<label>/*` is an ImageFolder, so it loads with
`load_dataset("imagefolder")` and the labels come from the folder names (`Fe`, `X-ray` for the BPS
particle task; doses, hours or a lab's own classes otherwise), in `labels.ordered_labels` order. Pixels are decoded by
our own code (the image column is cast to `decode=False`), because Pillow's route loses 16-bit
data. The experimental condition of every image (dose x hour) is joined from `manifest.csv`,
so evaluation can report accuracy per condition.

Decoding and stretching a TIFF costs about as much as a small ViT's forward pass on a 2-core
CPU, so by default every image is decoded once into a float16 cache at the model's resolution
(`datasets.map`, persisted in the datasets cache); each epoch then only augments and
normalises. Augmentation is flips and 90-degree rotations (a nucleus has no up or down), drawn
from (seed, epoch, example) so a resumed run sees exactly the augmentations of an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .imaging import IMAGE_SUFFIXES, Preprocessor
from .labels import ordered_labels
from .manifest import SHAM_SPLIT, SPLITS, condition_of, read_manifest, read_report
from .threads import map_in_threads, one_intraop_thread

logger = logging.getLogger(__name__)

PREPARE_HINT = (
    "python scripts/prepare_data.py --source synthetic --output_dir {data_dir}  (or --source s3 / local / hf)"
)


def prepare_hint(data_dir: str | Path) -> str:
    """The command that makes `data_dir` usable. A raw folder (a meta.csv or images, not split) gets the command that
    prepares it (issue 23: a folder of TIFFs with meta.csv was sent to --source synthetic)."""
    folder = Path(data_dir)
    raw = folder.is_dir() and ((folder / "meta.csv").is_file() or bool(_image_files(folder)))
    if raw:
        return (f"python scripts/prepare_data.py --source local --raw_dir {data_dir} --output_dir data/bps  "
                "(then train with --data_dir data/bps)")
    return PREPARE_HINT.format(data_dir=data_dir)


class DataError(ValueError):
    """A prepared data folder that cannot be used; the message names the folder and the fix."""


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_labels(data_dir: str | Path) -> tuple[str, ...]:
    """The classes of a prepared folder, in the model's id order: split_report.json's `labels`, else the train
    split's class folders."""
    data_dir = Path(data_dir)
    labels = read_report(data_dir).get("labels") if (data_dir / "split_report.json").is_file() else None
    if labels:
        return tuple(labels)
    train = data_dir / "train"
    return ordered_labels(_subfolders(train)) if train.is_dir() else ()


def check_prepared_folder(data_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> dict[str, dict[str, int]]:
    """Fail early, with the fix, on a folder the Trainer would choke on later. Returns counts."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        hint = PREPARE_HINT.format(data_dir=data_dir)
        raise DataError(f"{data_dir}: no prepared data folder. Create it with:\n  {hint}")
    labels = folder_labels(data_dir)
    counts: dict[str, dict[str, int]] = {}
    for split in splits:
        split_dir = data_dir / split
        if not split_dir.is_dir():
            if not any((data_dir / name).is_dir() for name in splits):
                raise DataError(f"{data_dir}: not a prepared data folder (no {', '.join(splits)} folders). Prepare "
                                f"it with:\n  {prepare_hint(data_dir)}")
            raise DataError(f"{split_dir}: split folder missing. Re-run:\n  {PREPARE_HINT.format(data_dir=data_dir)}")
        unknown = [name for name in _subfolders(split_dir) if name not in labels]
        if unknown:
            raise DataError(
                f"{split_dir}: unknown label folder(s) {unknown}; expected exactly {list(labels)}. "
                "Rename or remove them (labels must be the same in every split)."
            )
        counts[split] = {}
        for label in labels:
            label_dir = split_dir / label
            n = len(_image_files(label_dir)) if label_dir.is_dir() else 0
            if n == 0:
                raise DataError(
                    f"{label_dir}: no images of class {label!r} in the {split} split. Every split needs every class; "
                    f"prepare more data or change the split fractions ({PREPARE_HINT.format(data_dir=data_dir)})."
                )
            counts[split][label] = n
    if len(labels) < 2:
        raise DataError(f"{data_dir}: {len(labels)} class(es) {list(labels)}; a classifier needs at least two.")
    return counts


def manifest_by_filename(data_dir: str | Path) -> dict[str, dict[str, str]]:
    """filename -> manifest row (empty when the folder has no manifest, e.g. hand-made folders)."""
    return {row["filename"]: row for row in read_manifest(data_dir, missing_ok=True)}


@contextmanager
def _quiet_datasets():
    """No "Downloading data" / "Generating split" / map bars for listing local files: they take
    under a second and are noise in every run's log. Restores the caller's setting."""
    import datasets  # deferred: datasets takes seconds to import; only building a DatasetDict needs it

    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _load_imagefolder(data_files: dict[str, str], cache_dir: str | None, labels: tuple[str, ...]):
    """The splits with a ClassLabel in `labels` order (imagefolder sorts folder names; doses sort as numbers)."""
    import datasets  # deferred: datasets takes seconds to import; only building a DatasetDict needs it

    with _quiet_datasets():
        dataset = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
        features = dataset[next(iter(dataset))].features
        found = list(getattr(features.get("label"), "names", None) or [])
        if not set(found) <= set(labels):
            raise DataError(f"label folders {found} differ from the classes {list(labels)}")
        if found != list(labels):
            dataset = _relabel_ids(dataset, found, labels)
    return dataset.cast_column("image", datasets.Image(decode=False))


def _relabel_ids(dataset, found: list[str], labels: tuple[str, ...]):
    """Map imagefolder's ids (sorted names, maybe a subset, e.g. sham/) to the model's label order."""
    import datasets  # deferred: see above

    new_id = [labels.index(name) for name in found]
    features = dataset[next(iter(dataset))].features.copy()
    features["label"] = datasets.ClassLabel(names=list(labels))
    return dataset.map(lambda batch: {"label": [new_id[i] for i in batch["label"]]}, batched=True, features=features)


def _add_conditions(dataset, manifest: dict[str, dict[str, str]]):
    """Join filename and condition (dose x hour) from the manifest onto each example."""
    names_of = dataset.features["label"].names

    def add(batch: dict[str, list]) -> dict[str, list]:
        names = [os.path.basename(image["path"]) for image in batch["image"]]
        labels = [names_of[label] for label in batch["label"]]
        conditions = [str(condition_of(manifest.get(name), label)) for name, label in zip(names, labels, strict=True)]
        return {"filename": names, "condition": conditions}

    with _quiet_datasets():
        return dataset.map(add, batched=True, desc="Joining conditions from manifest.csv")


def load_bps_dataset(data_dir: str | Path, cache_dir: str | None = None):
    """`DatasetDict` {train, validation, test}: image (path, undecoded), label (ClassLabel of the folder's classes),
    filename, condition."""
    import datasets  # deferred: datasets takes seconds to import; only building a DatasetDict needs it

    data_dir = Path(data_dir)
    check_prepared_folder(data_dir)
    files = {split: str(data_dir / split / "**") for split in SPLITS}
    dataset = _load_imagefolder(files, cache_dir, folder_labels(data_dir))
    manifest = manifest_by_filename(data_dir)
    return datasets.DatasetDict({split: _add_conditions(dataset[split], manifest) for split in SPLITS})


def load_sham_dataset(data_dir: str | Path, cache_dir: str | None = None):
    """The 0 Gy negative-control images (`sham/<label>/`), or None when the folder has none (or none of a class)."""
    sham_dir = Path(data_dir) / SHAM_SPLIT
    labels = folder_labels(data_dir)
    present = [name for name in _subfolders(sham_dir) if _image_files(sham_dir / name)] if sham_dir.is_dir() else []
    if len(present) < 2 or not set(present) <= set(labels):
        return None
    dataset = _load_imagefolder({SHAM_SPLIT: str(sham_dir / "**")}, cache_dir, labels)[SHAM_SPLIT]
    return _add_conditions(dataset, manifest_by_filename(data_dir))


# ----------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------


def _image_source(image: dict[str, Any]):
    return image.get("bytes") or image["path"]


@dataclass
class Augmenter:
    """Flips and 90-degree rotations, one of the 8 dihedral transforms per example.

    The choice is a hash of (seed, epoch, example id), not a draw from a global RNG: a run
    resumed mid-epoch, or split over several processes, applies the same augmentation to the
    same example as an uninterrupted run.
    """

    seed: int = 0
    epoch: int = 0

    def choice(self, example_id: int) -> int:
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:{example_id}".encode(), digest_size=2).digest()
        return digest[0] % 8

    def __call__(self, gray: np.ndarray, example_id: int) -> np.ndarray:
        k = self.choice(example_id)
        out = np.rot90(gray, k % 4, axes=(-2, -1))
        return np.flip(out, axis=-1) if k >= 4 else out


@dataclass
class BPSTransform:
    """`with_transform` callable: batch of examples -> {"pixel_values", "labels"}.

    Works on the raw image column (decode + stretch + resize on the fly) or on the cached
    `gray` column (float16 bytes at model resolution, written by `cache_gray_pixels`).
    """

    preprocessor: Preprocessor
    augmenter: Augmenter | None = None

    def gray_batch(self, batch: dict[str, list], threads: int = 1) -> list[np.ndarray]:
        """HxW images in [0, 1]: float16 views of the cache (no copy), or float32 decoded on the fly
        (by `threads` threads)."""
        if "gray" in batch:
            shape = (self.preprocessor.height, self.preprocessor.width)
            return [np.frombuffer(buf, dtype=np.float16).reshape(shape) for buf in batch["gray"]]
        return map_in_threads(
            lambda img: self.preprocessor.gray(_image_source(img), name=img.get("path")), batch["image"], threads
        )

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        with one_intraop_thread() as threads:  # decode/resize (uncached) and normalise are small per-batch ops
            grays = self.gray_batch(batch, threads)
            if self.augmenter is not None:
                ids = batch.get("example_id") or list(range(len(grays)))
                grays = [self.augmenter(gray, example_id) for gray, example_id in zip(grays, ids)]
            # one pass from the (augmented) float16 views to a float32 batch, instead of a copy per image
            pixel_values = self.preprocessor.normalize(np.stack(grays, dtype=np.float32))
        out: dict[str, Any] = {"pixel_values": list(pixel_values)}
        if "label" in batch:
            out["labels"] = batch["label"]
        return out


def cache_gray_pixels(dataset, preprocessor: Preprocessor, num_proc: int | None = None, desc: str = "Decoding images"):
    """Decode, stretch and resize every image once; store float16 bytes in a `gray` column.

    Unreadable images stop here with the file's name (the data layer already skipped and
    reported those it found; a file corrupted since is an error worth seeing).
    """

    def decode_one(img: dict[str, Any]) -> bytes:
        return preprocessor.gray(_image_source(img), name=img.get("path")).astype(np.float16).tobytes()

    def decode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        with one_intraop_thread() as threads:
            grays = map_in_threads(decode_one, batch["image"], threads)
        return {"gray": grays, "example_id": indices}

    num_proc = num_proc if num_proc and num_proc > 1 and len(dataset) >= 256 else None
    return dataset.map(decode, batched=True, batch_size=64, with_indices=True, num_proc=num_proc, desc=desc)


def add_example_ids(dataset):
    return dataset.map(lambda _, indices: {"example_id": indices}, with_indices=True, batched=True)


def collate_pixel_batch(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-example tensors into a batch for the model (like the reference image-classification script)."""
    import torch  # deferred: torch takes seconds; the decode cache and checks run without it

    with one_intraop_thread():
        batch = {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([example["labels"] for example in examples], dtype=torch.long)
    return batch


def decode_for_model(dataset, preprocessor: Preprocessor, cache: bool = True, num_proc: int | None = None,
                     desc: str = "Decoding images"):
    """Every image decoded once into the float16 cache (`cache`), or only numbered for decoding on access."""
    if cache:
        return cache_gray_pixels(dataset, preprocessor, num_proc=num_proc, desc=desc)
    return add_example_ids(dataset)


def with_pixel_transform(decoded, preprocessor: Preprocessor, augmenter: Augmenter | None = None):
    """A decoded split (or any `select` of one) as the Trainer reads it: pixel values and labels on access."""
    return decoded.with_transform(BPSTransform(preprocessor, augmenter))


def prepare_for_model(
    dataset,
    preprocessor: Preprocessor,
    augmenter: Augmenter | None = None,
    cache: bool = True,
    num_proc: int | None = None,
    desc: str = "Decoding images",
):
    """A split ready for the Trainer: cached (optional) and transformed on access."""
    return with_pixel_transform(decode_for_model(dataset, preprocessor, cache, num_proc, desc), preprocessor, augmenter)


def labels_and_conditions(dataset) -> tuple[np.ndarray, list[str]]:
    """The labels and conditions of a split, read without touching pixels."""
    columns = dataset.select_columns(["label", "condition"]).to_dict()
    return np.asarray(columns["label"], dtype=np.int64), list(columns["condition"])
