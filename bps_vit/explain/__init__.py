"""Why does the model say Fe or X-ray? Attention rollout, gradient rollout and SHAP, one call shape,
and the measurements that say whether to believe them.

- `methods/`: one file per method over `methods/base.py`, and `methods/registry.py` (name -> method, its title,
  the token layouts it reads, how to build it);
- `perturbation.py`: removing pixels where the input really is, and what the model then says;
- `metrics/`: deletion/insertion, randomisation, ground truth, the causal test, intervals, the verdicts;
- the pipeline behind `scripts/explain.py`: `arguments` -> `selection` -> `scoring` (per batch, into the typed
  `records`) -> `metrics.verdicts` -> `report`, run by `run.explain(ExplainArguments(...))`, which writes and
  returns `results.ExplanationResults`; `image.py` is the one-image path of the app.
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
