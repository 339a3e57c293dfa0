"""Publish a trained run: the export folder (`export`, with the card from `card`), one Hub commit.

A push checks the token, repo id and account (cheap) before copying weights (heavy), then makes
`create_repo` + a single commit, so a failed push leaves the export intact and re-running publish
alone finishes the job. The token comes from `huggingface_hub.get_token()` and is never printed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .card import DEFAULT_LICENSE
from .export import EXPLAIN_METRICS_FILE, PublishArgumentError, PublishError, build_export, check_model_folder, redact

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- pushing


@dataclass
class PublishResult:
    export_dir: Path
    files: list[str]
    repo_id: str | None
    pushed: bool
    commit_url: str | None = None


def repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not a USER/NAME Hub id (the tail of a message after the id), or None when it is one."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        return f" is not a valid Hub repo id: {err}"
    if repo_id.count("/") != 1:
        return ": give it as USER/NAME or ORG/NAME (e.g. your-username/bps-vit-tiny)."
    return None


def check_repo_id(repo_id: str | None, flag: str = "--repo_id") -> str:
    """`repo_id` when it is a USER/NAME Hub id; else a usage error naming `flag` (exit code 2)."""
    if not repo_id:
        raise PublishArgumentError(f"{flag} is required to push (e.g. {flag} your-username/bps-vit-tiny).")
    problem = repo_id_problem(repo_id)
    if problem:
        raise PublishArgumentError(f"{flag} {repo_id!r}{problem}")
    return repo_id


def _http_status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _explain_hub_error(err: BaseException, action: str, repo_id: str, token: str | None) -> str:
    status = _http_status(err)
    detail = redact(f"{type(err).__name__}: {err}", token)
    if isinstance(err, OfflineModeIsEnabled):
        return f"{action}: HF_HUB_OFFLINE is set, so the Hub cannot be reached. Unset it (HF_HUB_OFFLINE=0) to push."
    if status == 401:
        return (
            f"{action}: the token was rejected (401: invalid or expired). "
            "Create a new write token and `hf auth login`."
        )
    if status == 403:
        return (
            f"{action}: permission denied (403) for {repo_id}. The token needs write access to that namespace; "
            "use a write token or a repo id under your own account."
        )
    if status is not None:
        return f"{action}: the Hub answered HTTP {status} ({detail})."
    return f"{action}: cannot reach the Hugging Face Hub ({detail}). Check the network (or HF_ENDPOINT)."


def check_push_access(api: Any, repo_id: str, token: str) -> str:
    """whoami with the token, then the namespace: fail in seconds, before any copying or uploading."""
    try:
        identity = api.whoami(token=token)
    except Exception as err:  # network, offline mode and HTTP errors all end the same way: a message
        raise PublishError(_explain_hub_error(err, "Checking the token", repo_id, token)) from None
    if not isinstance(identity, dict):
        raise PublishError("Checking the token: the Hub returned an unexpected answer to whoami; try again later.")
    user = identity.get("name") if isinstance(identity.get("name"), str) else None
    orgs = {o.get("name") for o in identity.get("orgs") or [] if isinstance(o, dict) and isinstance(o.get("name"), str)}
    auth = identity.get("auth") if isinstance(identity.get("auth"), dict) else {}
    role = (auth.get("accessToken") or {}).get("role") if isinstance(auth.get("accessToken"), dict) else None
    if role == "read":
        who = user or "this account"
        raise PublishError(f"The token of {who} is read-only; create a write token to push {repo_id}.")
    namespace = repo_id.split("/")[0]
    if user and namespace != user and namespace not in orgs:
        raise PublishError(
            f"Permission denied: the token belongs to {user!r}, which is neither {namespace!r} nor a member of it. "
            f"Use --repo_id {user}/{repo_id.split('/')[1]} or a token of {namespace!r}."
        )
    return user or namespace


def current_token() -> str | None:
    """The token from the usual places (HF_TOKEN, the `hf auth login` cache); None when there is none."""
    try:
        return get_token()
    except Exception as err:  # e.g. a failed OIDC exchange; say why without echoing anything secret
        raise PublishError(f"Could not read the Hugging Face token ({type(err).__name__}); check HF_TOKEN.") from None


def default_commit_message(run_name: str) -> str:
    return f"Publish bps-vit run {run_name}"


def checked_api(api: Any, repo_id: str | None, token: str | None, flag: str = "--repo_id") -> Any:
    """Before any heavy work: a valid repo id (given as `flag`), a token, and an account that may write there."""
    check_repo_id(repo_id, flag)
    if not token:
        raise PublishError(
            "No Hugging Face token found. Set HF_TOKEN or run `hf auth login` (a write token), "
            "or use --dry_run --export_dir DIR to build the folder without pushing."
        )
    if api is None:
        api = HfApi()
    user = check_push_access(api, repo_id, token)
    logger.info("Token OK (account %s); building the export for %s.", user, repo_id)
    return api


#: Stale figures/metrics from an earlier model publish go in the same commit; other user files stay.
MODEL_STALE_PATTERNS = ("figures/**", "*_results.json", EXPLAIN_METRICS_FILE)


def push_export(api: Any, export_dir: Path, files: list[str], repo_id: str, token: str, *, private: bool,
                message: str, description: str | None = None, repo_type: str = "model",
                space_sdk: str | None = None, delete_patterns: tuple[str, ...] | None = MODEL_STALE_PATTERNS,
                ) -> str | None:
    """`create_repo` + one `upload_folder` commit; returns the commit URL. A failure leaves the Hub repo as it was.

    A model export by default; a Space passes `repo_type="space"`, its `space_sdk` and no `delete_patterns`.
    """
    kept = f" The export at {export_dir} is intact; re-run the same publish command to finish."
    sdk = {"space_sdk": space_sdk} if space_sdk else {}
    try:
        api.create_repo(repo_id=repo_id, token=token, private=private, exist_ok=True, repo_type=repo_type, **sdk)
    except Exception as err:
        raise PublishError(_explain_hub_error(err, f"Creating {repo_id}", repo_id, token) + kept) from None
    try:
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(export_dir),
            repo_type=repo_type,
            token=token,
            commit_message=message,
            commit_description=description,
            delete_patterns=list(delete_patterns) if delete_patterns else None,
        )
    except Exception as err:
        raise PublishError(
            _explain_hub_error(err, f"Uploading to {repo_id}", repo_id, token)
            + kept
            + " (The upload is a single commit, so the Hub repo was not partially updated.)"
        ) from None
    logger.info("Pushed %d files to %s in one commit.", len(files), repo_id)
    return getattr(commit, "commit_url", None) or (commit if isinstance(commit, str) else None)


def publish(
    model_dir: str | os.PathLike,
    repo_id: str | None = None,
    *,
    private: bool = False,
    dry_run: bool = False,
    export_dir: str | os.PathLike | None = None,
    explain_dir: str | os.PathLike | None = None,
    commit_message: str | None = None,
    license: str = DEFAULT_LICENSE,
    template_path: str | os.PathLike | None = None,
    api: Any = None,
    model_name: str | None = None,
    audit_dir: str | os.PathLike | None = None,
) -> PublishResult:
    """Build the export folder and (unless `dry_run`) push it as one commit.

    `api` is an `HfApi` (injectable for tests). The token comes from `huggingface_hub.get_token()`
    (HF_TOKEN or the login cache) and is never printed or written.
    """
    model_dir = Path(model_dir)
    export_dir = Path(export_dir) if export_dir is not None else model_dir / "hub_export"
    if explain_dir is not None and not Path(explain_dir).is_dir():
        raise PublishArgumentError(
            f"--explain_dir {explain_dir}: no such folder (omit it to use <model>/explain)."
        )
    token = current_token()
    if dry_run and repo_id:
        check_repo_id(repo_id)
    weights = check_model_folder(model_dir)
    if not dry_run:
        api = checked_api(api, repo_id, token)
    files = build_export(model_dir, export_dir, explain_dir=explain_dir, repo_id=repo_id, license=license,
                         template_path=template_path, token=token, model_name=model_name, weights=weights,
                         audit_dir=audit_dir)
    if dry_run:
        logger.info("Dry run: nothing pushed. The folder that would go to the Hub is %s.", export_dir)
        return PublishResult(export_dir=export_dir, files=files, repo_id=repo_id, pushed=False)
    run_name = model_dir.resolve().name
    url = push_export(api, export_dir, files, repo_id, token, private=private,
                      message=commit_message or default_commit_message(run_name),
                      description=f"{len(files)} files exported by bps-vit from run {run_name}.")
    return PublishResult(export_dir=export_dir, files=files, repo_id=repo_id, pushed=True, commit_url=url)
