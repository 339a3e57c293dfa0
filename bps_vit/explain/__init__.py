"""Why does the model say Fe or X-ray? Attention rollout, gradient rollout and SHAP, one call shape,
and the measurements that say whether to believe them (`metrics`).

`run.explain(ExplainArguments(...))` is the pipeline behind `scripts/explain.py`.
"""

from .methods.base import Explainer, Explanation, MissingAttentionsError, normalize_heatmaps
from .methods.grad_rollout import GradientRollout, gradient_rollout_from_attentions
from .methods.rollout import AttentionRollout, rollout_from_attentions
from .methods.shap import ShapExplainer

__all__ = [
    "AttentionRollout",
    "Explainer",
    "Explanation",
    "GradientRollout",
    "MissingAttentionsError",
    "ShapExplainer",
    "gradient_rollout_from_attentions",
    "normalize_heatmaps",
    "rollout_from_attentions",
]
