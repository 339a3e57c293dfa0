"""The Hub mirror of BPS (`--source hf`): download its label folders and read rows out of them.

The mirror (`kenobi/GeneLab_BPS_BenchmarkData`) holds the same crops as the bucket but no
meta.csv: its only label is the folder a file sits in, and dose and hour are unknown unless
the bucket's meta.csv is supplied. So instead of fetching files by name (`fetch.py`) we take a
`huggingface_hub` snapshot and build rows by walking it, setting aside with a reason every file
that is not a uniquely placed BPS image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from huggingface_hub import snapshot_download

from .bps import FILENAME_PATTERN, LABELS, MetadataError, MetaRow, MetaTable
from .fetch import FetchError
from .hf_env import hub_offline

HF_REPO_ID = "kenobi/GeneLab_BPS_BenchmarkData"
#: Hub mirror folder -> label. The mirror has no meta.csv; the folder is the only label it carries.
HF_LABEL_FOLDERS: dict[str, str] = {"High_Energy_Ion_Fe_Nuclei": "Fe", "XRay_irradiated_Nuclei": "X-ray"}


def hf_allow_patterns(particles: Sequence[str] | None = None) -> list[str]:
    """Only the label folders asked for (both by default): no README/.DS_Store, no other labels."""
    wanted = set(particles or LABELS)
    return [f"{folder}/*" for folder, label in HF_LABEL_FOLDERS.items() if label in wanted]


def fetch_hf_snapshot(
    raw_dir: str | Path,
    *,
    repo_id: str = HF_REPO_ID,
    revision: str | None = None,
    particles: Sequence[str] | None = None,
    download_fn: Callable[..., str] | None = None,
    max_workers: int = 8,
) -> Path:
    """Download the Hub mirror's label folders into `raw_dir` with `huggingface_hub.snapshot_download`.

    `download_fn` defaults to `snapshot_download`; tests inject one that copies a local folder.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    download_fn = download_fn or snapshot_download
    patterns = hf_allow_patterns(particles)
    try:
        path = download_fn(repo_id=repo_id, repo_type="dataset", revision=revision, local_dir=str(raw_dir),
                           allow_patterns=patterns, max_workers=max_workers)
    except Exception as err:
        hint = (" HF_HUB_OFFLINE is set: unset it to download, or point --raw_dir at an existing snapshot."
                if hub_offline() else " Check the network, --hf_repo_id and --hf_revision.")
        raise FetchError(f"Could not download the Hub dataset {repo_id} into {raw_dir}: "
                         f"{type(err).__name__}: {str(err).rstrip('.')}.{hint}") from err
    return Path(path) if path else raw_dir


def has_hf_layout(folder: str | Path) -> bool:
    folder = Path(folder)
    return any((folder / name).is_dir() for name in HF_LABEL_FOLDERS)


#: Dose and hour of a row whose source does not record them (the Hub mirror has only the label folders).
UNKNOWN_DOSE = float("nan")
UNKNOWN_HOUR = -1


@dataclass
class ScannedFolder:
    """Rows built from a Hub-mirror-shaped folder, where each file really is, and what was set aside."""

    rows: list[MetaRow]
    sources: dict[str, Path]
    rejected: list[tuple[int | None, str, str]]  # (line or None, path relative to the folder, reason)
    notes: list[str]


def scan_hf_folder(root: str | Path, meta: MetaTable | None = None) -> ScannedFolder:
    """Build rows from `<root>/{High_Energy_Ion_Fe_Nuclei,XRay_irradiated_Nuclei}/**/<BPS name>`.

    The label comes from the folder. Dose and hour are unknown (NaN / -1) unless `meta` (a real
    meta.csv) is given, in which case they are looked up by filename and a label disagreeing with
    the folder is rejected. A name found under both label folders is rejected: its label is ambiguous.
    """
    root = Path(root)
    if not has_hf_layout(root):
        raise MetadataError(
            f"{root}: no {' or '.join(HF_LABEL_FOLDERS)} folder. --source hf expects a snapshot of {HF_REPO_ID}; "
            "download it (unset HF_HUB_OFFLINE) or point --raw_dir at such a snapshot."
        )
    found, rejected = _find_label_files(root)
    by_name = {row.filename: row for row in meta.rows} if meta is not None else {}
    rows: list[MetaRow] = []
    sources: dict[str, Path] = {}
    unmatched = 0
    for name in sorted(found):
        places = found[name]
        if len(places) > 1:  # a name under both label folders has two places, so this also catches that case
            where = ", ".join(p.relative_to(root).as_posix() for _, p in places)
            rejected.append((None, name, f"duplicated filename ({where}); label ambiguous, left out"))
            continue
        label, path = places[0]
        known = by_name.get(name)
        if meta is not None and known is None:
            unmatched += 1
        if known is not None and known.particle_type != label:
            rejected.append((None, name, f"meta.csv says {known.particle_type} but the file is in the {label} folder"))
            continue
        rows.append(known if known is not None else MetaRow(name, UNKNOWN_DOSE, label, UNKNOWN_HOUR))
        sources[name] = path
    return ScannedFolder(rows=rows, sources=sources, rejected=rejected, notes=_scan_notes(meta, unmatched))


def _find_label_files(root: Path) -> tuple[dict[str, list[tuple[str, Path]]], list[tuple[int | None, str, str]]]:
    """(BPS name -> [(label, path)] for every place it occurs, rejected files): a walk of both label folders.

    Hidden files, foreign names and symlinks out of the snapshot are set aside with the reason; duplicates are
    kept with all their places so that the caller can say where they are.
    """
    found: dict[str, list[tuple[str, Path]]] = {}
    rejected: list[tuple[int | None, str, str]] = []
    for folder, label in HF_LABEL_FOLDERS.items():
        base = root / folder
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                relative = path.relative_to(root).as_posix()
                if name.startswith("."):
                    rejected.append((None, relative, "hidden file (e.g. .DS_Store), not an image"))
                elif not FILENAME_PATTERN.fullmatch(name):
                    why = "not a BPS image filename (P<plate>_<acq>-<well>_<field>_<object>_proj.tif)"
                    rejected.append((None, relative, why))
                elif path.is_symlink() and root.resolve() not in path.resolve().parents:
                    rejected.append((None, relative, "symlink pointing outside the snapshot"))
                else:
                    found.setdefault(name, []).append((label, path))
    return found, rejected


def _scan_notes(meta: MetaTable | None, unmatched: int) -> list[str]:
    """What the split report must say about the metadata the mirror could not provide."""
    if meta is None:
        return [
            "Source hf has no meta.csv: dose_Gy and hr_post_exposure are unknown (NaN / -1). Sham (0 Gy) images "
            "cannot be identified, so they are inside the Fe/X-ray classes, and --test_hours/--doses/--hours cannot "
            "be used. Pass --meta_csv with the bucket's meta.csv to recover them."
        ]
    if unmatched:
        return [f"{unmatched} mirror file(s) are not in the given meta.csv: their dose/hour are unknown (NaN / -1)."]
    return []
