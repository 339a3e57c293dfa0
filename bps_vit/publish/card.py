"""The model card: facts read from the run's results files (through `bps_vit.results`), rendered by the template.

Why not `Trainer.push_to_hub`'s card: it names the dataset `imagefolder`, carries only validation
metrics and overwrites a custom README. Here `CardFacts` holds every fact the card shows, filled by
attribute access on the typed results (`RunResults` from bps_results.json, `ExplanationResults` from
explain/explain_metrics.json), and `huggingface_hub.ModelCard.from_template` renders them with the
template `model_card.md` that sits beside this module (package data, so an installed bps-vit has it too).

Every verdict on the card is one the steps wrote (`ShamControl` from training, `beats_baseline` from
explain); the card only puts them into words. Every function here turns one result into the card's words
(the sham reading, the faithfulness reading, the causal and perturbation rows), so a fact and the sentence
that reads it are checked together, and the template is the only other file to open.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..backbones import ARCHITECTURES
from ..labels import OWN_SOURCES
from ..model import ModelLoadError, labels_of
from ..results import (
    AuditResults,
    DataSummary,
    ExplanationResults,
    MethodSummary,
    RunResults,
    ShamControl,
    SplitMetrics,
    fmt,
)
from .run_folder import RunFolder, figure_plan, read_run

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "model_card.md"
DEFAULT_LICENSE = "apache-2.0"
CARD_TAGS = ("image-classification", "vision", "microscopy", "biology", "space-radiation", "nasa-bps",
             "explainability")
#: Dataset ids used in the card metadata (there is no official Hub copy of the BPS data; these are descriptive ids).
REAL_DATASET = {"id": "nasa-bps-microscopy", "name": "NASA BPS Microscopy (OSD-366)"}
OWN_DATASET = {"id": "own-microscopy", "name": "the lab's own microscopy images (prepared with --source folder/table)"}
#: What each --label_column task tells apart, in the card's words.
TASK_NAMES = {"particle_type": "particle type", "dose_Gy": "dose (Gy)", "hr_post_exposure": "hours after exposure",
              "condition": "condition (particle x dose x hours)", "label": "the data's own classes"}
SYNTHETIC_DATASET = {"id": "synthetic-bps-like", "name": "Synthetic BPS-like microscopy (bps-vit generator)"}
OSDR_STUDY_URL = "https://osdr.nasa.gov/bio/repo/data/studies/OSD-366"
BPS_BUCKET_URL = "https://nasa-bps-training-data.s3.us-west-2.amazonaws.com/Microscopy/train/"

# (SplitMetrics field, name shown in the card, EvalResult metric_type, metric_name)
METRICS_SHOWN = (
    ("accuracy", "Accuracy", "accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy", "balanced_accuracy", "Balanced accuracy"),
    ("f1_macro", "F1 (macro)", "f1", "F1 (macro)"),
    ("roc_auc", "ROC AUC", "roc_auc", "ROC AUC"),
    ("loss", "Loss (cross-entropy)", None, None),
)
SHAM_SHOWN = (("n", "images"), ("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
              ("roc_auc", "ROC AUC"), ("chance_band", "chance band (± around 0.5)"))
FAITHFULNESS_COLUMNS = (
    ("deletion_auc", "Deletion AUC (lower = more faithful)"),
    ("random_deletion_auc", "Random deletion AUC"),
    ("insertion_auc", "Insertion AUC (higher = more faithful)"),
    ("random_insertion_auc", "Random insertion AUC"),
    ("randomization_spearman", "Model-randomization Spearman (lower = more model-dependent)"),
    ("foci_mass", "Attribution mass on foci"),
    ("foci_mass_baseline", "Foci mass, centre-Gaussian baseline"),
    ("foci_mass_uniform", "Foci mass, uniform map (chance)"),
    ("pointing_game", "Pointing game"),
    ("pointing_game_baseline", "Pointing game, centre baseline"),
    ("pointing_game_uniform", "Pointing game, uniform (chance)"),
)
#: The title when neither --model_name nor --repo_id names the model (a run folder's name, e.g. `demo`, says nothing).
DEFAULT_TITLE = "bps-vit: Fe-ion vs X-ray classifier for BPS microscopy"
#: Alt texts of the figures the steps write, by file stem; other figures get a sentence built from their path.
FIGURE_ALT = {
    "confusion_matrix": "Confusion matrix of the test split (rows: true label, columns: predicted label)",
    "training_curves": "Training and validation loss and metrics per epoch",
    "explanations": "Explanation maps of test images: input, attention rollout, gradient rollout and SHAP",
    "faithfulness": "Deletion and insertion curves of each explanation method against random order",
    "rollout_grid": "Attention-rollout maps of test images",
    "shap_grid": "SHAP attribution maps of test images",
}
#: Training-summary fields not shown: a checkpoint folder name points at a file that is never uploaded.
TRAINING_HIDDEN = ("best_model_checkpoint",)


class CardTemplateError(FileNotFoundError):
    """The card template cannot be found; the message lists where it looked."""


# --------------------------------------------------------------------------- the facts


@dataclass
class CardFacts:
    """Everything the template shows, display-ready; every number comes from the run's results files."""

    model_name: str
    model_id: str
    run_name: str
    labels: list[str]
    #: The --label_column task; the BPS particle task keeps the Fe-ion vs X-ray wording.
    label_column: str = "particle_type"
    task_name: str = "particle type"
    particle_task: bool = True
    own_data: bool = False
    #: Said when the data named no plates, wells or fields (split by image).
    groups_note: str = ""
    per_class: list[dict[str, str]] = field(default_factory=list)
    confound_note: str = ""
    pair_rows: list[dict[str, str]] = field(default_factory=list)
    synthetic: bool = False
    dataset_name: str = REAL_DATASET["name"]
    osdr_url: str = OSDR_STUDY_URL
    bucket_url: str = BPS_BUCKET_URL
    base_model_id: str | None = None
    from_scratch: bool = True
    architecture: str = "Vision Transformer"  # the display name of the backbone (backbones.ARCHITECTURES)
    model_type: str | None = None  # transformers' model_type, also the card's architecture tag
    model_class: str | None = None
    explanation_methods: str = ""  # the methods explain ran, by title
    refused_methods: list[str] = field(default_factory=list)  # methods explain refused for this model, with why
    model_config_name: str | None = None
    image_size: str = "n/a"
    stretch: dict[str, Any] | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    split_by: str | None = None
    count_lines: list[str] = field(default_factory=list)
    metric_rows: list[dict[str, str]] = field(default_factory=list)
    has_test: bool = False
    confusion_rows: list[dict[str, Any]] = field(default_factory=list)
    per_condition: list[dict[str, str]] = field(default_factory=list)
    sham_rows: list[dict[str, str]] = field(default_factory=list)
    sham_text: str = ""
    baseline: dict[str, str] | None = None
    training_rows: list[dict[str, str]] = field(default_factory=list)
    training_figures: list[dict[str, str]] = field(default_factory=list)
    explain_figures: list[dict[str, str]] = field(default_factory=list)
    explain_split: str | None = None
    explain_num_images: str | None = None
    faithfulness_columns: list[str] = field(default_factory=list)
    faithfulness_rows: list[dict[str, Any]] = field(default_factory=list)
    faithfulness_reading: list[str] = field(default_factory=list)
    causal_rows: list[dict[str, str]] = field(default_factory=list)
    perturbation_rows: list[dict[str, str]] = field(default_factory=list)
    audit: dict[str, Any] | None = None  # `audit_fact`: accuracy on new plates
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(config: dict | None, data: DataSummary) -> list[str]:
    """The model's classes (config.json), else the ones the results record."""
    try:
        return labels_of(config or {})
    except (ModelLoadError, ValueError, KeyError):
        return list(data.labels)


