"""Which explanation methods there are, what they are called, and which models they can explain: name -> method.

Every reader takes a method's display name from here (the explain step records it in explain_metrics.json for the
card; the figures and the app get it from the step that draws them), and every caller builds an explainer through
`build_explainer`, so the explain step and the app make the same maps.

Adding a method is one module in this folder (an `Explainer` subclass) and one `register` call below, saying what the
method needs: a token layout (`backbones.token_layout`: the rollouts read token rows, Grad-CAM the patch tokens),
attention that composes into flow between all tokens (the rollouts; not Swin's windows), a package it is built on.
A method asked to explain a model it cannot is refused by name, with the reason and the methods that can
(`refusal`). Adding a backbone is a row of `backbones.ARCHITECTURES` and its layout in `backbones.token_layout`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...backbones import supported_list, token_layout
from ...imaging import Preprocessor
from ...model import labels_of
from .base import Explainer
from .grad_rollout import GradientRollout
from .gradcam import GradCam
from .rollout import AttentionRollout
from .shap import ShapExplainer, ShapSettings


@dataclass
class ExplainerSettings:
    """The methods' settings (the explain step's flags; the app's defaults)."""

    head_fusion: str = "mean"  # attention rollout: how heads are fused
    discard_ratio: float = 0.0  # attention rollout: lowest attentions dropped per layer
    shap: ShapSettings = field(default_factory=ShapSettings)


Builder = Callable[[torch.nn.Module, Preprocessor, ExplainerSettings], Explainer]


@dataclass(frozen=True)
class MethodSpec:
    """One method: its name (the --methods entry and the results key), its display title, how to read its map,
    how to build it, and what it needs from a model (a method that needs nothing looks only at outputs: any model)."""

    name: str
    title: str
    reading: str  # what a map of it shows, in a few words
    build: Builder
    class_specific: bool = True  # False: the same map explains every class
    fast: bool = True  # a forward pass or two per batch (SHAP's hundreds of masked forwards are not)
    uses_masker: bool = False  # the map itself is made by masking: its verdicts rest on the masker removing the signal
    needs_layout: bool = False  # reads the model's tokens (`backbones.token_layout`)
    needs_global_attention: bool = False  # composes every layer's token-to-token attention (rollouts)
    package: str | None = None  # a module it is built on, and the pip requirement that installs it
    requirement: str | None = None

    def unavailable_because(self, model: torch.nn.Module) -> str | None:
        """Why this method cannot explain `model`, or None when it can."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return (f"it is built on the {self.package} package, which is not installed here "
                    f"(pip install '{self.requirement}')")
        if not (self.needs_layout or self.needs_global_attention):
            return None
        layout = token_layout(model)
        if layout is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
            return f"{model_type!r} models have no known token layout (supported architectures: {supported_list()})"
        if self.needs_global_attention and not layout.global_attention:
            return (f"{layout.model_class} attends within local windows, (batch x windows, heads, win^2, win^2) per "
                    "layer, and has no class token; patch merging changes the grid between stages, so its attention "
                    "does not compose into flow between all patches and this method is not defined for it")
        return None

    def refusal(self, model: torch.nn.Module) -> str | None:
        """Why this method cannot explain `model`, naming the methods that can; None when it can."""
        why = self.unavailable_because(model)
        if why is None:
            return None
        usable = ", ".join(supported_methods(model)) or "none"
        return f"{self.name} ({self.title}) cannot explain this model: {why}; methods that can: {usable}"


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    METHODS[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def method_title(name: str) -> str:
    """The display name of a method (a name this registry does not know is shown as it is)."""
    return METHODS[name].title if name in METHODS else name


def supported_methods(model: torch.nn.Module) -> list[str]:
    """The registered methods that can explain `model`, in registration order."""
    return [name for name, spec in METHODS.items() if spec.unavailable_because(model) is None]


class MethodRefusedError(ValueError):
    """A method asked to explain a model it cannot; the message says why and which methods can."""


def build_explainer(name: str, model: torch.nn.Module, preprocessor: Preprocessor,
                    settings: ExplainerSettings | None = None) -> Explainer:
    """The explainer for method `name`, built the same way for the explain step's batches and the app's image;
    `MethodRefusedError` when the method cannot explain this model."""
    spec = method_spec(name)
    refusal = spec.refusal(model)
    if refusal:
        raise MethodRefusedError(refusal)
    return spec.build(model, preprocessor, settings or ExplainerSettings())


def _shap(model: torch.nn.Module, preprocessor: Preprocessor, settings: ExplainerSettings) -> ShapExplainer:
    shap = settings.shap
    normalized = preprocessor.do_normalize
    mean, std = (preprocessor.image_mean, preprocessor.image_std) if normalized else ((0.0,) * 3, (1.0,) * 3)
    return ShapExplainer(model, mean, std, masker=shap.masker, max_evals=shap.max_evals, batch_size=shap.batch_size,
                         seed=shap.seed, class_names=labels_of(model.config), output=shap.output)


register(MethodSpec(
    "rollout", "Attention rollout", "class-agnostic", class_specific=False, needs_layout=True,
    needs_global_attention=True,
    build=lambda model, _, settings: AttentionRollout(model, settings.head_fusion, settings.discard_ratio),
))
register(MethodSpec(
    "grad_rollout", "Gradient rollout", "for the predicted class", needs_layout=True, needs_global_attention=True,
    build=lambda model, _, settings: GradientRollout(model),
))
register(MethodSpec(
    "gradcam", "Grad-CAM", "for the predicted class, last block", needs_layout=True, package="captum",
    requirement="captum>=0.9", build=lambda model, _, settings: GradCam(model),
))
register(MethodSpec("shap", "SHAP", "red: evidence for the predicted class", fast=False, uses_masker=True,
                    build=_shap))
