"""The export folder: exactly what goes to the Hub, built the same way for `--dry_run` and a push.

It holds safetensors weights, config, processor (with the 16-bit stretch), README.md (the card),
figures/ and the results JSON; never optimizer states, checkpoints, pickles or tokens. The folder
is built in a staging folder, scanned for tokens (recursively: every file at any depth), then
swapped in, so a failure leaves any previous export as it was.

`refuse_tokens` is the one token check; anything else that uploads a folder (a Space export, say)
calls it on the folder before uploading.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from ..disk import readable_like_other_outputs
from ..model import weight_files
from ..provenance import weights_fingerprint
from ..results import ExplanationResults, RunResults, SchemaError
from .card import DEFAULT_LICENSE, CardTemplateError, build_model_card
from .run_folder import RunFolder, figure_plan, read_run

logger = logging.getLogger(__name__)

#: The Trainer's own results files, copied as they are (the card reads RunResults.FILENAME).
TRAINER_RESULT_FILES = ("all_results.json", "test_results.json")
RUN_RESULT_FILES = (*TRAINER_RESULT_FILES, RunResults.FILENAME)
EXPLAIN_METRICS_FILE = ExplanationResults.FILENAME
MODEL_FILES = ("config.json", "preprocessor_config.json")
#: `hf_` followed by 30+ letters/digits: the shape of a Hugging Face user access token.
TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
_TOKEN_TEXT_PATTERN = re.compile(TOKEN_PATTERN.pattern.decode())  # the same pattern, for str messages


class PublishError(RuntimeError):
    """Publishing cannot go on; the message says why and what to do (it never contains a token)."""


class TokenLeakError(PublishError):
    """Something that looks like an access token would have been exported."""


class PublishArgumentError(PublishError):
    """A flag value that cannot work (--model, --export_dir, --repo_id, ...): a usage error, exit code 2."""


# --------------------------------------------------------------------------- tokens


def _holds_token(path: Path, needles: list[bytes]) -> bool:
    overlap = b""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            window = overlap + chunk
            if TOKEN_PATTERN.search(window) or any(n in window for n in needles):
                return True
            overlap = window[-256:]
    return False


def scan_for_tokens(folder: str | os.PathLike, token: str | None = None) -> list[str]:
    """Files anywhere under `folder` (recursive) holding something token-shaped or the given token."""
    needles = [token.encode()] if token else []
    folder = Path(folder)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return [p.relative_to(folder).as_posix() for p in files if _holds_token(p, needles)]


def refuse_tokens(folder: str | os.PathLike, token: str | None = None, fix: str = "") -> None:
    """Raise `TokenLeakError` (naming the files, never the token) when `scan_for_tokens` finds anything."""
    leaks = scan_for_tokens(folder, token)
    if leaks:
        raise TokenLeakError(
            f"Refusing to export: {leaks} contain(s) something that looks like a Hugging Face access token. "
            f"{fix or 'Remove it from the source files and re-run.'}"
        )


def redact(text: str, token: str | None = None) -> str:
    """A message safe to print: the token value and anything token-shaped are masked."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_TEXT_PATTERN.sub("hf_***", text)


# --------------------------------------------------------------------------- checks