def per_class_rows(labels: list[str], test: SplitMetrics | None) -> list[dict[str, str]]:
    """Accuracy within each true class (the confusion matrix's row recall): per dose for the dose task."""
    rows = []
    for label, row in zip(labels, test.confusion_matrix if test else [], strict=False):
        n = sum(row)
        rows.append({"label": label, "n": fmt(n), "accuracy": fmt(row[labels.index(label)] / n if n else None)})
    return rows


def _metric_rows(val: SplitMetrics | None, test: SplitMetrics | None) -> list[dict[str, str]]:
    value = {name: (getattr(val, key, None), getattr(test, key, None)) for key, name, *_ in METRICS_SHOWN}
    return [{"name": n, "validation": fmt(v), "test": fmt(t)} for n, (v, t) in value.items() if (v, t) != (None, None)]


def figure_alt(path: Path, titles: dict[str, str] | None = None) -> str:
    """A readable alt text: a known figure's description, else a sentence naming the method (`titles` maps a
    method's folder name to its display name) and the image's file name verbatim, rather than the file name
    mangled into words."""
    if path.stem in FIGURE_ALT:
        return FIGURE_ALT[path.stem]
    method = (titles or {}).get(path.parent.name)
    what = f"{method} explanation" if method else "Explanation maps"
    return f"{what} of one image ({path.stem})"


