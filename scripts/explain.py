#!/usr/bin/env python
"""Explain a saved BPS model: attention rollout, gradient rollout and SHAP figures + faithfulness metrics.

    python scripts/explain.py --model outputs/run --split test --num_images 8
    python scripts/explain.py --model outputs/run --images my_tiffs/ --methods rollout,shap
    python scripts/explain.py configs/explain.yaml --num_images 4
    accelerate launch --num_processes 2 scripts/explain.py --model outputs/run
"""

import logging
import sys

from bps_vit.cli import parse_args
from bps_vit.explain.base import MissingAttentionsError
from bps_vit.explain.run import ExplainArguments, explain
from bps_vit.model import ModelLoadError


def main(argv=None) -> int:
    (args,) = parse_args([ExplainArguments], argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        explain(args)
    except (ModelLoadError, MissingAttentionsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
