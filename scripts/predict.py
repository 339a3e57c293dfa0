#!/usr/bin/env python
"""Predict Fe-ion vs X-ray for image files/folders, or score a prepared split; writes one CSV.

    python scripts/predict.py --model outputs/run images/ a.tif --output predictions.csv
    python scripts/predict.py --model USER/NAME --data_dir data/bps --split test --output test.csv
    accelerate launch --num_processes 2 scripts/predict.py --model ... images/ --output predictions.csv
"""

import logging
import sys

from bps_vit.cli import EXIT_FAILURE, EXIT_OK, parse_args, run_main, set_library_progress_bars
from bps_vit.model import ModelLoadError
from bps_vit.predict import PredictArguments, run_predict


def parse(argv):
    """A config file and flags as in every script; image files and folders may also be given positionally."""
    args, positional = parse_args([PredictArguments], argv, allow_positional=True)
    args.paths = list(args.paths) + positional
    return args


def main(argv=None) -> int:
    """Exit codes: 0 ok, 1 runtime failure (including: nothing could be predicted), 2 usage error."""
    args = parse(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.show_progress:
        set_library_progress_bars(False)  # transformers' "Loading weights" and a Hub model's download bars
    return run_main(
        lambda: EXIT_OK if run_predict(args)["n_ok"] > 0 else EXIT_FAILURE,
        usage_errors=(ModelLoadError, ValueError, FileNotFoundError),  # a flag or path to fix
        failures=(OSError, RuntimeError),
    )


if __name__ == "__main__":
    sys.exit(main())
