"""A run folder as publishing reads it: the results files through the schema, the configs as plain JSON, and
which figures go where in the export. Read once, then handed to the card, the export and the app."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..provenance import RunIdentity
from ..results import AuditResults, ExplanationResults, RunResults


@dataclass
class RunFolder:
    """A run folder and its explanation folder, read once through the schema; None where a file is missing."""

    run_dir: Path
    explain_dir: Path
    results: RunResults | None = None
    explanation: ExplanationResults | None = None
    audit: AuditResults | None = None  # plate-held-out cross-validation of this run's data and settings
    config: dict | None = None
    preprocessor: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        return self.run_dir.resolve().name

    def training_figures(self) -> list[Path]:
        return sorted((self.run_dir / "figures").glob("*.png"))

    def explain_figures(self) -> list[Path]:
        return sorted((self.explain_dir / "figures").rglob("*.png"))


def _read_plain_json(path: Path, problems: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        problems.append(f"{path}: unreadable JSON ({err}); treated as missing.")
        return None
    return data if isinstance(data, dict) else None


def read_run(run_dir: str | os.PathLike, explain_dir: str | os.PathLike | None = None,
             audit_dir: str | os.PathLike | None = None) -> RunFolder:
    """Results through the schema (a file of an unknown version raises `SchemaError`); configs as plain JSON.

    The audit (`audit_dir`, default `<run>/audit`) is kept only when it audited this run's data, model and pixel
    settings (`bps_run.json` of both); otherwise `problems` says why it is left out."""
    run_dir = Path(run_dir)
    run = RunFolder(run_dir, Path(explain_dir) if explain_dir is not None else run_dir / "explain")
    if (run_dir / RunResults.FILENAME).is_file():
        run.results = RunResults.from_json(run_dir / RunResults.FILENAME)
    if (run.explain_dir / ExplanationResults.FILENAME).is_file():
        run.explanation = ExplanationResults.from_json(run.explain_dir / ExplanationResults.FILENAME)
    run.audit = _read_audit(run_dir, Path(audit_dir) if audit_dir is not None else run_dir / "audit", run.problems)
    run.config = _read_plain_json(run_dir / "config.json", run.problems)
    run.preprocessor = _read_plain_json(run_dir / "preprocessor_config.json", run.problems)
    return run


def _read_audit(run_dir: Path, audit_dir: Path, problems: list[str]) -> AuditResults | None:
    if not (audit_dir / AuditResults.FILENAME).is_file():
        return None
    audited, trained = RunIdentity.read(audit_dir), RunIdentity.read(run_dir)
    differences = audited.differences(trained) if audited and trained else ["its provenance (bps_run.json)"]
    if differences:
        problems.append(f"{audit_dir}/{AuditResults.FILENAME} audits another run ({', '.join(differences)} differ "
                        "from this run's): left out of the card. Audit this run's data and settings with "
                        "scripts/audit.py, or pass the matching --audit folder.")
        return None
    return AuditResults.from_json(audit_dir / AuditResults.FILENAME)


def figure_plan(run: RunFolder) -> list[tuple[Path, str]]:
    """(source, path in export) for every figure: training figures at figures/, explanations at figures/explain/."""
    plan = [(p, f"figures/{p.name}") for p in run.training_figures()]
    root = run.explain_dir / "figures"
    plan += [(p, f"figures/explain/{p.relative_to(root).as_posix()}") for p in run.explain_figures()]
    return plan
