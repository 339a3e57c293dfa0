#!/usr/bin/env python
"""Build data/bps/{train,validation,test}/{Fe,X-ray}/ (+ sham/, manifest.csv, split_report.json).

    python scripts/prepare_data.py --source synthetic --num_images 2400
    python scripts/prepare_data.py --source s3 --max_per_condition 2000
    python scripts/prepare_data.py configs/prepare_real.yaml [--seed 7 ...]
"""

import logging
import sys

from bps_vit.cli import EXIT_FAILURE, EXIT_USAGE, parse_args
from bps_vit.disk import InsufficientSpaceError
from bps_vit.fetch import FetchError
from bps_vit.meta import MetadataError
from bps_vit.prepare import PrepareArgumentError, PrepareDataArguments, prepare_data
from bps_vit.split import SplitError


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 ok, 1 runtime failure (bad metadata, network, disk), 2 usage error (flags, folders)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        (args,) = parse_args([PrepareDataArguments], argv)
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
    for note in report["notes"]:
        print(f"  note: {note}")
    fetch = report["provenance"].get("fetch")
    if fetch and fetch["failed"]:
        print(f"  {fetch['failed']} download(s) failed; re-run the same command to fetch only those.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
