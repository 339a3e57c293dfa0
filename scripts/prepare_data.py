#!/usr/bin/env python
"""Build data/bps/{train,validation,test}/{Fe,X-ray}/ (+ sham/, manifest.csv, split_report.json).

    python scripts/prepare_data.py --source synthetic --num_images 2400
    python scripts/prepare_data.py --source s3 --max_per_condition 2000
    python scripts/prepare_data.py configs/prepare_real.yaml [--seed 7 ...]
"""

import logging
import sys

from bps_vit.bps import MetadataError
from bps_vit.cli import EXIT_FAILURE, EXIT_USAGE, parse_args, set_library_progress_bars
from bps_vit.disk import InsufficientSpaceError
from bps_vit.fetch import FetchError
from bps_vit.prepare import PrepareArgumentError, PrepareDataArguments, prepare_data
from bps_vit.split import SplitError

#: Non-standard images listed one per line in the summary; the rest are counted (all are in split_report.json).
SHOWN_NON_STANDARD = 10


def print_non_standard(images: list[dict]) -> None:
    """Images that went into a split but are not single-channel 16-bit BPS-shaped crops: the model trains on them."""
    if not images:
        return
    print(f"  {len(images)} non-standard image(s) were put into the splits (not single-channel 16-bit BPS crops):")
    for image in images[:SHOWN_NON_STANDARD]:
        why = image.get("warning") or image["format"]
        print(f"    {image['split']}/{image['filename']} ({image['format']}): {why}")
    if len(images) > SHOWN_NON_STANDARD:
        print(f"    ... and {len(images) - SHOWN_NON_STANDARD} more, listed in split_report.json (non_standard_images)")


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 ok, 1 runtime failure (bad metadata, network, disk), 2 usage error (flags, folders)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        (args,) = parse_args([PrepareDataArguments], argv)
        if args.disable_tqdm:
            set_library_progress_bars(False)  # --source hf: the snapshot download's bars
        report = prepare_data(args)
    except (PrepareArgumentError, SplitError) as err:  # a flag or folder to fix: no traceback
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (MetadataError, FetchError, InsufficientSpaceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    counts = report["counts"]
    print(f"Prepared {report['output_dir']} (split by {report['split_by']}, seed {report['seed']}):")
    for split in ("train", "validation", "test", "sham"):
        print(f"  {split:<10} {counts[split]['total']:>7} images  {report['counts_by_label'][split]}")
    print(f"  achieved fractions {report['achieved_fractions']}, group overlap {report['group_overlap_total']}")
    print(f"  rejected metadata rows {report['num_rejected_rows']}, skipped files {report['num_skipped_files']} "
          f"{report['skipped_by_reason']}, unlisted files {report['num_unlisted_files']}")
    print_non_standard(report["non_standard_images"])
    for note in report["notes"]:
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