def _figures(paths: list[Path], placed: dict[str, str], titles: dict[str, str] | None = None) -> list[dict[str, str]]:
    shown = [p for p in paths if str(p) in placed]
    return [{"caption": figure_alt(p, titles), "path": placed[str(p)]} for p in shown]


def _training_rows(training: Any) -> list[dict[str, str]]:
    """Hyperparameters keep their own precision (a 5e-05 learning rate is not 0.0001); the best checkpoint shows as
    its step, since checkpoint folders are never uploaded."""
    if training is None:
        return []
    rows = []
    for key, value in asdict(training).items():
        if value is None or key in TRAINING_HIDDEN:
            continue
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        rows.append({"name": key.replace("_", " "), "value": shown})
    step = re.fullmatch(r".*checkpoint-(\d+)", str(training.best_model_checkpoint or ""))
    if step:
        rows.append({"name": "best model from step", "value": step[1]})
    return rows


def _stretch(preprocessor: dict | None) -> dict[str, Any] | None:
    stretch = (preprocessor or {}).get("bps_preprocessing")
    if not isinstance(stretch, dict):
        return None
    clip = stretch.get("clip")
    clip_text = " to ".join(fmt(float(v), 1) for v in clip) if isinstance(clip, list) and len(clip) == 2 else None
    low, high = fmt(stretch.get("low_percentile"), 2), fmt(stretch.get("high_percentile"), 2)
    return {"low": low, "high": high, "clip": clip_text}


def _architecture(run: RunFolder) -> dict[str, Any]:
    """The backbone: model_type and class from bps_results.json, else from config.json (runs that predate them)."""
    model = run.results.model if run.results else None
    config = run.config or {}
    model_type = (model.architecture if model else None) or config.get("model_type")
    model_class = (model.model_class if model else None) or next(iter(config.get("architectures") or []), None)
    known = ARCHITECTURES.get(model_type)
    return {"architecture": known.name if known else (model_type or "Vision Transformer"),
            "model_type": model_type, "model_class": model_class}


def _image_size(run: RunFolder) -> Any:
    size = (run.preprocessor or {}).get("size")
    size = (size.get("height") or size.get("shortest_edge")) if isinstance(size, dict) else None
    return size or (run.config or {}).get("image_size")


def _method_titles(explanation: ExplanationResults | None) -> dict[str, str]:
    """method -> the display name the explain step recorded (its name where an older file has none)."""
    methods = explanation.methods if explanation is not None else {}
    return {name: summary.title or name for name, summary in methods.items()}


def _faithfulness(explanation: ExplanationResults | None) -> tuple[list[str], list[dict[str, Any]]]:
    methods = explanation.methods if explanation is not None else {}
    titles = _method_titles(explanation)
    columns = [(k, t) for k, t in FAITHFULNESS_COLUMNS if any(getattr(m, k) is not None for m in methods.values())]
    rows = [{"method": titles[name], "cells": [fmt(getattr(summary, k)) for k, _ in columns]}
            for name, summary in methods.items()]
    return [title for _, title in columns], rows


#: (the paired gain with its 95% interval, the verdict that reads it, what it compares), as explain writes them.
INTERVAL_GAINS = (
    ("deletion_log_odds_gain", "deletion", "deletion vs random order, log-odds"),
    ("insertion_log_odds_gain", "insertion", "insertion vs random order, log-odds"),
    ("foci_mass_gain", "foci_mass", "mass on foci vs centre map"),
    ("pointing_game_gain", "pointing_game", "pointing game vs centre map"),
)


def verdict_word(verdict: bool | None) -> str:
    """The explain step's verdict in words; the card never decides one itself."""
    return "no verdict" if verdict is None else ("better" if verdict else "not better")


