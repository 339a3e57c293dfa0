#!/usr/bin/env python
"""Publish a training run to the Hugging Face Hub (one commit), or write the export folder with --dry_run.

    python scripts/publish.py --model outputs/run --repo_id USER/NAME [--private]
    python scripts/publish.py --model outputs/run --dry_run --export_dir outputs/run-hub
    python scripts/publish.py --model outputs/run --repo_id USER/NAME --space_repo_id USER/NAME-app  # + a Space
"""

import logging
import sys

from bps_vit.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parse_args, set_library_progress_bars
from bps_vit.publish import PublishArgumentError, PublishArguments, PublishError, run_publish
from bps_vit.publish.space import SpaceArguments, plan_space, run_space, write_examples


def main(argv=None) -> int:
    """Exit codes: 0 ok, 1 runtime failure (token, network, refused push), 2 usage error (a bad flag value)."""
    args, space_args = parse_args([PublishArguments, SpaceArguments], argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.disable_tqdm:
        set_library_progress_bars(False)  # the upload's bars
    try:
        space = plan_space(space_args, args)  # ids and token access checked before anything is pushed
        if space_args.examples_from:
            write_examples(space_args.examples_from, args.model)
        result = run_publish(args)
        if space is not None:
            space_result = run_space(space)
            print(f"Space folder: {space_result.export_dir} ({', '.join(space_result.files)})"
                  + (f"; https://huggingface.co/spaces/{space_result.space_repo_id}" if space_result.pushed else ""))
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, PublishArgumentError) else EXIT_FAILURE
    where = f"https://huggingface.co/{result.repo_id}" if result.pushed else "nothing pushed (dry run)"
    print(f"Export folder: {result.export_dir} ({len(result.files)} files); {where}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
