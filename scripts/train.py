#!/usr/bin/env python
"""Fine-tune a ViT on the prepared BPS folder.

    python scripts/train.py configs/demo.yaml
    accelerate launch scripts/train.py configs/bps_vit_base.yaml --per_device_train_batch_size 64
    torchrun --nproc_per_node 4 scripts/train.py configs/bps_vit_base.yaml
"""

import sys

from bps_vit.cli import run_main
from bps_vit.data import DataError
from bps_vit.model import ModelLoadError
from bps_vit.provenance import RunMismatchError
from bps_vit.train import main


def run(argv=None) -> int:
    """Exit codes: 0 ok, 1 runtime failure, 2 usage error (no prepared data folder, a model that cannot be
    found, an output folder or checkpoint of another run)."""

    def body() -> None:
        main(argv)

    return run_main(body, usage_errors=(DataError, ModelLoadError, RunMismatchError), failures=(OSError,))


if __name__ == "__main__":
    sys.exit(run())
