"""Inference: image files and folders in, one `Prediction` row per file out (and the CSV that holds them).

The preprocessing is the model's own: `imaging.Preprocessor.from_processor` (the `Stretch`
stored in its `preprocessor_config.json`, a float resize to the processor's size, its mean/std),
exactly as in training, so a user never re-types percentiles. Decoding 16-bit TIFFs is the slow
part: on a GPU it runs in DataLoader workers while the GPU runs the forward pass; on a CPU, whose
cores the forward pass already uses, threads decode each batch between forwards
(`default_num_workers`). A file that cannot be read becomes a row with its error in `status`; the run
goes on. Under `accelerate launch --num_processes N` the images are split across processes and
gathered, so every process returns the full list, in input order.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..distributed import distributed_state
from ..image_checks import bps_shape_warnings
from ..imaging import (
    IMAGE_SUFFIXES,
    ImageReadError,
    Preprocessor,
    read_image,
)
from ..model import InferenceModel
from ..threads import map_in_threads, one_intraop_thread

logger = logging.getLogger(__name__)


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


def _predict_local(loaded: InferenceModel, paths, batch_size, num_workers, progress, device) -> list[Prediction]:
    import torch  # deferred: torch takes seconds; scripts/predict.py checks its flags first
    from torch.utils.data import DataLoader  # deferred: as above

    model, preprocessor, labels = loaded.model, loaded.preprocessor, loaded.labels
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
    loaded: InferenceModel,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Predict image files with a loaded model (`model.load_for_inference`, or `InferenceModel.of` for a model loaded
    another way), in input order. Under `accelerate launch`, each process takes its share and the results are
    gathered, so every process returns the full list."""
    state = distributed_state()
    paths = [str(p) for p in paths]
    check_batch_size(batch_size)
    model = loaded.model
    model.eval()
    device = state.device
    if num_workers is None:
        num_workers = default_num_workers(state.num_processes, device.type)
    model.to(device)
    if state.num_processes == 1:
        return _predict_local(loaded, paths, batch_size, num_workers, progress, device)

    from accelerate.utils import gather_object  # deferred: accelerate loads only for a multi-process run

    with state.split_between_processes(list(range(len(paths)))) as mine:
        mine = list(mine)
    local = _predict_local(
        loaded,
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
