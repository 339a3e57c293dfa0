#!/usr/bin/env python
"""Explain a saved BPS model: attention rollout, gradient rollout and SHAP figures + faithfulness metrics.

    python scripts/explain.py --model outputs/run --split test --num_images 8
    python scripts/explain.py --model outputs/run --images my_tiffs/ --methods rollout,shap
    python scripts/explain.py configs/explain.yaml --num_images 4
    accelerate launch --num_processes 2 scripts/explain.py --model outputs/run
"""

import logging
import sys

from bps_vit.cli import parse_args, run_main, set_library_progress_bars
from bps_vit.explain import MissingAttentionsError
from bps_vit.explain.run import ExplainArguments, explain
from bps_vit.model import ModelLoadError


def main(argv=None) -> int:
    """Exit codes: 0 ok, 1 runtime failure, 2 usage error (see bps_vit.cli)."""
    (args,) = parse_args([ExplainArguments], argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.show_progress:
        set_library_progress_bars(False)  # transformers' "Loading weights" and a Hub model's download bars
    args.warn_if_deprecated(logging.getLogger("bps_vit.explain"))

    def body() -> None:
        explain(args)

    return run_main(
        body,
        usage_errors=(ModelLoadError, MissingAttentionsError, ValueError, FileNotFoundError),  # a flag to fix
        failures=(OSError, RuntimeError),
    )


if __name__ == "__main__":
    sys.exit(main())
