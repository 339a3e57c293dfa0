"""Plate-held-out cross-validation and a leak audit: will the model call Fe and X-ray right on a new experiment?

`run.run_audit` trains one model per fold with `train.py`'s own path and writes `audit.json` (`AuditResults`),
`oof_predictions.csv`, `folds/<strategy>-<k>/` and `figures/audit.png`; `main` is `scripts/audit.py`.
Modules: `folds` (the plan and its checks), `inputs` (decode once, each fold's inputs and files), `scoring`
(cluster bootstrap over plates, inflation), `foci_test` (explain's causal test on a fold's model), `report`
(readings, summary, files), `run` (the flow), `arguments` (the audit's flags).
"""

from __future__ import annotations

import sys

from .arguments import AuditArguments
from .folds import AuditInputError
from .run import run_audit


def main(argv: list[str] | None = None):
    """Parse the training dataclasses and `AuditArguments` from a YAML/JSON file and/or flags, then audit."""
    from ..cli import parse_args, set_library_progress_bars
    from ..train import BPSTrainingArguments, DataArguments, ModelArguments, setup_logging

    model_args, data_args, training_args, audit_args = parse_args(
        (ModelArguments, DataArguments, BPSTrainingArguments, AuditArguments), argv
    )
    setup_logging(training_args)
    if training_args.disable_tqdm:
        set_library_progress_bars(False)  # the one decode and its save (datasets' bars)
    try:
        return run_audit(model_args, data_args, training_args, audit_args)
    except KeyboardInterrupt:
        command = " ".join(["python", "scripts/audit.py", *(sys.argv[1:] if argv is None else argv)])
        hint = "" if "--resume_from_checkpoint" in command else " --resume_from_checkpoint last"
        message = f"\nInterrupted. Continue the audit (finished folds are kept) with:\n  {command}{hint}"
        raise SystemExit(message) from None


__all__ = ["AuditArguments", "AuditInputError", "main", "run_audit"]
