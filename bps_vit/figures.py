"""Every matplotlib figure of the project, written for a biologist reading a report.

One place for figures keeps the look consistent (same colour maps, same label wording) and
keeps matplotlib out of the modules that compute things. The Agg backend is forced so that
figures render on headless machines and CI. PNGs are saved without a date stamp in their
metadata, so the same inputs give byte-identical files (reproducible explain runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 120
# No "Software" (matplotlib version) or creation time in the PNG: identical inputs -> identical bytes.
PNG_METADATA: dict[str, Any] = {"Software": None}
HEATMAP_CMAP = "inferno"
SIGNED_CMAP = "RdBu_r"  # red = pushes towards the class, blue = pushes away; white = 0


def _save(fig: "plt.Figure", path: str | Path) -> Path:
    """Write a figure as PNG (parents created), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- training figures


def plot_confusion_matrix(
    confusion: list[list[int]] | np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix (test)",
) -> Path:
    """Counts and row-normalised percentages (recall per true class) in each cell.

    Rows are the true class, columns the prediction, so the diagonal percentages read as
    "of all true Fe images, x% were called Fe".
    """
    counts = np.asarray(confusion, dtype=np.int64)
    labels = [str(label) for label in labels]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square; got shape {counts.shape}")
    if counts.shape[0] != len(labels):
        raise ValueError(f"confusion matrix is {counts.shape[0]}x{counts.shape[1]} but {len(labels)} labels were given")
    row_totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_totals, out=np.zeros(counts.shape, dtype=float), where=row_totals > 0)

    size = 1.6 + 1.3 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share * 100, cmap="Blues", vmin=0, vmax=100)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j] * 100:.1f}%", ha="center", va="center", color=colour, fontsize=11)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"{title}\nn = {int(counts.sum())}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of true class")
    return _save(fig, path)


def plot_training_curves(log_history: list[dict], path: str | Path) -> Path:
    """Loss (training per logging step, evaluation per epoch) and evaluation accuracy per epoch.

    `log_history` is the Trainer's `state.log_history`; entries without a given key are skipped,
    so a run without evaluation still gets its training-loss curve.
    """
    train_steps, train_loss = [], []
    eval_epochs, eval_loss = [], []
    acc_epochs, accuracy = [], []
    bacc_epochs, balanced_accuracy = [], []
    for entry in log_history or []:
        if not isinstance(entry, Mapping):
            continue
        epoch = entry.get("epoch", entry.get("step"))
        if "loss" in entry and entry.get("step") is not None:
            train_steps.append(entry.get("epoch", entry["step"]))
            train_loss.append(float(entry["loss"]))
        if epoch is None:
            continue
        if "eval_loss" in entry:
            eval_epochs.append(epoch)
            eval_loss.append(float(entry["eval_loss"]))
        if "eval_accuracy" in entry:
            acc_epochs.append(epoch)
            accuracy.append(float(entry["eval_accuracy"]))
        if "eval_balanced_accuracy" in entry:
            bacc_epochs.append(epoch)
            balanced_accuracy.append(float(entry["eval_balanced_accuracy"]))

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train_loss:
        loss_ax.plot(train_steps, train_loss, color="tab:blue", alpha=0.8, label="training loss")
    if eval_loss:
        loss_ax.plot(eval_epochs, eval_loss, "o-", color="tab:orange", label="validation loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.set_title("Loss")
    if train_loss or eval_loss:
        loss_ax.legend()
    else:
        loss_ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=loss_ax.transAxes)

    if accuracy:
        acc_ax.plot(acc_epochs, accuracy, "o-", color="tab:green", label="validation accuracy")
    if balanced_accuracy:
        acc_ax.plot(bacc_epochs, balanced_accuracy, "s--", color="tab:purple", label="validation balanced accuracy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    acc_ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance (2 classes)")
    acc_ax.set_title("Validation accuracy")
    if accuracy or balanced_accuracy:
        acc_ax.legend(loc="lower right")
    else:
        acc_ax.text(0.5, 0.5, "no evaluation logged", ha="center", va="center", transform=acc_ax.transAxes)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
