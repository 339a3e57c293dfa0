#!/usr/bin/env python
"""Publish a training run to the Hugging Face Hub (one commit), or write the export folder with --dry_run.

    python scripts/publish.py --model outputs/run --repo_id USER/NAME [--private]
    python scripts/publish.py --model outputs/run --dry_run --export_dir outputs/run-hub
"""

import logging
import sys

from transformers import HfArgumentParser

from bps_vit.hub import PublishArguments, PublishError, run_publish


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(PublishArguments)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        (args,) = (parser.parse_yaml_file if argv[0].endswith(("yaml", "yml")) else parser.parse_json_file)(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_publish(args)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    where = f"https://huggingface.co/{result.repo_id}" if result.pushed else "nothing pushed (dry run)"
    print(f"Export folder: {result.export_dir} ({len(result.files)} files); {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
