"""Why does the model say Fe or X-ray? Attention rollout, gradient rollout and SHAP, one call shape,
and the measurements that say whether to believe them (`faithfulness`).

`run.explain(ExplainArguments(...))` is the pipeline behind `scripts/explain.py`.
"""

from .base import Explainer, Explanation, MissingAttentionsError, normalize_heatmaps
from .grad_rollout import GradientRollout, gradient_rollout_from_attentions
from .rollout import AttentionRollout, rollout_from_attentions
from .shap_explainer import ShapExplainer

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
