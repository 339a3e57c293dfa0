"""Publishing a run, one way: run folder -> card -> export folder -> Hub (and a Space).

`run_folder` reads the run once through the schema, `card` turns its results into the model card (the
template `model_card.md` sits beside it), `export` builds the folder that goes to the Hub, `hub` pushes it
in one commit and `space` does the same for a Gradio Space. Each module imports only those before it.
This face holds the step's arguments and its body, `run_publish`, which `scripts/publish.py` calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..cli import DISABLE_TQDM_HELP
from .card import DEFAULT_LICENSE
from .export import PublishArgumentError, PublishError, TokenLeakError
from .hub import PublishResult, publish

__all__ = ["PublishArgumentError", "PublishArguments", "PublishError", "PublishResult", "TokenLeakError", "publish",
           "run_publish"]


@dataclass
class PublishArguments:
    """Arguments of scripts/publish.py."""

    model: str = field(
        metadata={"help": "Training run folder (outputs/<run>) with model.safetensors and results JSON."}
    )
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo USER/NAME (required unless --dry_run)."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    dry_run: bool = field(default=False, metadata={"help": "Write the export folder only; push nothing."})
    export_dir: str | None = field(
        default=None, metadata={"help": "Where the export folder is written (default: <model>/hub_export)."}
    )
    explain_dir: str | None = field(
        default=None, metadata={"help": "Explanation folder (default: <model>/explain) for figures and faithfulness."}
    )
    audit: str | None = field(
        default=None,
        metadata={"help": "Audit folder (scripts/audit.py; default: <model>/audit when it audits this run) whose "
                          "plate-held-out accuracy the card shows next to the test accuracy."},
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (default names the run)."})
    license: str = field(default=DEFAULT_LICENSE, metadata={"help": "License id in the card metadata."})
    card_template: str | None = field(default=None, metadata={"help": "Card template (default: model_card.md)."})
    model_name: str | None = field(
        default=None, metadata={"help": "The model card's title (default: the name part of --repo_id)."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": DISABLE_TQDM_HELP})


def run_publish(args: PublishArguments, api: Any = None) -> PublishResult:
    """The body of scripts/publish.py."""
    return publish(
        args.model,
        args.repo_id,
        private=args.private,
        dry_run=args.dry_run,
        export_dir=args.export_dir,
        explain_dir=args.explain_dir,
        commit_message=args.commit_message,
        license=args.license,
        template_path=args.card_template,
        api=api,
        model_name=args.model_name,
        audit_dir=args.audit,
    )
