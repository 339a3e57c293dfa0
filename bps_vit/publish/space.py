"""A Hugging Face Space that serves a published model with the app: three small files, one commit.

The Hub's own widget cannot show a BPS model fairly (it sends 16-bit TIFFs through an 8-bit path),
so `scripts/publish.py --repo_id USER/MODEL --space_repo_id USER/SPACE` also writes a Gradio Space:
`README.md` (the Space front matter: sdk, the pinned Gradio version the app is tested with, app file,
the model id), an `app.py` of a few lines calling `bps_vit.app.serve`, and a `requirements.txt`
installing this package with its app extra at a pinned version. The push follows the model's rules
(`check_push_access` before anything is built, `export.refuse_tokens` on the folder, one commit),
and the token is never written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import SpaceCard, SpaceCardData

from .. import __version__
from ..imaging import find_examples
from ..model import labels_of
from . import PublishArguments
from .card import DEFAULT_LICENSE
from .export import PublishError, refuse_tokens
from .hub import check_repo_id, checked_api, current_token, push_export

logger = logging.getLogger(__name__)

SPACE_FILES = ("README.md", "app.py", "requirements.txt")
GRADIO_VERSION = "6.31.0"  # the version the browser test runs; the [app] extra pins gradio==6.31.*


@dataclass
class SpaceArguments:
    """The Space options of scripts/publish.py."""

    space_repo_id: str | None = field(
        default=None,
        metadata={"help": "Also export (and unless --dry_run push) a Gradio Space USER/NAME serving --repo_id."},
    )
    space_export_dir: str | None = field(default=None, metadata={"help": "Space folder (default <model>/space_export)"})
    examples_from: str | None = field(
        default=None,
        metadata={"help": "Prepared data folder (data/bps): copy a few test crops per class to <model>/examples/, "
                  "exported beside the model as the app's examples."},
    )
    space_requirement: str = field(
        default=f"bps-vit[app]=={__version__}",
        metadata={"help": "The requirements.txt line installing this package with its app extra, pinned "
                  "(e.g. 'bps-vit[app] @ git+https://github.com/USER/bps-vit@v0.1.0' when it is not on PyPI)."},
    )


@dataclass
class SpacePlan:
    """A checked Space job: ids valid and, for a push, the token's write access to the Space namespace confirmed."""

    model_id: str
    space_repo_id: str
    export_dir: Path
    requirement: str
    dry_run: bool
    private: bool = False
    api: Any = None
    token: str | None = field(default=None, repr=False)


@dataclass
class SpaceResult:
    export_dir: Path
    files: list[str]
    space_repo_id: str
    pushed: bool
    commit_url: str | None = None


def write_examples(data_dir: str | os.PathLike, model_dir: str | os.PathLike, split: str = "test",
                   per_class: int = 2) -> list[Path]:
    """Copy `per_class` crops of each class of `data_dir/split` to `model_dir/examples/` (replacing what was there)."""
    config = Path(model_dir) / "config.json"
    labels = labels_of(json.loads(config.read_text())) if config.is_file() else []
    chosen = find_examples(Path(data_dir) / split, labels, per_class)
    if not chosen:
        raise PublishError(f"--examples_from {data_dir}: no images in {Path(data_dir) / split}/<class>/.")
    target = Path(model_dir) / "examples"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    return [Path(shutil.copy2(path, target / Path(path).name)) for path in chosen]


def space_readme(model_id: str, space_repo_id: str) -> str:
    """The Space card: front matter the Hub reads (sdk, sdk_version, app_file, models) and a short body."""
    data = SpaceCardData(
        title=space_repo_id.split("/")[-1], sdk="gradio", sdk_version=GRADIO_VERSION, app_file="app.py",
        models=[model_id], license=DEFAULT_LICENSE,
    )
    body = (
        f"# {space_repo_id.split('/')[-1]}\n\n"
        f"Drop a 16-bit TIFF crop of a 53BP1-stained nucleus and see the call of [{model_id}]"
        f"(https://huggingface.co/{model_id}) (Fe-ion or X-ray), the image with the model's own stretch, and "
        "the heatmaps of the explanation methods this architecture supports (attention rollout, gradient rollout, "
        "Grad-CAM, SHAP). Made with [bps-vit](https://pypi.org/project/bps-vit/); "
        "the model card holds the test metrics and the sham control.\n"
    )
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}").content


def space_app(model_id: str) -> str:
    return (
        f'"""Gradio Space for {model_id}: the bps-vit app (16-bit TIFF in, the call and its heatmaps out)."""\n\n'
        "from bps_vit.app import serve\n\n"
        f'serve("{model_id}", host=None)  # host None: Gradio takes GRADIO_SERVER_NAME from the Space\n'
    )


def plan_space(space: SpaceArguments, model: PublishArguments, api: Any = None) -> SpacePlan | None:
    """None without --space_repo_id; else check everything cheap (ids, token, access) before any work or push."""
    if not space.space_repo_id:
        return None
    check_repo_id(space.space_repo_id, "--space_repo_id")
    if not model.repo_id:
        raise PublishError("--space_repo_id needs --repo_id: the Hub id of the model the Space serves.")
    check_repo_id(model.repo_id)
    if not space.space_requirement.strip() or "\n" in space.space_requirement:
        raise PublishError("--space_requirement must be one requirements.txt line, e.g. 'bps-vit[app]==0.1.0'.")
    export_dir = Path(space.space_export_dir or Path(model.model) / "space_export")
    plan = SpacePlan(model.repo_id, space.space_repo_id, export_dir, space.space_requirement.strip(), model.dry_run,
                     private=model.private)
    if not model.dry_run:
        plan.token = current_token()
        plan.api = checked_api(api, plan.space_repo_id, plan.token, "--space_repo_id")
    return plan


def build_space(plan: SpacePlan) -> list[str]:
    """Write exactly SPACE_FILES into the export folder (staged, token-scanned, then swapped in)."""
    target = plan.export_dir
    if target.exists() and (not target.is_dir() or any(p.name not in SPACE_FILES for p in target.iterdir())):
        raise PublishError(f"--space_export_dir {target} holds other files; choose a new or empty folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / "README.md").write_text(space_readme(plan.model_id, plan.space_repo_id), encoding="utf-8")
        (staging / "app.py").write_text(space_app(plan.model_id), encoding="utf-8")
        (staging / "requirements.txt").write_text(plan.requirement + "\n", encoding="utf-8")
        refuse_tokens(staging, plan.token, "Check --space_repo_id, --repo_id and --space_requirement and re-run.")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(p.name for p in target.iterdir())


def run_space(plan: SpacePlan) -> SpaceResult:
    """Export the Space folder and, unless a dry run, push it as one commit."""
    files = build_space(plan)
    if plan.dry_run:
        logger.info("Dry run: the Space folder is %s; nothing pushed.", plan.export_dir)
        return SpaceResult(plan.export_dir, files, plan.space_repo_id, pushed=False)
    url = push_export(plan.api, plan.export_dir, files, plan.space_repo_id, plan.token, private=plan.private,
                      message=f"bps-vit app for {plan.model_id}", repo_type="space", space_sdk="gradio",
                      delete_patterns=None)
    return SpaceResult(plan.export_dir, files, plan.space_repo_id, pushed=True, commit_url=url)
