"""The interactive app: drop a 16-bit TIFF, see the model's call, the image as the model saw it, and why.

A face over the package with no logic of its own: uploads are checked by `app_uploads.check_upload`,
predicted by `predict.predict_paths` (the CSV is `predict.write_predictions_csv`, byte for byte
the format of `scripts/predict.py`), explained by `explain.image.explain_image` (the explain
step's own explainers) and drawn by `figures` (the explain step's colours and its
`plot_explanations` figure). Gradio is an optional extra: `pip install "bps-vit[app]"`.

Everything a user sends lands in the app's own temporary folder (`AppModel.work_dir`, given to
Gradio as its upload cache); results are written there too, one folder per request.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from . import figures
from .app_uploads import MAX_UPLOAD_BYTES, check_upload
from .explain.image import ImageExplanation, app_methods, explain_image
from .explain.methods.registry import METHODS, supported_methods
from .explain.methods.shap import ShapSettings
from .imaging import IMAGE_SUFFIXES, ImageReadError, find_examples
from .model import InferenceModel, load_for_inference
from .predict import Prediction, predict_paths, write_predictions_csv
from .publish.card import card_facts
from .publish.run_folder import read_run
from .results import SchemaError

logger = logging.getLogger(__name__)

MAX_FILES = 64
PICTURE_TITLES = {"model_view": "The image as the model sees it (its percentile stretch)",
                  **{name: f"{spec.title} ({spec.reading})" for name, spec in METHODS.items()}}


@dataclass
class AppModel:
    """A loaded model and everything the page shows about it."""

    loaded: InferenceModel
    model_id: str
    facts: str = ""
    examples: list[str] = field(default_factory=list)
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bps-vit-app-")))

    @property
    def pictures(self) -> tuple[str, ...]:
        """The page's pictures: the image as the model sees it, then one per method that can explain this model
        (the registry's `supported_methods`: no rollout for Swin); SHAP's stays empty until it is asked for."""
        return ("model_view", *supported_methods(self.loaded.model))


@dataclass
class AppResult:
    """One request's answer: per-file predictions, the explained image, messages, the CSV."""

    predictions: list[Prediction]
    notes: list[str]
    csv_path: Path | None
    explanation: ImageExplanation | None = None  # the first readable image, explained


def model_facts(model_dir: str | os.PathLike) -> str:
    """The model card's key facts (split, test metrics, sham control) as Markdown, from the card's own facts."""
    try:
        facts = card_facts(read_run(model_dir))
    except SchemaError as err:
        return f"The results files beside this model cannot be read: {err}"
    lines = []
    if facts.split_by:
        lines.append(f"- **Split:** grouped by {facts.split_by}, no group in two splits.")
    if facts.has_test:
        shown = ", ".join(f"{row['name']} {row['test']}" for row in facts.metric_rows
                          if row.get("test") not in (None, "n/a"))
        lines.append(f"- **Test metrics:** {shown}.")
    if facts.sham_text:
        lines.append(f"- **Sham (0 Gy) control:** {facts.sham_text}")
    if facts.synthetic:
        lines.append("- Trained on **synthetic** BPS-like images: a demonstration, not a tool for real data.")
    return "\n".join(lines) or "No results files were found beside this model."


def _model_files(model: str) -> Path | None:
    """A local folder with the run's JSON files and examples: the model folder, or those files from the Hub."""
    if Path(model).is_dir():
        return Path(model)
    try:
        return Path(snapshot_download(model, allow_patterns=["*.json", "examples/*"]))
    except Exception as err:  # offline, private or missing: the app still serves, without the facts
        logger.warning("Could not fetch the results files of %s (%s); the model panel stays empty.", model, err)
        return None


def load_app_model(model: str, examples: str | os.PathLike | None = None) -> AppModel:
    """Load a saved model folder or Hub id with eager attention (rollout needs the attention maps)."""
    loaded = load_for_inference(model)
    files = _model_files(model)
    example_dir = Path(examples) if examples else (files / "examples" if files else None)
    return AppModel(
        loaded=loaded,
        model_id=model,
        facts=model_facts(files) if files else "",
        examples=find_examples(example_dir, loaded.labels) if example_dir else [],
    )


def _without_folder(message: str, path: str) -> str:
    """The server's folders are nobody's business on the page: messages name the file only."""
    return message.replace(str(Path(path).parent) + os.sep, "")


def analyse(app: AppModel, paths: list[str], *, shap: bool = False, max_evals: int = 500, on_method=None,
            write_csv: bool = True) -> AppResult:
    """Check, predict and explain uploaded files (the first readable one is explained); write the CSV."""
    notes, accepted, rows = [], [], {}
    for path in paths[:MAX_FILES]:
        name = Path(path).name
        try:
            notes += check_upload(path, name)
            accepted.append(path)
        except ImageReadError as err:
            rows[path] = Prediction(path=name, status=_without_folder(f"error: {err}", path))
    if len(paths) > MAX_FILES:
        notes.append(f"Only the first {MAX_FILES} of {len(paths)} files were read; use scripts/predict.py for more.")
    for path, prediction in zip(accepted, predict_paths(app.loaded, accepted, batch_size=32, progress=False)):
        rows[path] = replace(prediction, path=Path(path).name, status=_without_folder(prediction.status, path))
    predictions = [rows[p] for p in paths[:MAX_FILES]]
    explanation = None
    first_ok = next((p for p in paths[:MAX_FILES] if rows[p].ok), None)
    if first_ok is not None:
        methods = app_methods(app.loaded.model, with_shap=shap)
        explanation = explain_image(app.loaded, first_ok, name=Path(first_ok).name, methods=methods,
                                    shap=ShapSettings(max_evals=int(max_evals)), on_method=on_method)
    csv_path = None
    if predictions and write_csv:
        out = app.work_dir / "results" / uuid.uuid4().hex
        csv_path = write_predictions_csv(predictions, app.loaded.labels, out / "predictions.csv")
    return AppResult(predictions=predictions, notes=notes, csv_path=csv_path, explanation=explanation)


def pictures(explanation, keys: tuple[str, ...]) -> dict[str, Any]:
    """uint8 RGB pictures for the page, drawn with the explain step's colours (None for a method not run)."""
    out: dict[str, Any] = {key: None for key in keys}
    if explanation is None:
        return out
    out["model_view"] = figures.image_rgb(explanation.image)
    for method, heat in explanation.heatmaps.items():
        out[method] = figures.overlay_rgb(explanation.image, heat)
    shap = explanation.shap_values
    if shap is not None:
        out["shap"] = figures.shap_rgb(explanation.image, shap[explanation.target])
    return out


def status_markdown(result: AppResult) -> str:
    """What went wrong or needs saying, file by file, in words a user can act on."""
    errors = [p for p in result.predictions if not p.ok]
    lines = []
    if result.explanation is not None:
        lines.append(f"Explained: **{result.explanation.name}**, called **{result.explanation.predicted_label}**.")
    if errors:
        lines.append(f"**{len(errors)} file(s) could not be read:**")
        lines += [f"- {p.status.removeprefix('error: ')}" for p in errors]
    lines += [f"- Note: {note}" for note in result.notes]
    if not result.predictions:
        lines.append("Upload one or more images (16-bit TIFF crops, or 8-bit PNG/JPEG views).")
    return "\n".join(lines)


def table_rows(result: AppResult, labels: list[str]) -> list[list[Any]]:
    """The results table: one row per file, as in the CSV."""
    return [
        [p.path, p.status, p.label or ""] + ([round(v, 6) for v in p.probs] if p.probs else [None] * len(labels))
        for p in result.predictions
    ]


# --------------------------------------------------------------------------- the Gradio page


def handle_upload(app: AppModel, files, shap: bool = False, max_evals: int = 500, progress=None,
                  write_csv: bool = True) -> tuple:
    """The page's one event: files in, every output component's value out."""
    paths = [str(getattr(f, "name", f)) for f in (files or [])]

    def on_method(method: str) -> None:
        if progress is not None:
            progress(0.5 if method == "shap" else 0.2, desc=f"{method} ...")

    result = analyse(app, paths, shap=bool(shap), max_evals=int(max_evals), on_method=on_method, write_csv=write_csv)
    shown = pictures(result.explanation, app.pictures)
    call = None
    if result.explanation is not None:
        call = dict(zip(result.explanation.labels, (float(p) for p in result.explanation.probabilities)))
    csv = str(result.csv_path) if result.csv_path else None
    table = table_rows(result, app.loaded.labels)
    return (call, *(shown[key] for key in app.pictures), status_markdown(result), table, csv)


def handle_select(app: AppModel, paths: list[str], row: int, shap: bool = False, max_evals: int = 500,
                  progress=None) -> tuple:
    """A click on the table's row `row`: explain that file (the table and the CSV stay as they are)."""
    if not paths or not 0 <= row < len(paths):
        return (None, *(None for _ in app.pictures), "Upload images first, then click a row of the table.")
    call, *rest = handle_upload(app, [paths[row]], shap, max_evals, progress, write_csv=False)
    return (call, *rest[: len(app.pictures) + 1])


def build_blocks(app: AppModel):
    """The page: upload (or click an example), the call, the pictures, the table and CSV, the model's facts."""
    import gradio as gr  # deferred: gradio is the optional [app] extra, needed only to serve the page

    os.environ["GRADIO_TEMP_DIR"] = str(app.work_dir / "uploads")  # uploads stay in the app's folder
    with gr.Blocks(title="bps-vit: Fe-ion or X-ray?", delete_cache=(3600, 3600), analytics_enabled=False) as blocks:
        gr.Markdown(
            "# Fe-ion or X-ray? Ask the model, and see why\n"
            f"Model: `{app.model_id}`. Drop one or more 16-bit TIFF crops of a 53BP1-stained nucleus "
            "(8-bit PNG/JPEG views work too). The first readable image is explained; click a table row for another."
        )
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="files",
                                file_types=list(IMAGE_SUFFIXES))
                shap = gr.Checkbox(label="Also SHAP (takes seconds)", value=False, elem_id="shap")
                max_evals = gr.Slider(50, 2000, value=500, step=50, label="SHAP model evaluations (max_evals)")
                run = gr.Button("Predict and explain", variant="primary", elem_id="run")
            with gr.Column(scale=1):
                call = gr.Label(label="The model's call", num_top_classes=len(app.loaded.labels), elem_id="call")
                status = gr.Markdown(elem_id="status")
        with gr.Row():
            images = [gr.Image(label=PICTURE_TITLES[key], type="numpy", elem_id=f"img-{key}", interactive=False,
                               format="png") for key in app.pictures]
        table = gr.Dataframe(headers=["file", "status", "predicted_label"] + [f"prob_{x}" for x in app.loaded.labels],
                             label="Results (one row per file; click a row to explain that file)", elem_id="table",
                             interactive=False, wrap=True)
        csv = gr.File(label="predictions.csv (the format of scripts/predict.py)", elem_id="csv")
        with gr.Accordion("About this model", open=False):
            gr.Markdown(app.facts or "No results files were found beside this model.", elem_id="facts")
        uploaded = gr.State([])  # this page's files, in table order (each page has its own)
        outputs = [call, *images, status, table, csv, uploaded]

        # gr.Progress() as a default is how Gradio injects its progress tracker (B008 does not apply)
        def respond(files, shap, max_evals, progress=gr.Progress()):  # noqa: B008
            paths = [str(getattr(f, "name", f)) for f in (files or [])][:MAX_FILES]
            return (*handle_upload(app, files, shap, max_evals, progress), paths)

        def select(paths, shap, max_evals, event: gr.SelectData, progress=gr.Progress()):  # noqa: B008
            return handle_select(app, paths, event.index[0], shap, max_evals, progress)

        select.__annotations__["event"] = gr.SelectData  # a real class: this module's annotations are strings

        run.click(respond, [files, shap, max_evals], outputs)
        files.upload(respond, [files, shap, max_evals], outputs)
        table.select(select, [uploaded, shap, max_evals], [call, *images, status])
        if app.examples:
            gr.Examples([[[path], False, 500] for path in app.examples], inputs=[files, shap, max_evals],
                        outputs=outputs, fn=respond, run_on_click=True, cache_examples=False,
                        label="Example crops (click one)", example_labels=[Path(p).name for p in app.examples])
    return blocks


def serve(model: str, host: str = "127.0.0.1", port: int | None = None, examples: str | None = None,
          block: bool = True):
    """Load the model and serve the page; returns (blocks, url). `block=False` returns at once (tests)."""
    app = load_app_model(model, examples)
    atexit.register(shutil.rmtree, app.work_dir, True)  # the uploads and results go when the app does
    blocks = build_blocks(app)
    allowed = sorted({str(Path(p).resolve().parent) for p in app.examples})
    _, url, _ = blocks.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, allowed_paths=allowed,
                              prevent_thread_lock=not block, quiet=not block, show_error=True)
    return blocks, url