def _method_reading(title: str, summary: MethodSummary) -> str | None:
    """Each paired gain with its interval and the explain step's verdict on it, then the randomisation check."""
    verdicts = summary.beats_baseline
    parts = []
    for key, check, what in INTERVAL_GAINS:
        gain = getattr(summary, key)
        if gain is not None:
            low, high = gain.ci95
            parts.append(f"{what} {gain.mean:+.3f} [{low:+.3f}, {high:+.3f}]: {verdict_word(getattr(verdicts, check))}")
    if summary.randomization_spearman is not None:
        passed = {True: "passes", False: "fails", None: "no verdict on"}[verdicts.randomization]
        parts.append(f"the model-randomisation check (Spearman {summary.randomization_spearman:.3f}): {passed} it")
    notes = f" ({'; '.join(summary.verdict_notes)}: no verdict)" if summary.verdict_notes else ""
    return f"{title}: {'; '.join(parts)}{notes}." if parts else None


def causal_rows(explanation: ExplanationResults | None) -> list[dict[str, str]]:
    """The causal foci test (synthetic data): accuracy untouched, with the true foci ablated, with as many random
    nucleus pixels ablated."""
    test = explanation.causal_foci_test if explanation is not None else None
    if test is None:
        return []
    names = (("untouched", "untouched"), ("foci_ablated", "true foci ablated (raw image)"),
             ("random_nucleus_ablated", "as many random nucleus pixels ablated"))
    return [{"name": title, "accuracy": fmt(row.accuracy), "balanced_accuracy": fmt(row.balanced_accuracy),
             "p_true": fmt(row.mean_p_true)} for row, title in ((getattr(test, key), title) for key, title in names)]


def perturbation_rows(explanation: ExplanationResults | None) -> list[dict[str, str]]:
    """What the model says when the WHOLE image is perturbed: a perturbation that leaves it far above chance does
    not remove the signal, and no faithfulness verdict built on it is trusted."""
    check = explanation.perturbation_check if explanation is not None else None
    if check is None:
        return []
    withheld = f"no verdict: {check.no_verdict}" if check.no_verdict else "no verdict"
    words = {True: "yes", False: "**no**", None: withheld}
    return [{"name": name, "balanced_accuracy": fmt(result.balanced_accuracy),
             "removes_signal": words[result.removes_signal]}
            for name, result in check.perturbations.items()]


def faithfulness_reading(explanation: ExplanationResults | None) -> list[str]:
    """One sentence per method: its numbers and the explain step's verdicts on them (`beats_baseline`), as they are
    in explain_metrics.json: "better" only where explain said so."""
    titles = _method_titles(explanation)
    lines = [_method_reading(titles[name], summary)
             for name, summary in (explanation.methods if explanation is not None else {}).items()]
    return [line for line in lines if line]


def sham_share_rows(sham: Any) -> list[dict[str, str]]:
    """The predicted-class shares on sham images, as table rows (overall first, then per branch)."""
    shares = getattr(sham, "predicted_share", None) or {}
    ordered = sorted(shares.items(), key=lambda item: item[0] != "all")
    return [{"name": f"predicted, {'all sham images' if group == 'all' else f'{group} branch'}",
             "value": ", ".join(f"{label} {100 * share:.1f}%" for label, share in row.items())}
            for group, row in ordered]


#: The card's one sentence when the data named no groups (the split report's and console's note says the same).
GROUPS_UNKNOWN_CARD = ("Groups unknown: the data named no plate, well or field, so images were split one by one and "
                       "crops of one field or plate may sit in both train and test; accuracy may be inflated.")


def _dataset(data: DataSummary) -> dict[str, str]:
    if data.source in OWN_SOURCES:
        return OWN_DATASET
    return SYNTHETIC_DATASET if data.synthetic else REAL_DATASET


def card_title(model_name: str | None, repo_id: str | None, labels: list[str] | None = None) -> str:
    """--model_name, else the repo id's name, else a descriptive default (naming the classes when the task is not
    the particle type); never the run folder's name."""
    default = f"bps-vit: {' vs '.join(labels)} classifier for microscopy" if labels else DEFAULT_TITLE
    return (model_name or "").strip() or (repo_id.split("/")[-1] if repo_id else "") or default


def audit_fact(audit: AuditResults | None, test: SplitMetrics | None, split_by: str | None) -> dict[str, Any] | None:
    """Accuracy on new plates (plate-held-out cross-validation), with its interval, next to the split's test
    accuracy, and the audit's inflation verdicts in its own words."""
    plate = audit.strategies.get("plate") if audit is not None else None
    if plate is None:
        return None
    return {
        "accuracy": str(plate.accuracy), "balanced_accuracy": str(plate.balanced_accuracy),
        "num_plates": plate.num_folds, "test_accuracy": fmt(test.accuracy if test else None, 3),
        "split_by": split_by or "n/a",
        "verdicts": [item.verdict for item in audit.inflation if item.metric == "accuracy"],
    }


def _task_facts(task: str, results: RunResults, labels: list[str], test: SplitMetrics | None) -> dict[str, Any]:
    """What the model was trained to tell apart, on which data, and the task's confound (the dose-matched pairs)."""
    data = results.data or DataSummary(data_dir="")
    return {
        "label_column": task,
        "task_name": TASK_NAMES.get(task, task),
        "particle_task": task == "particle_type",
        "own_data": data.source in OWN_SOURCES,
        "groups_note": "" if data.groups_known else GROUPS_UNKNOWN_CARD,
        "per_class": per_class_rows(labels, test),
        "confound_note": results.confound.note if results.confound else "",
        "pair_rows": [{"pair": p.pair, "n": fmt(p.n), "accuracy": fmt(p.accuracy),
                       "balanced_accuracy": fmt(p.balanced_accuracy)}
                      for p in (results.confound.dose_matched_pairs if results.confound else [])],
    }


def card_facts(run: RunFolder, repo_id: str | None = None, export_figures: dict[str, str] | None = None,
               model_name: str | None = None) -> CardFacts:
    """The card's facts: attribute access on the typed results, nothing guessed."""
    results = run.results or RunResults()
    val, test, sham = results.splits.get("validation"), results.splits.get("test"), results.sham_control
    data, model = results.data or DataSummary(data_dir=""), results.model
    labels, placed, explanation = _labels(run.config, data), export_figures or {}, run.explanation
    if sham is not None and len(labels) == len(sham.confusion_matrix):  # judged by the model's own class names
        sham = ShamControl.judge(sham, tuple(labels))
    base_model = model.base_model if model is not None else None
    faith_columns, faith_rows = _faithfulness(explanation)
    task = data.label_column or ("label" if data.source in OWN_SOURCES else "particle_type")
    return CardFacts(
        model_name=card_title(model_name, repo_id, labels if task != "particle_type" else None),
        model_id=repo_id or f"your-username/{run.run_name}",
        run_name=run.run_name,
        labels=labels,
        **_task_facts(task, results, labels, test),
        synthetic=data.synthetic,
        dataset_name=_dataset(data)["name"],
        base_model_id=base_model,
        from_scratch=base_model is None,
        **_architecture(run),
        explanation_methods=", ".join(_method_titles(explanation).values()),
        refused_methods=list(explanation.refused_methods.values()) if explanation else [],
        model_config_name=model and (model.config_name or model.model_name_or_path),
        image_size=fmt(_image_size(run)),
        stretch=_stretch(run.preprocessor),
        image_mean=(run.preprocessor or {}).get("image_mean"),
        image_std=(run.preprocessor or {}).get("image_std"),
        split_by=data.split_by,
        count_lines=[f"{s}: {sum(c.values())} images ({', '.join(f'{k}: {v}' for k, v in c.items())})"
                     for s, c in data.counts.items()],
        metric_rows=_metric_rows(val, test),
        has_test=test is not None,
        confusion_rows=[{"label": label, "cells": [fmt(v) for v in row]}
                        for label, row in zip(labels, test.confusion_matrix if test else [], strict=False)],
        per_condition=[{"condition": c.condition, "n": fmt(c.n), "accuracy": fmt(c.accuracy)}
                       for c in (test.per_condition if test else [])],
        sham_rows=([{"name": name, "value": fmt(getattr(sham, key))} for key, name in SHAM_SHOWN]
                   + sham_share_rows(sham)) if sham else [],
        sham_text=sham.interpretation if sham else "",
        baseline={"majority_class": results.baseline.majority_class, "accuracy": fmt(results.baseline.accuracy),
                  "interpretation": results.baseline.interpretation or ""}
        if results.baseline else None,
        training_rows=_training_rows(results.training),
        training_figures=_figures(run.training_figures(), placed),
        explain_figures=_figures(run.explain_figures(), placed, _method_titles(explanation)),
        explain_split=explanation.split if explanation else None,
        explain_num_images=fmt(explanation.num_images) if explanation else None,
        faithfulness_columns=faith_columns,
        faithfulness_rows=faith_rows,
        faithfulness_reading=faithfulness_reading(explanation),
        causal_rows=causal_rows(explanation),
        perturbation_rows=perturbation_rows(explanation),
        audit=audit_fact(run.audit, test, data.split_by),
        problems=list(run.problems),
        missing=_missing_files(run),
    )


def _missing_files(run: RunFolder) -> list[str]:
    """The results files the card would read and the run folder lacks."""
    return [name for name, value in ((RunResults.FILENAME, run.results),
                                     (f"explain/{ExplanationResults.FILENAME}", run.explanation)) if value is None]


# --------------------------------------------------------------------------- rendering


def find_template(template_path: str | os.PathLike | None = None) -> Path:
    """The card template: an explicit path, else the one shipped in the package beside this module."""
    candidate = Path(template_path) if template_path else Path(__file__).resolve().parent / TEMPLATE_NAME
    if candidate.is_file():
        return candidate
    raise CardTemplateError(
        f"Model card template not found at {candidate}. "
        "Pass --card_template path/to/model_card.md or reinstall bps-vit."
    )


def card_data(run: RunFolder, facts: CardFacts, license: str = DEFAULT_LICENSE):
    """The card's YAML metadata, with a model-index holding the TEST metrics."""
    dataset = _dataset((run.results.data if run.results else None) or DataSummary(data_dir=""))
    test = (run.results.splits.get("test") if run.results else None) or SplitMetrics(n=0)
    task_name = "Fe-ion vs X-ray" if facts.particle_task else f"{facts.task_name}: {', '.join(facts.labels)}"
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name=f"Image classification ({task_name})",
            dataset_type=dataset["id"],
            dataset_name=dataset["name"],
            dataset_split="test",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=getattr(test, key),
            **({"metric_args": {"average": "macro"}} if key == "f1_macro" else {}),
        )
        for key, _, metric_type, metric_name in METRICS_SHOWN
        if metric_type is not None and getattr(test, key) is not None
    ]
    plate = run.audit.strategies.get("plate") if run.audit is not None else None
    eval_results += [
        EvalResult(task_type="image-classification", task_name="Image classification (Fe-ion vs X-ray)",
                   dataset_type=dataset["id"], dataset_name=dataset["name"],
                   dataset_split="plate-held-out cross-validation", metric_type=key, metric_name=name,
                   metric_value=getattr(plate, key).estimate)
        for key, name in (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"))
        if plate is not None and getattr(plate, key).estimate is not None
    ]
    return ModelCardData(
        model_name=facts.model_name,
        license=license,
        library_name="transformers",
        # kept: it is the task, the Hub infers it from ViTForImageClassification anyway (dropping it would not remove
        # the upload widget, only hide the model from task search), and the card's first screen warns that the
        # widget's 8-bit path misreads raw 16-bit TIFFs
        pipeline_tag="image-classification",
        tags=list(CARD_TAGS) + [facts.model_type or "vit"] + (["synthetic-data"] if facts.synthetic else []),
        datasets=[dataset["id"]],
        metrics=[metric_type for _, _, metric_type, _ in METRICS_SHOWN if metric_type],
        base_model=facts.base_model_id,
        eval_results=eval_results or None,
    )


def build_model_card(
    run_dir: str | os.PathLike | RunFolder,
    explain_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    template_path: str | os.PathLike | None = None,
    export_figures: dict[str, str] | None = None,
    model_name: str | None = None,
):
    """Render the model card (a `huggingface_hub.ModelCard`) for a run folder.

    `export_figures` maps each source figure path to its relative path in the export folder;
    without it, figures are referenced where the export would put them.
    """
    run = run_dir if isinstance(run_dir, RunFolder) else read_run(run_dir, explain_dir)
    if export_figures is None:
        export_figures = {str(src): rel for src, rel in figure_plan(run)}
    facts = card_facts(run, repo_id=repo_id, export_figures=export_figures, model_name=model_name)
    return ModelCard.from_template(
        card_data=card_data(run, facts, license=license),
        template_path=str(find_template(template_path)),
        **facts.to_dict(),
    )


__all__ = ["CardFacts", "build_model_card", "card_facts", "find_template"]
