"""Explain one image: decode once, the model's call, and the maps of the chosen methods.

The app (and anyone with one crop in hand) needs what `scripts/explain.py` computes for a
whole split, for a single image and without the faithfulness scoring: the model's probabilities,
the stretched crop as the model sees it, and a heatmap per method. The maps come from the same
explainer classes as the explain step (`AttentionRollout`, `GradientRollout`, `ShapExplainer`),
and `ImageExplanation.figure_row()` feeds the same `figures.plot_explanations`, so there is no
second implementation of any method or figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..figures import ExplanationRow
from ..imaging import ImageSource, read_image, resize_gray
from ..model import InferenceModel
from .methods.base import model_device, model_logits
from .methods.registry import METHODS, ExplainerSettings, build_explainer, method_title, supported_methods
from .methods.shap import ShapSettings


def app_methods(model, with_shap: bool) -> list[str]:
    """The methods the app runs on `model`: every fast one it supports, and SHAP when asked for (and supported)."""
    return [name for name in supported_methods(model) if METHODS[name].fast or (with_shap and name == "shap")]


@dataclass
class ImageExplanation:
    """One image explained. image: HxW in [0, 1] at the crop's resolution, with the model's stretch;
    heatmaps: method -> [h, w] in [0, 1] at the model's resolution; shap_values: [classes, h, w] signed."""

    name: str
    image: np.ndarray
    intensity_range: tuple[float, float]
    labels: list[str]
    probabilities: np.ndarray
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    shap_values: np.ndarray | None = None
    shap_units: str = "log-odds"

    @property
    def target(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def predicted_label(self) -> str:
        return self.labels[self.target]

    def figure_row(self, true_label: str | None = None):
        """The row `figures.plot_explanations` draws (the same figure the explain step writes)."""
        return ExplanationRow(
            name=self.name,
            image=self.image,
            intensity_range=self.intensity_range,
            true_label=true_label,
            predicted_label=self.predicted_label,
            probability=float(self.probabilities[self.target]),
            heatmaps=dict(self.heatmaps),
            titles={name: method_title(name) for name in self.heatmaps},
            class_agnostic=frozenset(name for name in self.heatmaps if not METHODS[name].class_specific),
            shap_values=self.shap_values,
            class_names=list(self.labels),
            shap_units=self.shap_units,
        )


def explain_image(
    loaded: InferenceModel,
    source: ImageSource,
    *,
    name: str | None = None,
    methods: tuple[str, ...] | list[str] | None = None,
    shap: ShapSettings | None = None,
    on_method: Callable[[str], None] | None = None,
) -> ImageExplanation:
    """Decode `source` once, predict, and explain the predicted class with each method (default: the fast methods
    that can explain this model, `app_methods`).

    The pixels are `Preprocessor.gray` + `normalize`, exactly as `predict.predict_paths` feeds
    the model, so the probabilities are the prediction step's. Raises `imaging.ImageReadError`
    for an unreadable image. `on_method(name)` is called before each method (progress bars).
    """
    model, preprocessor = loaded.model, loaded.preprocessor
    methods = app_methods(model, with_shap=False) if methods is None else methods
    raw = read_image(source, name=name)
    image = preprocessor.stretch(raw)  # stretched once: shown as is, resized for the model
    gray = resize_gray(image, preprocessor.height, preprocessor.width)
    dtype = next(model.parameters()).dtype
    pixel_values = preprocessor.normalize(gray[None]).to(device=model_device(model), dtype=dtype)
    with torch.inference_mode():
        probabilities = model_logits(model(pixel_values=pixel_values)).float().softmax(-1)[0].cpu().numpy()
    target = [int(probabilities.argmax())]
    result = ImageExplanation(
        name=name or (Path(source).name if isinstance(source, (str, Path)) else "image"),
        image=image,
        intensity_range=preprocessor.stretch.bounds(raw),
        labels=list(loaded.labels),
        probabilities=probabilities,
        shap_units="log-odds" if (shap or ShapSettings()).output == "log_odds" else "probability",
    )
    for method in methods:
        if on_method is not None:
            on_method(method)
        explainer = build_explainer(method, model, preprocessor, ExplainerSettings(shap=shap or ShapSettings()))
        explanation = explainer.explain(pixel_values, targets=target)
        if method == "shap":
            result.shap_values = np.asarray(explanation.raw[0], dtype=np.float32)
        else:
            result.heatmaps[method] = np.asarray(explanation.heatmaps[0], dtype=np.float32)
    return result
