"""The prepared folder `data/bps`: every image checked, the split placed by hard link or copy, manifest and report.

`split.plan_split` decides where each image goes (pure, metadata only); this module makes it so on
disk. Files that cannot be used are skipped and listed in `split_report.json`, never dropped
silently; images are hard-linked (or copied) byte for byte, nothing is converted; and the folder
is built under a hidden staging name and swapped in at the end, so an interrupted run never leaves
a half-written dataset and a re-run replaces only a folder that is a prepared folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from .bps import LABELS, MetaRow
from .disk import check_free_space, same_device
from .image_checks import ImageCheck, check_images
from .manifest import (
    MANIFEST_NAME,
    REPORT_NAME,
    SHAM_SPLIT,
    SKIPPED,
    SPLITS,
    manifest_row,
    write_manifest,
    write_report,
)
from .split import SplitConfig, SplitError, SplitPlan, check_plan, plan_split

logger = logging.getLogger(__name__)


def _is_prepared_folder(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).is_file() or (folder / REPORT_NAME).is_file()


def check_output_dir(output_dir: str | Path, protected: Iterable[str | Path] = ()) -> Path:
    """The output folder may be new, empty or a previous prepared folder (replaced); nothing else is touched."""
    output_dir = Path(output_dir).absolute()
    real_output = output_dir.resolve()
    for other in protected:
        other = Path(other).resolve()
        if other == real_output or real_output in other.parents or other in real_output.parents:
            raise SplitError(
                f"--output_dir {output_dir} and the raw folder {other} overlap; a re-run replaces the output folder, "
                "so they must be separate (e.g. data/bps and data/raw/<source>)."
            )
    if output_dir.exists():
        if not output_dir.is_dir():
            raise SplitError(f"--output_dir {output_dir} exists and is not a folder; choose another --output_dir.")
        if any(output_dir.iterdir()) and not _is_prepared_folder(output_dir):
            raise SplitError(
                f"--output_dir {output_dir} is not empty and is not a prepared BPS folder (no {MANIFEST_NAME}); "
                "refusing to replace it. Choose an empty or new --output_dir."
            )
    return output_dir


def _place(source: Path, dest: Path, link_mode: str) -> str:
    """Hard-link (no extra space, same bytes) or copy; returns what was done."""
    if link_mode == "hardlink":
        try:
            os.link(source, dest)
            return "hardlink"
        except OSError:
            pass
    shutil.copyfile(source, dest)
    return "copy"


def _usable_rows(rows: list[MetaRow], sources: Mapping[str, Path], known_failures: Mapping[str, tuple[str, str]],
                 verify_images: bool, num_workers: int, disable_tqdm: bool):
    """(checks by filename, usable rows, skipped checks): every image read once; unusable ones logged."""
    to_check = [r.filename for r in rows if r.filename not in known_failures]
    checks = check_images(to_check, sources, decode=verify_images, num_workers=num_workers, disable_tqdm=disable_tqdm)
    for name, (category, reason) in known_failures.items():
        checks[name] = ImageCheck(name, category, reason)
    good_rows = [r for r in rows if checks[r.filename].ok]
    skipped = [checks[r.filename] for r in rows if not checks[r.filename].ok]
    if not good_rows:
        raise SplitError(
            f"None of the {len(rows)} selected images is usable ({dict(Counter(c.category for c in skipped))}); "
            "see the reasons above, fix the raw folder or re-fetch."
        )
    for check in skipped[:20]:
        logger.warning("Skipping %s: %s", check.filename, check.reason)
    if len(skipped) > 20:
        logger.warning("... and %d more skipped files (all listed in %s)", len(skipped) - 20, REPORT_NAME)
    return checks, good_rows, skipped


def _place_images(staging: Path, plan: SplitPlan, good_rows: list[MetaRow], sources: Mapping[str, Path],
                  checks: Mapping[str, ImageCheck], masks_dir: Path | None, link_mode: str, disable_tqdm: bool):
    """Link or copy each image (and its mask) into `staging`; returns (manifest rows, placed modes, masks missing)."""
    has_sham = any(plan.split_of[r.filename] == SHAM_SPLIT for r in good_rows)
    for split in (*SPLITS, SHAM_SPLIT) if has_sham else SPLITS:
        for label in LABELS:
            (staging / split / label).mkdir(parents=True, exist_ok=True)
    if masks_dir is not None:
        (staging / "masks").mkdir(parents=True, exist_ok=True)
    manifest, placed_modes, masks_missing = [], Counter(), []
    for row in tqdm(good_rows, unit="img", desc="Writing split", disable=disable_tqdm):
        split = plan.split_of[row.filename]
        relative = f"{split}/{row.particle_type}/{row.filename}"
        placed_modes[_place(sources[row.filename], staging / relative, link_mode)] += 1
        if masks_dir is not None:
            mask = masks_dir / row.filename
            if mask.is_file() and not mask.is_symlink():
                _place(mask, staging / "masks" / row.filename, link_mode)
            else:
                masks_missing.append(row.filename)
        manifest.append(manifest_row(row, split, checks[row.filename].sha256, relative))
    return manifest, placed_modes, masks_missing


def write_split(
    rows: Sequence[MetaRow],
    sources: Mapping[str, Path],
    output_dir: str | Path,
    config: SplitConfig | None = None,
    *,
    masks_dir: str | Path | None = None,
    rejected_rows: Sequence[tuple[int | None, str, str]] = (),
    known_failures: Mapping[str, tuple[str, str]] | None = None,
    unlisted_files: Sequence[str] = (),
    protected_dirs: Sequence[str | Path] = (),
    link_mode: str = "hardlink",
    verify_images: bool = True,
    num_workers: int = 8,
    disable_tqdm: bool = False,
    provenance: Mapping | None = None,
    notes: Sequence[str] = (),
) -> dict:
    """Check, plan and write the prepared folder; return the split report (also saved as split_report.json).

    `rows` are validated metadata rows and `sources` maps each filename to its file. Files that
    cannot be used are skipped and listed (`known_failures` adds ones already known, e.g. failed
    downloads: filename -> (category, reason)). The folder is built under a hidden staging name
    and swapped in at the end, so an interrupted run never leaves a half-written dataset.
    """
    if link_mode not in ("hardlink", "copy"):
        raise SplitError(f"--link_mode must be hardlink or copy; got {link_mode!r}.")
    output_dir = check_output_dir(output_dir, protected_dirs)
    config = config or SplitConfig()
    rows = sorted(rows, key=lambda r: r.filename)
    checks, good_rows, skipped = _usable_rows(rows, sources, dict(known_failures or {}), verify_images, num_workers,
                                              disable_tqdm)
    plan = plan_split(good_rows, config)
    check_plan(plan)
    _check_copy_space(good_rows, sources, checks, output_dir, link_mode)

    staging = _fresh_staging(output_dir)
    masks_dir = Path(masks_dir) if masks_dir is not None and Path(masks_dir).is_dir() else None
    try:
        manifest, placed_modes, masks_missing = _place_images(
            staging, plan, good_rows, sources, checks, masks_dir, link_mode, disable_tqdm
        )
        write_manifest(staging, _with_skipped(manifest, rows, skipped))
        masks_copied = len(good_rows) - len(masks_missing) if masks_dir is not None else 0
        report = _build_report(
            plan, checks, good_rows, skipped, rejected_rows, unlisted_files, placed_modes, masks_dir,
            masks_copied, masks_missing, provenance, [*notes, *plan.notes], output_dir,
        )
        write_report(staging, report)
        _swap_in(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = ", ".join(f"{s} {report['counts'][s]['total']}" for s in SPLITS)
    logger.info("Wrote %s: %s; sham %d; skipped %d; group overlap %d", output_dir, counts,
                report["counts"][SHAM_SPLIT]["total"], len(skipped), report["group_overlap_total"])
    return report


def _check_copy_space(good_rows: list[MetaRow], sources: Mapping[str, Path], checks: Mapping[str, ImageCheck],
                      output_dir: Path, link_mode: str) -> None:
    """Hard links cost nothing; copies (another disk, or --link_mode copy) need the bytes, plus 5%."""
    if link_mode == "copy" or not same_device({sources[r.filename].parent for r in good_rows}, output_dir.parent):
        needed = sum(checks[r.filename].nbytes for r in good_rows)
        check_free_space(output_dir, int(needed * 1.05), what=f"copying {len(good_rows)} images")


def _with_skipped(manifest: list[dict], rows: list[MetaRow], skipped: list[ImageCheck]) -> list[dict]:
    """The placed images plus one `skipped` row (no path) per unusable file, in split, label, filename order."""
    row_by_name = {r.filename: r for r in rows}
    manifest = manifest + [manifest_row(row_by_name[c.filename], SKIPPED, c.sha256, "") for c in skipped]
    order = {s: i for i, s in enumerate((*SPLITS, SHAM_SPLIT, SKIPPED))}
    return sorted(manifest, key=lambda m: (order[m["split"]], m["label"], m["filename"]))


def _fresh_staging(output_dir: Path) -> Path:
    """The hidden sibling the new folder is built in (on the same disk, so `_swap_in` is a rename)."""
    staging = output_dir.parent / f".{output_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    return staging


def _swap_in(staging: Path, output_dir: Path) -> None:
    """Replace the previous prepared folder by the new one with renames (no half-old, half-new state)."""
    old = None
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(output_dir, old)
    os.replace(staging, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _duplicate_content(plan: SplitPlan, checks: Mapping[str, ImageCheck], good_rows: list[MetaRow]) -> list[dict]:
    """Sets of byte-identical images (by sha256) and the splits they landed in: a copy across splits is a leak."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for row in good_rows:
        by_hash[checks[row.filename].sha256].append(row.filename)
    duplicate_content = []
    for digest, names in sorted(by_hash.items()):
        if len(names) > 1:
            splits = sorted({plan.split_of[n] for n in names})
            duplicate_content.append({"sha256": digest, "filenames": sorted(names), "splits": splits})
    return duplicate_content


