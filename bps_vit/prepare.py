"""`prepare_data`: source -> raw flat folder -> filters -> checked, group-aware split in `data/bps`.

One entry point for the four sources, so every source goes through the same validation,
filtering, image checks and split: `s3` (the public bucket over anonymous HTTPS), `hf` (the
Hub mirror, labels from folder names), `local` (a folder `aws s3 sync` produced) and
`synthetic` (the offline stand-in with ground-truth masks). The arguments are an
`HfArgumentParser` dataclass so the script, a YAML/JSON file and Python callers share them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Literal, Optional

from . import synthetic
from .bps import MetadataError, read_meta_csv
from .cli import DISABLE_TQDM_HELP
from .disk import check_free_space
from .fetch import DEFAULT_BASE_URL, META_FILENAME, RetryPolicy, download_files, fetch_meta_csv, safe_destination
from .hf_env import hub_offline
from .hf_mirror import HF_REPO_ID, fetch_hf_snapshot, has_hf_layout, scan_hf_folder
from .imaging import IMAGE_SUFFIXES
from .prepared_folder import check_output_dir, write_split
from .split import SplitConfig, SplitError, select_rows
from .synthetic_config import BATCH_EFFECT_RETIRED, SyntheticConfig, SyntheticConfigError, knob_help

logger = logging.getLogger(__name__)

SOURCES = ("synthetic", "s3", "hf", "local")
#: The SyntheticConfig knobs prepare_data exposes (None = SyntheticConfig's default); --seed is shared with the split.
SYNTHETIC_KNOBS = ("num_images", "difficulty", "campaign_effect", "plate_effect", "plates_per_condition",
                   "wells_per_plate")
#: Rough bytes per synthetic image + mask, for the free-space check.
SYNTHETIC_BYTES_PER_IMAGE = 200 * 1024


class PrepareArgumentError(ValueError):
    """A flag value that cannot work; the message names the flag and the fix."""


def _synthetic_help(name: str) -> str:
    default = SyntheticConfig.__dataclass_fields__[name].default
    return f"Source synthetic: {knob_help(name)} (SyntheticConfig default: {default})"


@dataclass
class PrepareDataArguments:
    """Arguments of `scripts/prepare_data.py` (flags, or one .yaml/.json file with the same keys)."""

    source: Literal["synthetic", "s3", "hf", "local"] = field(
        default="synthetic",
        metadata={"help": "Where the images come from: synthetic (offline stand-in), s3 (NASA bucket over HTTPS), "
                          "hf (Hub mirror kenobi/GeneLab_BPS_BenchmarkData), local (a flat folder with meta.csv)."},
    )
    output_dir: str = field(default="data/bps", metadata={"help": "Prepared folder to (re)write."})
    raw_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Raw flat folder (meta.csv + *.tif). Default data/raw/<source>. Required for local; for hf "
                          "it may be an already-downloaded snapshot."},
    )
    base_url: str = field(default=DEFAULT_BASE_URL, metadata={"help": "S3 bucket prefix (source s3)."})
    hf_repo_id: str = field(default=HF_REPO_ID, metadata={"help": "Hub dataset (source hf)."})
    hf_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision to pin (source hf)."})
    meta_csv: Optional[str] = field(
        default=None,
        metadata={"help": "Source hf: a BPS meta.csv to recover dose and hour by filename (the mirror has none)."},
    )
    num_images: Optional[int] = field(default=None, metadata={"help": _synthetic_help("num_images")})
    difficulty: Optional[float] = field(default=None, metadata={"help": _synthetic_help("difficulty")})
    campaign_effect: Optional[float] = field(default=None, metadata={"help": _synthetic_help("campaign_effect")})
    plate_effect: Optional[float] = field(default=None, metadata={"help": _synthetic_help("plate_effect")})
    plates_per_condition: Optional[int] = field(
        default=None, metadata={"help": _synthetic_help("plates_per_condition")}
    )
    wells_per_plate: Optional[int] = field(default=None, metadata={"help": _synthetic_help("wells_per_plate")})
    batch_effect: Optional[float] = field(
        default=None, metadata={"help": "Retired: use --campaign_effect and --plate_effect (docs/synthetic.md)."}
    )
    particles: Optional[list[str]] = field(default=None, metadata={"help": "Keep only these labels (Fe, X-ray)."})
    doses: Optional[list[float]] = field(default=None, metadata={"help": "Keep only these doses in Gy."})
    hours: Optional[list[int]] = field(default=None, metadata={"help": "Keep only these hours post exposure."})
    max_per_condition: Optional[int] = field(
        default=None,
        metadata={"help": "Stratified subsample: at most N images per particle x dose x hour (e.g. 2000)."},
    )
    split_by: Literal["image", "field", "well", "plate"] = field(
        default="field",
        metadata={"help": "Group kept whole within one split (field: neighbouring crops share pixels)."},
    )
    train_fraction: float = field(default=0.7, metadata={"help": "Share of images in train."})
    validation_fraction: float = field(default=0.15, metadata={"help": "Share of images in validation."})
    test_fraction: float = field(
        default=0.15, metadata={"help": "Share of images in test (ignored with --test_hours)."}
    )
    test_hours: Optional[list[int]] = field(
        default=None, metadata={"help": "Put whole time points (e.g. 48) in test, and only there."}
    )
    include_sham: bool = field(
        default=False,
        metadata={"help": "Keep 0 Gy images in the Fe/X-ray classes instead of sham/ (original grouping)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for subsampling, splitting and synthetic data."})
    num_workers: int = field(default=16, metadata={"help": "Parallel downloads / image checks."})
    max_retries: int = field(default=5, metadata={"help": "Tries per file before it is reported as failed."})
    retry_backoff: float = field(default=0.5, metadata={"help": "First backoff in seconds (doubles per retry)."})
    timeout: float = field(default=60.0, metadata={"help": "Per-request read timeout in seconds."})
    link_mode: Literal["hardlink", "copy"] = field(
        default="hardlink", metadata={"help": "Place images by hard link (no extra space; falls back to copy) or copy."}
    )
    verify_images: bool = field(
        default=True, metadata={"help": "Decode every image before splitting (corrupt ones are skipped and reported)."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": DISABLE_TQDM_HELP})

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise PrepareArgumentError(f"--source {self.source!r}: choose one of {list(SOURCES)}.")
        if self.source == "local" and not self.raw_dir:
            raise PrepareArgumentError(
                "--source local needs --raw_dir pointing at a folder with meta.csv and the *.tif files."
            )
        for name in ("num_workers", "max_retries", "num_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PrepareArgumentError(f"--{name} must be >= 1; got {getattr(self, name)}.")
        if self.max_per_condition is not None and self.max_per_condition < 1:
            raise PrepareArgumentError(f"--max_per_condition must be >= 1; got {self.max_per_condition}.")
        if self.timeout <= 0 or self.retry_backoff < 0:
            raise PrepareArgumentError("--timeout must be > 0 and --retry_backoff >= 0.")
        if self.meta_csv and self.source != "hf":
            raise PrepareArgumentError("--meta_csv is only for --source hf; other sources read <raw_dir>/meta.csv.")
        if self.batch_effect is not None:
            raise PrepareArgumentError(f"--batch_effect: {BATCH_EFFECT_RETIRED}")
        if self.source == "synthetic":
            self.synthetic_config()  # bad knob values stop here, before anything is written

    def synthetic_config(self) -> SyntheticConfig:
        """The generator's settings: the synthetic knobs given, SyntheticConfig's defaults for the rest."""
        overrides = {name: getattr(self, name) for name in SYNTHETIC_KNOBS if getattr(self, name) is not None}
        try:
            return SyntheticConfig(seed=self.seed, **overrides)
        except SyntheticConfigError as err:  # every knob it checks that prepare_data exposes is a flag of that name
            raise PrepareArgumentError(f"--{err.setting}: {err.reason} (--source synthetic).") from None

    @property
    def resolved_raw_dir(self) -> Path:
        return Path(self.raw_dir) if self.raw_dir else Path("data") / "raw" / self.source

    def split_config(self) -> SplitConfig:
        return SplitConfig(
            split_by=self.split_by,
            train_fraction=self.train_fraction,
            validation_fraction=self.validation_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            test_hours=tuple(self.test_hours or ()),
            include_sham=self.include_sham,
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_retries, backoff_seconds=self.retry_backoff, read_timeout=self.timeout)


def _unlisted_files(raw_dir: Path, listed: set[str]) -> list[str]:
    """Image files in the flat raw folder that meta.csv does not mention: reported, never used."""
    out = []
    for entry in os.scandir(raw_dir):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.name not in listed:
            out.append(entry.name)
    return sorted(out)


def _flat_sources(raw_dir: Path, filenames: list[str]) -> tuple[dict[str, Path], dict[str, tuple[str, str]]]:
    sources, unsafe = {}, {}
    for name in filenames:
        try:
            sources[name] = safe_destination(raw_dir, name)
        except MetadataError as err:
            unsafe[name] = ("unsafe-path", str(err))
    return sources, unsafe


def _generate_synthetic(args: PrepareDataArguments, raw_dir: Path) -> dict:
    """Generate the synthetic raw folder, or reuse it when it was generated with the same settings.

    The generator records its settings in `synthetic_config.json`; a folder without that file is
    not ours to overwrite.
    """
    config = args.synthetic_config()
    settings = json.loads(json.dumps(asdict(config), default=str))
    settings.pop("num_workers", None)  # the images do not depend on it
    record = raw_dir / synthetic.CONFIG_FILENAME
    if record.is_file() and (raw_dir / META_FILENAME).is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        previous_config = dict(previous.get("config") or {})
        previous_config.pop("num_workers", None)
        if previous_config == settings and previous.get("version") == synthetic.GENERATOR_VERSION:
            logger.info("Reusing the synthetic images in %s (generated with the same settings).", raw_dir)
            return settings
    if raw_dir.exists() and any(raw_dir.iterdir()):
        if not record.is_file():
            raise SplitError(
                f"--raw_dir {raw_dir} is not empty and was not written by --source synthetic (no "
                f"{synthetic.CONFIG_FILENAME}); refusing to write synthetic images into it. Choose an empty --raw_dir "
                "(default data/raw/synthetic)."
            )
        shutil.rmtree(raw_dir)  # an earlier synthetic folder with other settings: start clean, no stale images
    raw_dir.mkdir(parents=True, exist_ok=True)
    check_free_space(raw_dir, config.num_images * SYNTHETIC_BYTES_PER_IMAGE,
                     what=f"generating {config.num_images} synthetic images")
    logger.info("Generating %d synthetic BPS-like images in %s", config.num_images, raw_dir)
    synthetic.generate_dataset(raw_dir, config, progress=not args.disable_tqdm)
    return settings


def _read_hf(args: PrepareDataArguments, raw_dir: Path, provenance: dict, notes: list[str],
             hf_download: Callable[..., str] | None):
    """Source hf: the mirror snapshot (downloaded unless offline with one on disk); labels from folder names."""
    if hf_download is not None or not (has_hf_layout(raw_dir) and hub_offline()):
        raw_dir = fetch_hf_snapshot(raw_dir, repo_id=args.hf_repo_id, revision=args.hf_revision,
                                    particles=args.particles, download_fn=hf_download)
    else:
        logger.info("HF_HUB_OFFLINE is set: using the snapshot already in %s", raw_dir)
    provenance.update(hf_repo_id=args.hf_repo_id, hf_revision=args.hf_revision, meta_csv=args.meta_csv)
    scanned = scan_hf_folder(raw_dir, read_meta_csv(args.meta_csv) if args.meta_csv else None)
    notes += scanned.notes
    return raw_dir, scanned.rows, scanned.rejected, scanned.sources


def _read_flat_meta(args: PrepareDataArguments, raw_dir: Path, provenance: dict):
    """Sources synthetic, local and s3: a flat folder with meta.csv (generated, given or fetched first)."""
    if args.source == "synthetic":
        provenance["synthetic"] = _generate_synthetic(args, raw_dir)
    elif args.source == "local" and not raw_dir.is_dir():
        raise SplitError(f"--raw_dir {raw_dir} does not exist; point it at a folder with meta.csv and the *.tif files.")
    elif args.source == "s3":
        provenance["base_url"] = args.base_url
        fetch_meta_csv(args.base_url, raw_dir, policy=args.retry_policy())
    table = read_meta_csv(raw_dir / META_FILENAME)
    if not table.rows:
        raise SplitError(f"{raw_dir / META_FILENAME}: no usable rows ({len(table.rejected)} rejected, e.g. "
                         f"{table.rejected[:3]}). Fix the file.")
    return table


def _download_selection(args: PrepareDataArguments, raw_dir: Path, names: list[str], provenance: dict,
                        notes: list[str]) -> dict[str, tuple[str, str]]:
    """Source s3: fetch only the selected files; failures become known skips (filename -> (category, reason))."""
    summary = download_files(args.base_url, names, raw_dir, num_workers=args.num_workers,
                             policy=args.retry_policy(), disable_tqdm=args.disable_tqdm)
    provenance["fetch"] = summary.to_dict()
    if summary.failed:
        notes.append(f"{len(summary.failed)} download(s) failed after retries (listed in skipped_files); "
                     "re-run the same command to fetch only those.")
    return {n: ("download-failed", why) for n, why in summary.failed.items()}


def _log_rejected(rejected: list) -> None:
    for line, name, reason in rejected[:10]:
        logger.warning("Rejected metadata row %s %r: %s", line if line is not None else "-", name, reason)
    if len(rejected) > 10:
        logger.warning("... and %d more rejected rows (all listed in split_report.json)", len(rejected) - 10)


def prepare_data(args: PrepareDataArguments, *, hf_download: Callable[..., str] | None = None) -> dict:
    """Run source -> raw folder -> filters -> split; return the split report (also in split_report.json).

    `hf_download` replaces `huggingface_hub.snapshot_download` (same keyword arguments) for tests.
    """
    raw_dir = args.resolved_raw_dir
    config = args.split_config()  # validate split flags before any download
    check_output_dir(args.output_dir, protected=[raw_dir])
    filters = dict(particles=args.particles, doses=args.doses, hours=args.hours,
                   max_per_condition=args.max_per_condition, seed=args.seed)
    provenance: dict = {"source": args.source, "raw_dir": str(raw_dir), "filters": dict(filters)}
    notes: list[str] = []
    known_failures: dict[str, tuple[str, str]] = {}
    masks_dir, unlisted = None, []
    if args.source == "hf":
        raw_dir, rows, rejected, sources = _read_hf(args, raw_dir, provenance, notes, hf_download)
        selection = select_rows(rows, **filters)
    else:
        table = _read_flat_meta(args, raw_dir, provenance)
        rejected = table.rejected
        selection = select_rows(table.rows, **filters)
        names = [r.filename for r in selection.rows]
        if args.source == "s3":
            known_failures.update(_download_selection(args, raw_dir, names, provenance, notes))
        sources, unsafe = _flat_sources(raw_dir, names)
        known_failures.update(unsafe)
        unlisted = _unlisted_files(raw_dir, {r.filename for r in table.rows})
        masks_dir = raw_dir / "masks"
    _log_rejected(rejected)
    provenance["selection"] = {
        "selected": len(selection.rows),
        "filtered_out": selection.filtered_out,
        "available_per_condition": selection.available_per_condition,
        "selected_per_condition": selection.selected_per_condition,
    }
    provenance["arguments"] = {f.name: getattr(args, f.name) for f in fields(args)}
    return write_split(
        selection.rows, sources, args.output_dir, config, masks_dir=masks_dir, rejected_rows=rejected,
        known_failures=known_failures, unlisted_files=unlisted, protected_dirs=[raw_dir], link_mode=args.link_mode,
        verify_images=args.verify_images, num_workers=min(args.num_workers, 32), disable_tqdm=args.disable_tqdm,
        provenance=provenance, notes=notes,
    )
