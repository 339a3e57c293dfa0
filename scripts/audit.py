#!/usr/bin/env python
"""Plate-held-out cross-validation and a leak audit: one model per fold, trained as scripts/train.py trains.

    python scripts/audit.py configs/audit.yaml
    python scripts/audit.py configs/audit.yaml --strategies plate,field --num_train_epochs 3
    torchrun --nproc_per_node 2 scripts/audit.py configs/audit.yaml
    python scripts/audit.py configs/audit.yaml --resume_from_checkpoint last   # after a kill: finished folds kept
"""

import sys

from bps_vit.audit import AuditInputError, main
from bps_vit.cli import run_main
from bps_vit.data import DataError
from bps_vit.manifest import ManifestError
from bps_vit.model import ModelLoadError
from bps_vit.provenance import RunMismatchError


def run(argv=None) -> int:
    """Exit codes: 0 ok, 1 runtime failure, 2 usage error (data the audit cannot split, a model that cannot be
    found, an output folder of another run): one `error:` line, before any training and with nothing written."""

    def body() -> None:
        main(argv)

    usage = (AuditInputError, DataError, ManifestError, ModelLoadError, RunMismatchError)
    return run_main(body, usage_errors=usage, failures=(OSError,))


if __name__ == "__main__":
    sys.exit(run())