def _build_report(
    plan: SplitPlan, checks, good_rows, skipped, rejected_rows, unlisted_files, placed_modes, masks_dir,
    masks_copied, masks_missing, provenance, notes, output_dir,
) -> dict:
    duplicate_content = _duplicate_content(plan, checks, good_rows)
    across = [d for d in duplicate_content if len(d["splits"]) > 1]
    if across:
        notes = [*notes, f"{len(across)} set(s) of byte-identical images sit in different splits (a leak): "
                         "see duplicate_content; remove the copies from the raw folder."]
    kinds = Counter(checks[r.filename].kind for r in good_rows)
    non_standard = [
        {"filename": r.filename, "format": checks[r.filename].kind, "split": plan.split_of[r.filename],
         "warning": checks[r.filename].warning}
        for r in good_rows
        if checks[r.filename].warning
        or (checks[r.filename].kind and not checks[r.filename].kind.startswith("TIFF uint16 gray"))
    ]
    overlap = plan.group_overlap()
    config = plan.config
    return {
        "output_dir": str(output_dir),
        "provenance": dict(provenance or {}),
        "config": {**asdict(config), "test_hours": list(config.test_hours)},
        "source": (provenance or {}).get("source"),
        "split_by": config.split_by,
        "seed": config.seed,
        "test_hours": list(config.test_hours),
        "include_sham": config.include_sham,
        "target_fractions": {s: round(v, 4) for s, v in plan.target_fractions.items()},
        "achieved_fractions": plan.achieved_fractions(),
        "counts": plan.counts(),
        "counts_by_label": plan.counts_by_label(),
        "groups_per_split": plan.groups_per_split(),
        "group_overlap": overlap,
        "group_overlap_total": sum(overlap.values()),
        "sham_group_overlap": {k: v for k, v in plan.group_overlap(include_sham=True).items() if SHAM_SPLIT in k},
        "strata": dict(sorted(plan.stratum_of_condition.items())),
        "num_images_written": len(good_rows),
        "placed_as": dict(placed_modes),
        "masks": None if masks_dir is None else {"copied": masks_copied, "missing": len(masks_missing),
                                                 "missing_files": masks_missing},
        "image_formats": dict(sorted(kinds.items())),
        "non_standard_images": non_standard,
        "num_rejected_rows": len(rejected_rows),
        "rejected_rows": [{"line": line, "filename": name, "reason": reason} for line, name, reason in rejected_rows],
        "num_skipped_files": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(c.category for c in skipped).items())),
        "skipped_files": [{"filename": c.filename, "category": c.category, "reason": c.reason} for c in skipped],
        "num_unlisted_files": len(unlisted_files),
        "unlisted_files": list(unlisted_files),
        "duplicate_content": duplicate_content,
        "notes": list(notes),
    }