def check_model_folder(model_dir: str | os.PathLike) -> list[Path]:
    """The safetensors weight files of a saved model (the pickles left out are logged); refuses pickle-only folders
    and non-models. The folder is listed once: pass the result on to `build_export(weights=...)`."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PublishArgumentError(
            f"--model {model_dir}: no such folder. Pass the training run folder (outputs/<run>)."
        )
    if not (model_dir / "config.json").is_file():
        raise PublishArgumentError(f"--model {model_dir}: no config.json; this is not a saved model folder.")
    weights, pickles = weight_files(model_dir)
    names = [p.name for p in pickles]
    if not any(p.suffix == ".safetensors" for p in weights):
        detail = f" It holds only pickle files {names}, which are refused (loading them can run code)." if names else ""
        raise PublishError(
            f"--model {model_dir}: no *.safetensors weights.{detail} Re-save the model with "
            "model.save_pretrained(dir) (safetensors is the default) and publish that folder."
        )
    if names:
        logger.info("%s: leaving pickle files %s out of the export (safetensors only).", model_dir, names)
    return weights


def _is_export_entry(name: str) -> bool:
    return (
        name in ("README.md", "figures", "examples", EXPLAIN_METRICS_FILE)
        or name in MODEL_FILES
        or name in RUN_RESULT_FILES
        or name.endswith(".safetensors")
        or name.endswith(".safetensors.index.json")
    )


def _prepare_export_target(export_dir: Path, model_dir: Path) -> None:
    """Refuse to replace anything that is not a previous export (a typo must not delete a user's folder)."""
    resolved, model_resolved = export_dir.resolve(), model_dir.resolve()
    if resolved == model_resolved or model_resolved.is_relative_to(resolved):
        raise PublishArgumentError(
            f"--export_dir {export_dir} would contain the run folder itself; choose another folder."
        )
    if export_dir.exists():
        if not export_dir.is_dir():
            raise PublishArgumentError(f"--export_dir {export_dir} is a file; choose a folder.")
        strangers = sorted(p.name for p in export_dir.iterdir() if not _is_export_entry(p.name))
        if strangers:
            raise PublishArgumentError(
                f"--export_dir {export_dir} holds files that are not part of an export ({strangers[:5]}); "
                "choose a new or empty folder."
            )


def read_run_for_export(model_dir: Path, explain_dir: str | os.PathLike | None,
                        audit_dir: str | os.PathLike | None = None) -> RunFolder:
    """The run through the schema, with the warnings an export deserves; a results file of another version stops,
    and so does an `--audit` folder that does not audit this run."""
    try:
        run = read_run(model_dir, explain_dir, audit_dir)
    except SchemaError as err:
        raise PublishError(f"Cannot read the run's results: {err}") from None
    if audit_dir is not None and run.audit is None:
        raise PublishError(f"--audit {audit_dir}: " + (run.problems[-1] if run.problems else "no audit.json there."))
    if run.preprocessor is None:
        raise PublishError(
            f"--model {model_dir}: no readable preprocessor_config.json; the export must carry the image processor "
            "(and its bps_preprocessing stretch). Save it with processor.save_pretrained(run_dir)."
        )
    if not isinstance(run.preprocessor.get("bps_preprocessing"), dict):
        logger.warning(
            "%s/preprocessor_config.json has no bps_preprocessing; users will get the default stretch.", model_dir
        )
    if run.preprocessor.get("do_rescale") is False:
        logger.warning(
            "%s/preprocessor_config.json has do_rescale=false: transformers.pipeline on 8-bit images "
            "would then feed 0-255 values to the model.",
            model_dir,
        )
    check_same_model(run)
    for problem in run.problems:
        logger.warning(problem)
    if run.results is None:
        logger.warning("%s: no %s; the card marks its sections 'not available'.", model_dir, RunResults.FILENAME)
    return run


def check_same_model(run: RunFolder) -> None:
    """Refuse results made with other weights than the ones exported (e.g. an explain/ kept from an earlier run)."""
    weights = weights_fingerprint(run.run_dir)
    stale = []
    if run.results is not None and run.results.model_fingerprint not in (None, weights):
        stale.append(f"{run.run_dir / RunResults.FILENAME} (retrain: python scripts/train.py ... "
                     f"--output_dir {run.run_dir} --overwrite_output_dir true)")
    if run.explanation is not None and run.explanation.model_fingerprint != weights:
        stale.append(f"{run.explain_dir / EXPLAIN_METRICS_FILE} (regenerate: python scripts/explain.py "
                     f"--model {run.run_dir} --output_dir {run.explain_dir}, or delete that folder)")
    if stale:
        raise PublishError(
            "These results were not made with the model being published (their weights fingerprint differs from "
            f"{run.run_dir}/model.safetensors): " + "; ".join(stale)
        )


# --------------------------------------------------------------------------- building


def _stage(staging: Path, run: RunFolder, weights: list[Path], card_kwargs: dict) -> None:
    """Copy weights, configs, results and figures into `staging` and render README.md there."""
    for path in [*weights, *(run.run_dir / name for name in MODEL_FILES)]:
        shutil.copy2(path, staging / path.name)
        readable_like_other_outputs(staging / path.name)  # a run saved before the fix has 0600 weights
    for name in RUN_RESULT_FILES:
        if (run.run_dir / name).is_file():
            shutil.copy2(run.run_dir / name, staging / name)
    if run.explanation is not None:
        shutil.copy2(run.explain_dir / EXPLAIN_METRICS_FILE, staging / EXPLAIN_METRICS_FILE)
    if (run.run_dir / "examples").is_dir():  # a few test crops for the app's example gallery (space.write_examples)
        shutil.copytree(run.run_dir / "examples", staging / "examples")
    figures = figure_plan(run)
    for source, relative in figures:
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, staging / relative)
    try:
        card = build_model_card(run, export_figures={str(src): rel for src, rel in figures}, **card_kwargs)
    except CardTemplateError as err:
        raise PublishError(str(err)) from None
    card.save(staging / "README.md")


def build_export(
    model_dir: str | os.PathLike,
    export_dir: str | os.PathLike,
    *,
    explain_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    template_path: str | os.PathLike | None = None,
    token: str | None = None,
    model_name: str | None = None,
    weights: list[Path] | None = None,
    audit_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Write the folder that goes to the Hub; returns its files (relative, sorted).

    Built in a staging folder, scanned for tokens, then swapped in: a failure leaves any
    previous export as it was. `weights`: what `check_model_folder(model_dir)` returned, when the caller ran it.
    """
    model_dir, export_dir = Path(model_dir), Path(export_dir)
    weights = check_model_folder(model_dir) if weights is None else weights
    _prepare_export_target(export_dir, model_dir)
    run = read_run_for_export(model_dir, explain_dir, audit_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = export_dir.parent / f".{export_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        _stage(staging, run, weights, dict(repo_id=repo_id, license=license, template_path=template_path,
                                           model_name=model_name))
        fix = f"Remove it from the source files in {model_dir} (or {run.explain_dir}) and re-run."
        refuse_tokens(staging, token, fix)
        if export_dir.exists():
            shutil.rmtree(export_dir)
        staging.rename(export_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p.relative_to(export_dir).as_posix() for p in export_dir.rglob("*") if p.is_file())
    logger.info("Export folder %s: %d files.", export_dir, len(files))
    return files
