"""Which explanation methods there are, what they are called, and which models they can explain: name -> method.

Every reader takes a method's display name from here (the explain step records it in explain_metrics.json for the
card; the figures and the app get it from the step that draws them), and every caller builds an explainer through
`build_explainer`, so the explain step and the app make the same maps.

Adding a method is one module in this folder (an `Explainer` subclass) and one `register` call below. Adding a
backbone is a token layout in `base.TOKEN_LAYOUTS` plus that layout in the `layouts` of each method that reads it;
a method asked to explain a model whose layout it does not list is refused by name (`refusal`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...imaging import Preprocessor
from ...model import labels_of
from .base import CLS_LAYOUT, Explainer, token_layout
from .grad_rollout import GradientRollout
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
    how to build it, and the token layouts it can read (None: any model, it only looks at outputs)."""

    name: str
    title: str
    reading: str  # what a map of it shows, in a few words
    build: Builder
    class_specific: bool = True  # False: the same map explains every class
    fast: bool = True  # a forward pass or two per batch (SHAP's hundreds of masked forwards are not)
    uses_masker: bool = False  # the map itself is made by masking: its verdicts rest on the masker removing the signal
    layouts: frozenset[str] | None = None

    def refusal(self, model: torch.nn.Module) -> str | None:
        """Why this method cannot explain `model`, naming the methods that can; None when it can."""
        if self.layouts is None or token_layout(model) in self.layouts:
            return None
        model_type = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
        usable = ", ".join(supported_methods(model)) or "none"
        return (f"{self.name} ({self.title}) reads a {' or '.join(sorted(self.layouts))} token layout, which "
                f"{model_type!r} models do not have; methods that can explain this model: {usable}")


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
    return [name for name, spec in METHODS.items() if spec.layouts is None or token_layout(model) in spec.layouts]


def build_explainer(name: str, model: torch.nn.Module, preprocessor: Preprocessor,
                    settings: ExplainerSettings | None = None) -> Explainer:
    """The explainer for method `name`, built the same way for the explain step's batches and the app's image."""
    return method_spec(name).build(model, preprocessor, settings or ExplainerSettings())


def _shap(model: torch.nn.Module, preprocessor: Preprocessor, settings: ExplainerSettings) -> ShapExplainer:
    shap = settings.shap
    normalized = preprocessor.do_normalize
    mean, std = (preprocessor.image_mean, preprocessor.image_std) if normalized else ((0.0,) * 3, (1.0,) * 3)
    return ShapExplainer(model, mean, std, masker=shap.masker, max_evals=shap.max_evals, batch_size=shap.batch_size,
                         seed=shap.seed, class_names=labels_of(model.config), output=shap.output)


register(MethodSpec(
    "rollout", "Attention rollout", "class-agnostic", class_specific=False, layouts=frozenset({CLS_LAYOUT}),
    build=lambda model, _, settings: AttentionRollout(model, settings.head_fusion, settings.discard_ratio),
))
register(MethodSpec(
    "grad_rollout", "Gradient rollout", "for the predicted class", layouts=frozenset({CLS_LAYOUT}),
    build=lambda model, _, settings: GradientRollout(model),
))
register(MethodSpec("shap", "SHAP", "red: evidence for the predicted class", fast=False, uses_masker=True,
                    build=_shap))
