#!/usr/bin/env python
"""Build data/bps/{train,validation,test}/{Fe,X-ray}/ (+ sham/, manifest.csv, split_report.json).

    python scripts/prepare_data.py --source synthetic --num_images 2000
    python scripts/prepare_data.py --source s3 --max_per_condition 2000
    python scripts/prepare_data.py configs/prepare_real.yaml
"""

import logging
import sys

from transformers import HfArgumentParser

from bps_vit.prepare import PrepareDataArguments, prepare_data


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(PrepareDataArguments)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        (args,) = parser.parse_yaml_file(argv[0])
    elif len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = prepare_data(args)
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
