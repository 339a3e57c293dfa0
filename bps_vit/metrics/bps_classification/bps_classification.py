"""`evaluate` metric for a classifier of two or more classes (Fe vs X-ray, doses, ...), computed with scikit-learn.

Shipped inside the package and loaded by path (`evaluate.load(<this folder>)`), because the
Hub-hosted `evaluate.load("accuracy")` needs a network this tool cannot assume. One module
returns every headline number so training, prediction and the model card agree.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

_DESCRIPTION = """Accuracy, balanced accuracy, macro-F1 and ROC-AUC for a classifier of two or more classes.
`prediction_scores` are the predicted probabilities of every class (one row per example). With two
classes ROC-AUC is that of class 1; with more it is the one-vs-rest macro average over the classes
present in the references. Balanced accuracy and ROC-AUC are NaN when the references hold a single class."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    prediction_scores (list of list of float): the probability of each class, for each example.
Returns:
    accuracy, balanced_accuracy, f1_macro, roc_auc (floats).
Example:
    >>> metric = evaluate.load("bps_vit/metrics/bps_classification")
    >>> metric.compute(predictions=[0, 1], references=[0, 1], prediction_scores=[[0.8, 0.2], [0.1, 0.9]])["accuracy"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BpsClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                    "prediction_scores": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, prediction_scores):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        scores = np.asarray(prediction_scores, dtype=np.float64)
        num_classes = scores.shape[1]
        several = len(np.unique(references)) >= 2
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "balanced_accuracy": (
                float(balanced_accuracy_score(references, predictions)) if several else float("nan")
            ),
            "f1_macro": float(f1_score(references, predictions, average="macro", labels=list(range(num_classes)),
                                       zero_division=0)),
            "roc_auc": _roc_auc(references, scores) if several else float("nan"),
        }


def _roc_auc(references: np.ndarray, scores: np.ndarray) -> float:
    """Class 1's ROC-AUC for two classes; for more, the one-vs-rest macro mean over the classes present."""
    if scores.shape[1] == 2:
        return float(roc_auc_score(references, scores[:, 1]))
    present = np.unique(references)
    return float(np.mean([roc_auc_score(references == c, scores[:, c]) for c in present]))
