"""Which run made a file: the data's and the weights' fingerprints, and the guard that keeps runs apart.

Without it a second training into the folder of an earlier one keeps the old `explain/` and
checkpoints beside the new weights, publishing bundles the two, and `--resume_from_checkpoint last`
picks the old run's checkpoint. Every step therefore records the sha256 of the weights it used, and
training records what defines its run (data and model) in `bps_run.json`, in the output folder and in
each checkpoint, and refuses a folder or checkpoint of another run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

RUN_FILE = "bps_run.json"
WEIGHTS_FILE = "model.safetensors"
# What a training run writes into its output folder; `--overwrite_output_dir` removes exactly these.
RUN_ARTIFACTS = (
    WEIGHTS_FILE, "config.json", "preprocessor_config.json", "training_args.bin", "trainer_state.json",
    "all_results.json", "train_results.json", "eval_results.json", "test_results.json", "bps_results.json",
    RUN_FILE, "README.md", "figures", "explain", "hub_export", "runs", "audit",
)


class RunMismatchError(RuntimeError):
    """An output folder or checkpoint that belongs to another run; the message says how to proceed."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(data_dir: str | Path) -> str | None:
    """sha256 of the prepared folder's manifest.csv, which lists every image with its split and label."""
    path = Path(data_dir) / "manifest.csv"
    return sha256_file(path) if path.is_file() else None


def weights_fingerprint(model_dir: str | os.PathLike) -> str | None:
    """sha256 over the folder's safetensors weights (names and bytes, in name order); None without any.

    It identifies the model a results file belongs to, so files of two runs cannot be mixed unnoticed.
    """
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model: str) -> str | None:
    """The weights' sha256 (`weights_fingerprint`) of a model folder or of a Hub id in the local cache; None when
    neither holds weights (a Hub id never downloaded is not fetched for this)."""
    if Path(model).is_dir():
        return weights_fingerprint(model)
    cached = try_to_load_from_cache(model, "model.safetensors")
    return weights_fingerprint(Path(cached).parent) if isinstance(cached, str) else None


@dataclass(frozen=True)
class RunIdentity:
    """What must be equal for a checkpoint to continue a run: the data and the model it trains."""

    data_fingerprint: str | None
    model: str
    image_size: int | None
    preprocessing: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, folder: str | Path) -> RunIdentity | None:
        path = Path(folder) / RUN_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})

    def write(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / RUN_FILE).write_text(self.to_json())

    def differences(self, other: RunIdentity) -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [key for key in mine if mine[key] != theirs[key]]


def run_artifacts(output_dir: str | Path, artifacts: tuple[str, ...] = RUN_ARTIFACTS) -> list[str]:
    """Names of an earlier run's files in `output_dir`, checkpoints first (`artifacts`: what such a run writes)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    checkpoints = sorted(p.name for p in folder.glob("checkpoint-*") if p.is_dir())
    return checkpoints + [name for name in artifacts if (folder / name).exists()]


def check_output_dir(output_dir: str | Path, identity: RunIdentity, *, overwrite: bool, resume: bool,
                     artifacts: tuple[str, ...] = RUN_ARTIFACTS) -> bool:
    """Decide, without changing anything, what to do with an existing `output_dir`.

    Returns True when the earlier run's files must be removed first (`--overwrite_output_dir`);
    raises `RunMismatchError` when the folder holds another run and neither flag says what to do.
    """
    found = run_artifacts(output_dir, artifacts)
    if not found or overwrite:
        return bool(found)
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    if not resume:
        raise RunMismatchError(
            f"--output_dir {output_dir} holds an earlier run ({shown}). Use --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint last to continue it, or another --output_dir."
        )
    check_same_run(Path(output_dir), identity)
    return False


def check_same_run(folder: Path, identity: RunIdentity) -> None:
    """A checkpoint (or output folder) continues this run only if its data and model are this run's."""
    recorded = RunIdentity.read(folder)
    if recorded is None and folder.name.startswith("checkpoint-"):
        recorded = RunIdentity.read(folder.parent)  # killed between the Trainer's save and our callback's
    if recorded is None:
        raise RunMismatchError(
            f"{folder} has no {RUN_FILE}, so it cannot be shown to belong to this run (data, model). "
            "Start afresh with --overwrite_output_dir, or use another --output_dir."
        )
    different = recorded.differences(identity)
    if different:
        raise RunMismatchError(
            f"{folder} belongs to another run: its {', '.join(different)} differ from this command's. "
            "Resume it with the command that started it, or start afresh with --overwrite_output_dir."
        )


def clear_run(output_dir: str | Path, artifacts: tuple[str, ...] = RUN_ARTIFACTS) -> list[str]:
    """Remove an earlier run's files (and only those) from `output_dir`; returns what was removed."""
    folder = Path(output_dir)
    removed = run_artifacts(folder, artifacts)
    for name in removed:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed
