"""Publish a trained run: a model card built from the run's JSON files, an export folder, one Hub commit.

Why not `Trainer.push_to_hub`: its card names the dataset `imagefolder`, carries only validation
metrics and overwrites a custom README. Here the card is rendered from `model_card.md` with
`huggingface_hub.ModelCard.from_template`, every number read from the run's results files.

The export folder is built by ONE function for both `--dry_run` and a push, so what a user
inspects locally is exactly what goes to the Hub: safetensors weights, config, processor
(with the 16-bit stretch), README.md, figures/ and the metrics JSON; never optimizer states,
checkpoints, pickles or tokens. A push checks the token, repo id and account (cheap) before
copying weights (heavy), then makes `create_repo` + a single commit, so a failed push leaves
the export intact and re-running publish alone finishes the job.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .meta import LABELS

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "model_card.md"
DEFAULT_LICENSE = "apache-2.0"
CARD_TAGS = (
    "image-classification",
    "vision",
    "vit",
    "microscopy",
    "biology",
    "space-radiation",
    "nasa-bps",
    "explainability",
)
#: Dataset ids used in the card metadata (there is no official Hub copy of the BPS data; these are descriptive ids).
REAL_DATASET = {"id": "nasa-bps-microscopy", "name": "NASA BPS Microscopy (OSD-366)"}
SYNTHETIC_DATASET = {"id": "synthetic-bps-like", "name": "Synthetic BPS-like microscopy (bps-vit generator)"}
OSDR_STUDY_URL = "https://osdr.nasa.gov/bio/repo/data/studies/OSD-366"
BPS_BUCKET_URL = "https://nasa-bps-training-data.s3.us-west-2.amazonaws.com/Microscopy/train/"

RUN_RESULT_FILES = ("all_results.json", "test_results.json", "bps_results.json")
EXPLAIN_METRICS_FILE = "explain_metrics.json"
MODEL_FILES = ("config.json", "preprocessor_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: `hf_` followed by 30+ letters/digits: the shape of a Hugging Face user access token.
TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
_TOKEN_TEXT_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")

# (key in the results files, name shown in the card, EvalResult metric_type, metric_name)
METRICS_SHOWN = (
    ("accuracy", "Accuracy", "accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy", "balanced_accuracy", "Balanced accuracy"),
    ("f1_macro", "F1 (macro)", "f1", "F1 (macro)"),
    ("roc_auc", "ROC AUC", "roc_auc", "ROC AUC"),
    ("loss", "Loss (cross-entropy)", None, None),
)
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
METHOD_NAMES = {"rollout": "Attention rollout", "grad_rollout": "Gradient rollout", "shap": "SHAP (partition)"}


class PublishError(RuntimeError):
    """Publishing cannot go on; the message says why and what to do (it never contains a token)."""


class TokenLeakError(PublishError):
    """Something that looks like an access token would have been exported."""


# --------------------------------------------------------------------------- reading a run


def _read_json(path: Path, problems: list[str]) -> Any | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        problems.append(f"{path}: unreadable JSON ({err}); its section of the card says 'not available'.")
        logger.warning("%s: unreadable JSON (%s); treated as missing.", path, err)
        return None


@dataclass
class RunFiles:
    """What a run folder (and its explanation folder) holds, read once; None where a file is missing."""

    run_dir: Path
    explain_dir: Path
    all_results: dict | None = None
    test_results: dict | None = None
    bps_results: dict | None = None
    explain_metrics: dict | None = None
    preprocessor: dict | None = None
    config: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        return self.run_dir.resolve().name

    def training_figures(self) -> list[Path]:
        return sorted((self.run_dir / "figures").glob("*.png"))

    def explain_figures(self) -> list[Path]:
        return sorted((self.explain_dir / "figures").rglob("*.png"))


def read_run(run_dir: str | os.PathLike, explain_dir: str | os.PathLike | None = None) -> RunFiles:
    run_dir = Path(run_dir)
    explain = Path(explain_dir) if explain_dir is not None else run_dir / "explain"
    files = RunFiles(run_dir=run_dir, explain_dir=explain)
    for name in RUN_RESULT_FILES:
        data = _read_json(run_dir / name, files.problems)
        setattr(files, name[: -len(".json")], data if isinstance(data, dict) else None)
    metrics = _read_json(explain / EXPLAIN_METRICS_FILE, files.problems)
    files.explain_metrics = metrics if isinstance(metrics, dict) else None
    for attr, name in (("preprocessor", "preprocessor_config.json"), ("config", "config.json")):
        data = _read_json(run_dir / name, files.problems)
        setattr(files, attr, data if isinstance(data, dict) else None)
    return files


# --------------------------------------------------------------------------- formatting helpers


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value: Any, digits: int = 4) -> str:
    """A number as the card shows it; anything missing or non-numeric reads 'n/a'."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    number = _number(value)
    if number is None:
        return "n/a" if value is None or isinstance(value, (int, float)) else str(value)
    return f"{number:.{digits}f}"


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def metrics_on_test(run: RunFiles) -> dict[str, float]:
    """Test-split metrics, from test_results.json (Trainer naming) and else bps_results.json["test"]."""
    found: dict[str, float] = {}
    for key, *_ in METRICS_SHOWN:
        value = _number(_dig(run.test_results, f"test_{key}"))
        if value is None:
            value = _number(_dig(run.bps_results, "test", key))
        if value is None:
            value = _number(_dig(run.all_results, f"test_{key}"))
        if value is not None:
            found[key] = value
    return found


def metrics_on_validation(run: RunFiles) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, *_ in METRICS_SHOWN:
        value = _number(_dig(run.bps_results, "validation", key))
        if value is None:
            value = _number(_dig(run.all_results, f"eval_{key}"))
        if value is not None:
            found[key] = value
    return found


def is_synthetic_run(run: RunFiles) -> bool:
    """Whether the run trained on synthetic data, from bps_results.json["data"] (source/synthetic/data_dir)."""
    data = _dig(run.bps_results, "data")
    if not isinstance(data, dict):
        return False
    if data.get("synthetic") is True:
        return True
    for key in ("source", "data_source", "kind"):
        if isinstance(data.get(key), str) and "synthetic" in data[key].lower():
            return True
    data_dir = data.get("data_dir")
    return isinstance(data_dir, str) and "synthetic" in data_dir.lower()


def hub_base_model(run: RunFiles) -> str | None:
    """The Hub checkpoint the run was fine-tuned from; None for from-scratch configs or local folders."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    model = _dig(run.bps_results, "model") or {}
    name = model.get("model_name_or_path") if isinstance(model, dict) else None
    if not isinstance(name, str) or not name or model.get("config_name"):
        return None
    if name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") != 1:
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _counts_lines(counts: Any) -> list[str]:
    """Split sizes as readable lines, whatever nesting the split report used."""
    if not isinstance(counts, dict):
        return []
    lines = []
    for split, value in counts.items():
        if isinstance(value, dict):
            parts = ", ".join(f"{k}: {fmt(v)}" for k, v in value.items() if not isinstance(v, (dict, list)))
            total = sum(v for v in value.values() if isinstance(v, int) and not isinstance(v, bool))
            lines.append(f"{split}: {total} images ({parts})" if parts else f"{split}")
        else:
            lines.append(f"{split}: {fmt(value)}")
    return lines


def sham_interpretation(sham: dict | None) -> str:
    """Read the sham (0 Gy) control: near chance is expected; above chance means a plate/batch signal."""
    if not isinstance(sham, dict):
        return ""
    n = sham.get("n")
    score = _number(sham.get("balanced_accuracy"))
    name = "balanced accuracy"
    if score is None:
        score, name = _number(sham.get("accuracy")), "accuracy"
    if score is None or not isinstance(n, int) or n <= 0:
        return "The sham control could not be interpreted (no score or no images)."
    band = 2.0 * math.sqrt(0.25 / n)  # ~95% range of a fair coin's accuracy on n images
    low, high = 0.5 - band, 0.5 + band
    where = f"{name} {score:.3f} on {n} sham images; chance range 0.5 ± {band:.3f}"
    if score > high:
        return (
            f"Warning: {where}. The model separates the Fe and X-ray branches even without radiation, "
            "so part of what it learned is a plate/batch signature rather than radiation damage."
        )
    if score < low:
        return (
            f"{where}. Below chance: the model systematically assigns the opposite branch to unirradiated "
            "cells; this too points at a batch signal rather than damage."
        )
    return (
        f"{where}. Within chance, as expected if the model reads radiation damage rather than "
        "which plate or branch an image came from."
    )


# --------------------------------------------------------------------------- the card


def find_template(template_path: str | os.PathLike | None = None) -> Path:
    """The card template: an explicit path, else the repo's top-level model_card.md, else the packaged copy."""
    candidates = (
        [Path(template_path)]
        if template_path
        else [Path(__file__).resolve().parents[1] / TEMPLATE_NAME, Path(__file__).resolve().parent / "templates" / TEMPLATE_NAME]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise PublishError(
        f"Model card template not found (looked in {', '.join(str(c) for c in candidates)}). "
        "Pass --card_template path/to/model_card.md or reinstall bps-vit."
    )


def card_context(run: RunFiles, repo_id: str | None = None, export_figures: dict[str, str] | None = None) -> dict:
    """Everything the template shows, as display-ready strings and rows; numbers come only from the run's files."""
    synthetic = is_synthetic_run(run)
    bps = run.bps_results or {}
    val, test = metrics_on_validation(run), metrics_on_test(run)
    metric_rows = [
        {"name": shown, "validation": fmt(val.get(key)), "test": fmt(test.get(key))}
        for key, shown, *_ in METRICS_SHOWN
        if key in val or key in test
    ]
    labels = LABELS
    id2label = _dig(run.config, "id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            labels = tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k)))
        except (ValueError, TypeError):
            pass

    confusion = _dig(bps, "test", "confusion_matrix")
    confusion_rows = []
    if isinstance(confusion, list) and len(confusion) == len(labels):
        for label, row in zip(labels, confusion):
            if isinstance(row, list):
                confusion_rows.append({"label": label, "cells": [fmt(v) for v in row]})

    per_condition = []
    for row in bps.get("per_condition") or []:
        if isinstance(row, dict):
            per_condition.append(
                {
                    "condition": str(row.get("condition", "n/a")),
                    "n": fmt(row.get("n")),
                    "accuracy": fmt(row.get("accuracy")),
                }
            )

    sham = bps.get("sham_control") if isinstance(bps.get("sham_control"), dict) else None
    sham_rows = (
        [
            {"name": k.replace("_", " "), "value": fmt(v)}
            for k, v in sham.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if sham
        else []
    )
    # the run's own reading of the control (metrics.sham_control) when it wrote one, else the card's
    sham_text = sham.get("interpretation") if sham and isinstance(sham.get("interpretation"), str) else None
    sham_text = sham_text or sham_interpretation(sham)
    baseline = bps.get("baseline") if isinstance(bps.get("baseline"), dict) else None

    stretch = _dig(run.preprocessor, "bps_preprocessing")
    stretch = stretch if isinstance(stretch, dict) else None
    size = _dig(run.preprocessor, "size")
    image_size = None
    if isinstance(size, dict):
        image_size = size.get("height") or size.get("shortest_edge")
    image_size = image_size or _dig(run.config, "image_size")

    data = bps.get("data") if isinstance(bps.get("data"), dict) else {}
    training = bps.get("training") if isinstance(bps.get("training"), dict) else {}
    model_info = bps.get("model") if isinstance(bps.get("model"), dict) else {}

    export_figures = export_figures or {}
    training_figures = [
        {"caption": p.stem.replace("_", " ").capitalize(), "path": export_figures[str(p)]}
        for p in run.training_figures()
        if str(p) in export_figures
    ]
    explain_figures = [
        {"caption": p.stem.replace("_", " ").capitalize(), "path": export_figures[str(p)]}
        for p in run.explain_figures()
        if str(p) in export_figures
    ]
    explain = run.explain_metrics or {}
    methods = explain.get("methods") if isinstance(explain.get("methods"), dict) else {}
    columns = [
        (key, title)
        for key, title in FAITHFULNESS_COLUMNS
        if any(isinstance(m, dict) and m.get(key) is not None for m in methods.values())
    ]
    faithfulness_rows = [
        {"method": METHOD_NAMES.get(name, name), "cells": [fmt(values.get(key)) for key, _ in columns]}
        for name, values in methods.items()
        if isinstance(values, dict)
    ]

    base_model = hub_base_model(run)
    return {
        "model_name": (repo_id.split("/")[-1] if repo_id else None) or run.run_name,
        "model_id": repo_id or f"your-username/{run.run_name}",
        "run_name": run.run_name,
        "labels": list(labels),
        "synthetic": synthetic,
        "dataset_name": (SYNTHETIC_DATASET if synthetic else REAL_DATASET)["name"],
        "osdr_url": OSDR_STUDY_URL,
        "bucket_url": BPS_BUCKET_URL,
        "base_model_id": base_model,
        "from_scratch": base_model is None,
        "model_config_name": model_info.get("config_name") or model_info.get("model_name_or_path"),
        "image_size": fmt(image_size) if image_size is not None else "n/a",
        "stretch": (
            {
                "low": fmt(stretch.get("low_percentile"), 2),
                "high": fmt(stretch.get("high_percentile"), 2),
                "clip": (
                    " to ".join(fmt(v, 1) for v in stretch["clip"])
                    if isinstance(stretch.get("clip"), list) and len(stretch["clip"]) == 2
                    else None
                ),
            }
            if stretch
            else None
        ),
        "image_mean": _dig(run.preprocessor, "image_mean"),
        "image_std": _dig(run.preprocessor, "image_std"),
        "split_by": data.get("split_by") if isinstance(data.get("split_by"), str) else None,
        "count_lines": _counts_lines(data.get("counts")),
        "metric_rows": metric_rows,
        "has_test": bool(test),
        "confusion_labels": list(labels),
        "confusion_rows": confusion_rows,
        "per_condition": per_condition,
        "sham_rows": sham_rows,
        "sham_text": sham_text,
        "baseline": (
            {"majority_class": str(baseline.get("majority_class", "n/a")), "accuracy": fmt(baseline.get("accuracy"))}
            if baseline
            else None
        ),
        "training_rows": [  # hyperparameters keep their own precision (a 5e-05 learning rate is not 0.0001)
            {"name": k.replace("_", " "), "value": f"{v:.6g}" if isinstance(v, float) else fmt(v)}
            for k, v in training.items()
            if not isinstance(v, (dict, list))
        ],
        "training_figures": training_figures,
        "explain_figures": explain_figures,
        "explain_split": explain.get("split") if isinstance(explain.get("split"), str) else None,
        "explain_num_images": fmt(explain.get("num_images")) if explain else None,
        "faithfulness_columns": [title for _, title in columns],
        "faithfulness_rows": faithfulness_rows,
        "problems": list(run.problems),
        "missing": [
            name
            for name, value in (
                ("bps_results.json", run.bps_results),
                ("test_results.json", run.test_results),
                ("all_results.json", run.all_results),
                (f"explain/{EXPLAIN_METRICS_FILE}", run.explain_metrics),
            )
            if value is None
        ],
    }


def card_data(run: RunFiles, repo_id: str | None = None, license: str = DEFAULT_LICENSE):
    """The card's YAML metadata, with a model-index holding the TEST metrics."""
    from huggingface_hub import EvalResult, ModelCardData

    synthetic = is_synthetic_run(run)
    dataset = SYNTHETIC_DATASET if synthetic else REAL_DATASET
    test = metrics_on_test(run)
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image classification (Fe-ion vs X-ray)",
            dataset_type=dataset["id"],
            dataset_name=dataset["name"],
            dataset_split="test",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=test[key],
            **({"metric_args": {"average": "macro"}} if key == "f1_macro" else {}),
        )
        for key, _, metric_type, metric_name in METRICS_SHOWN
        if metric_type is not None and key in test
    ]
    model_name = (repo_id.split("/")[-1] if repo_id else None) or run.run_name
    return ModelCardData(
        model_name=model_name,
        license=license,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=list(CARD_TAGS) + (["synthetic-data"] if synthetic else []),
        datasets=[dataset["id"]],
        metrics=[metric_type for _, _, metric_type, _ in METRICS_SHOWN if metric_type],
        base_model=hub_base_model(run),
        eval_results=eval_results or None,
    )


def build_model_card(
    run_dir: str | os.PathLike,
    explain_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    template_path: str | os.PathLike | None = None,
    export_figures: dict[str, str] | None = None,
):
    """Render the model card (a `huggingface_hub.ModelCard`) for a run folder.

    `export_figures` maps each source figure path to its relative path in the export folder;
    without it, figures are referenced where `build_export` would put them.
    """
    from huggingface_hub import ModelCard

    run = read_run(run_dir, explain_dir)
    if export_figures is None:
        export_figures = {str(src): rel for src, rel in _figure_plan(run)}
    return ModelCard.from_template(
        card_data=card_data(run, repo_id=repo_id, license=license),
        template_path=str(find_template(template_path)),
        **card_context(run, repo_id=repo_id, export_figures=export_figures),
    )


# --------------------------------------------------------------------------- the export folder


def check_model_folder(model_dir: str | os.PathLike) -> list[Path]:
    """The safetensors weight files of a saved model; refuses pickle-only folders and non-models."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PublishError(f"--model {model_dir}: no such folder. Pass the training run folder (outputs/<run>).")
    if not (model_dir / "config.json").is_file():
        raise PublishError(f"--model {model_dir}: no config.json; this is not a saved model folder.")
    weights = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.safetensors.index.json"))
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles and weights:
        logger.info("%s: leaving pickle files %s out of the export (safetensors only).", model_dir, pickles)
    if not any(p.suffix == ".safetensors" for p in weights):
        detail = f" It holds only pickle files {pickles}, which are refused (loading them can run code)." if pickles else ""
        raise PublishError(
            f"--model {model_dir}: no *.safetensors weights.{detail} Re-save the model with "
            "model.save_pretrained(dir) (safetensors is the default) and publish that folder."
        )
    return weights


def _figure_plan(run: RunFiles) -> list[tuple[Path, str]]:
    """(source, path in export) for every figure: training figures at figures/, explanations at figures/explain/."""
    plan = [(p, f"figures/{p.name}") for p in run.training_figures()]
    root = run.explain_dir / "figures"
    plan += [(p, f"figures/explain/{p.relative_to(root).as_posix()}") for p in run.explain_figures()]
    return plan


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
        raise PublishError(f"--export_dir {export_dir} would contain the run folder itself; choose another folder.")
    if export_dir.exists():
        if not export_dir.is_dir():
            raise PublishError(f"--export_dir {export_dir} is a file; choose a folder.")
        strangers = sorted(p.name for p in export_dir.iterdir() if not _is_export_entry(p.name))
        if strangers:
            raise PublishError(
                f"--export_dir {export_dir} holds files that are not part of an export ({strangers[:5]}); "
                "choose a new or empty folder."
            )


def scan_for_tokens(folder: str | os.PathLike, token: str | None = None) -> list[str]:
    """Files under `folder` holding something token-shaped (hf_ + 30 alphanumerics) or the given token."""
    needles = [token.encode()] if token else []
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        hit = False
        overlap = b""
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                window = overlap + chunk
                if TOKEN_PATTERN.search(window) or any(n in window for n in needles):
                    hit = True
                    break
                overlap = window[-256:]
        if hit:
            found.append(str(path.relative_to(folder)))
    return found


def redact(text: str, token: str | None = None) -> str:
    """A message safe to print: the token value and anything token-shaped are masked."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_TEXT_PATTERN.sub("hf_***", text)


def build_export(
    model_dir: str | os.PathLike,
    export_dir: str | os.PathLike,
    *,
    explain_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    template_path: str | os.PathLike | None = None,
    token: str | None = None,
) -> list[str]:
    """Write the folder that goes to the Hub; returns its files (relative, sorted).

    Built in a staging folder, scanned for tokens, then swapped in: a failure leaves any
    previous export as it was.
    """
    model_dir, export_dir = Path(model_dir), Path(export_dir)
    weights = check_model_folder(model_dir)
    _prepare_export_target(export_dir, model_dir)
    run = read_run(model_dir, explain_dir)
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
    for problem in run.problems:
        logger.warning(problem)
    missing = [n for n in RUN_RESULT_FILES if getattr(run, n[:-5]) is None]
    if missing:
        logger.warning("%s: missing %s; the card marks those sections 'not available'.", model_dir, missing)

    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = export_dir.parent / f".{export_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        for path in weights:
            shutil.copy2(path, staging / path.name)
        for name in MODEL_FILES:
            shutil.copy2(model_dir / name, staging / name)
        for name in RUN_RESULT_FILES:
            if getattr(run, name[:-5]) is not None:
                shutil.copy2(model_dir / name, staging / name)
        if run.explain_metrics is not None:
            shutil.copy2(run.explain_dir / EXPLAIN_METRICS_FILE, staging / EXPLAIN_METRICS_FILE)
        figures = _figure_plan(run)
        for source, relative in figures:
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        if (model_dir / "examples").is_dir():  # a few test crops for the app's example gallery (space.write_examples)
            shutil.copytree(model_dir / "examples", staging / "examples")
        card = build_model_card(
            model_dir,
            explain_dir=run.explain_dir,
            repo_id=repo_id,
            license=license,
            template_path=template_path,
            export_figures={str(src): rel for src, rel in figures},
        )
        card.save(staging / "README.md")
        leaks = scan_for_tokens(staging, token)
        if leaks:
            raise TokenLeakError(
                f"Refusing to export: {leaks} contain(s) something that looks like a Hugging Face access token. "
                f"Remove it from the source files in {model_dir} (or {run.explain_dir}) and re-run."
            )
        if export_dir.exists():
            shutil.rmtree(export_dir)
        staging.rename(export_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p.relative_to(export_dir).as_posix() for p in export_dir.rglob("*") if p.is_file())
    logger.info("Export folder %s: %d files.", export_dir, len(files))
    return files


# --------------------------------------------------------------------------- pushing


@dataclass
class PublishResult:
    export_dir: Path
    files: list[str]
    repo_id: str | None
    pushed: bool
    commit_url: str | None = None


def check_repo_id(repo_id: str | None) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise PublishError("--repo_id is required to push (e.g. --repo_id your-username/bps-vit-tiny).")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PublishError(f"--repo_id {repo_id!r} is not a valid Hub repo id: {err}") from err
    if repo_id.count("/") != 1:
        raise PublishError(f"--repo_id {repo_id!r}: give it as USER/NAME or ORG/NAME (e.g. your-username/bps-vit-tiny).")
    return repo_id


def _http_status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _explain_hub_error(err: BaseException, action: str, repo_id: str, token: str | None) -> str:
    from huggingface_hub.errors import OfflineModeIsEnabled

    status = _http_status(err)
    detail = redact(f"{type(err).__name__}: {err}", token)
    if isinstance(err, OfflineModeIsEnabled):
        return f"{action}: HF_HUB_OFFLINE is set, so the Hub cannot be reached. Unset it (HF_HUB_OFFLINE=0) to push."
    if status == 401:
        return f"{action}: the token was rejected (401: invalid or expired). Create a new write token and `hf auth login`."
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
    role = _dig(identity, "auth", "accessToken", "role")
    if role == "read":
        raise PublishError(f"The token of {user or 'this account'} is read-only; create a write token to push {repo_id}.")
    namespace = repo_id.split("/")[0]
    if user and namespace != user and namespace not in orgs:
        raise PublishError(
            f"Permission denied: the token belongs to {user!r}, which is neither {namespace!r} nor a member of it. "
            f"Use --repo_id {user}/{repo_id.split('/')[1]} or a token of {namespace!r}."
        )
    return user or namespace


def current_token() -> str | None:
    """The token from the usual places (HF_TOKEN, the `hf auth login` cache); None when there is none."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception as err:  # e.g. a failed OIDC exchange; say why without echoing anything secret
        raise PublishError(f"Could not read the Hugging Face token ({type(err).__name__}); check HF_TOKEN.") from None


def default_commit_message(run_name: str) -> str:
    return f"Publish bps-vit run {run_name}"


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
) -> PublishResult:
    """Build the export folder and (unless `dry_run`) push it as one commit.

    `api` is an `HfApi` (injectable for tests). The token comes from `huggingface_hub.get_token()`
    (HF_TOKEN or the login cache) and is never printed or written.
    """
    model_dir = Path(model_dir)
    export_dir = Path(export_dir) if export_dir is not None else model_dir / "hub_export"
    if explain_dir is not None and not Path(explain_dir).is_dir():
        raise PublishError(f"--explain_dir {explain_dir}: no such folder (omit it to use <model>/explain).")
    token = current_token()
    if dry_run:
        if repo_id:
            check_repo_id(repo_id)
        check_model_folder(model_dir)
    else:
        check_repo_id(repo_id)
        check_model_folder(model_dir)
        if not token:
            raise PublishError(
                "No Hugging Face token found. Set HF_TOKEN or run `hf auth login` (a write token), "
                "or use --dry_run --export_dir DIR to build the folder without pushing."
            )
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi()
        user = check_push_access(api, repo_id, token)
        logger.info("Token OK (account %s); building the export for %s.", user, repo_id)

    files = build_export(
        model_dir,
        export_dir,
        explain_dir=explain_dir,
        repo_id=repo_id,
        license=license,
        template_path=template_path,
        token=token,
    )
    if dry_run:
        logger.info("Dry run: nothing pushed. The folder that would go to the Hub is %s.", export_dir)
        return PublishResult(export_dir=export_dir, files=files, repo_id=repo_id, pushed=False)

    message = commit_message or default_commit_message(model_dir.resolve().name)
    kept = f" The export at {export_dir} is intact; re-run the same publish command to finish."
    try:
        api.create_repo(repo_id=repo_id, token=token, private=private, exist_ok=True, repo_type="model")
    except Exception as err:
        raise PublishError(_explain_hub_error(err, f"Creating {repo_id}", repo_id, token) + kept) from None
    try:
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(export_dir),
            repo_type="model",
            token=token,
            commit_message=message,
            commit_description=f"{len(files)} files exported by bps-vit from run {model_dir.resolve().name}.",
            # stale figures/metrics from an earlier publish go in the same commit; other user files stay
            delete_patterns=["figures/**", "*_results.json", EXPLAIN_METRICS_FILE],
        )
    except Exception as err:
        raise PublishError(
            _explain_hub_error(err, f"Uploading to {repo_id}", repo_id, token)
            + kept
            + " (The upload is a single commit, so the Hub repo was not partially updated.)"
        ) from None
    url = getattr(commit, "commit_url", None) or (commit if isinstance(commit, str) else None)
    logger.info("Pushed %d files to %s in one commit.", len(files), repo_id)
    return PublishResult(export_dir=export_dir, files=files, repo_id=repo_id, pushed=True, commit_url=url)


@dataclass
class PublishArguments:
    """Arguments of scripts/publish.py."""

    model: str = field(metadata={"help": "Training run folder (outputs/<run>) with model.safetensors and results JSON."})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo USER/NAME (required unless --dry_run)."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    dry_run: bool = field(default=False, metadata={"help": "Write the export folder only; push nothing."})
    export_dir: str | None = field(
        default=None, metadata={"help": "Where the export folder is written (default: <model>/hub_export)."}
    )
    explain_dir: str | None = field(
        default=None, metadata={"help": "Explanation folder (default: <model>/explain) for figures and faithfulness."}
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (default names the run)."})
    license: str = field(default=DEFAULT_LICENSE, metadata={"help": "License id in the card metadata."})
    card_template: str | None = field(default=None, metadata={"help": "Card template (default: model_card.md)."})


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
    )


def list_export(folder: str | os.PathLike) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
