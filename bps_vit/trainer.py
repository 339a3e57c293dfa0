"""The Trainer as this project runs it: a strict checkpoint reload, a class-weighted loss, quiet logs.

`BPSTrainer` and its callbacks are what `train.run_training` hands the `transformers.Trainer`;
they live apart from the run's flow so that the one place that overrides Trainer internals
(`_load_from_checkpoint`, `_load_best_model`, `_clip_grad_norm`) is small and read on its own
when transformers changes.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_pt_utils import nested_gather

from .backbones import every_parameter_trains
from .cli import raise_if_ctrl_c_seen
from .data import Augmenter
from .disk import readable_like_other_outputs
from .provenance import RunIdentity
from .threads import one_intraop_thread

logger = logging.getLogger(__name__)


def load_checkpoint_weights(model, checkpoint_dir: str | os.PathLike) -> None:
    """Copy every weight of a saved checkpoint into `model`, strictly, through `from_pretrained`.

    The Trainer's own reload does `load_state_dict(safetensors_file, strict=False)`. Since
    transformers 5.9 renamed ViT modules, the names on disk (kept in the old spelling by
    `save_pretrained`) no longer match, and that non-strict load silently restores only 8 of
    40 tensors of a ViT (upstream #48805). `from_pretrained` applies the renaming, so we load
    through it and then copy with `strict=True`: a mismatch is an error, never a silent skip.
    """
    reference = type(model).from_pretrained(str(checkpoint_dir), use_safetensors=True, trust_remote_code=False)
    model.load_state_dict(reference.state_dict(), strict=True)
    del reference


def default_find_unused_parameters(model, args) -> None:
    """`ddp_find_unused_parameters` False for a model whose every parameter trains (`every_parameter_trains`: ViT,
    DeiT, Swin, BEiT without a mask token; not DINOv2), unless the user set it.

    The Trainer's default is True for every model without activation checkpointing. DDP then walks the
    autograd graph after each forward to find parameters that get no gradient, and warns that it found none
    (issue 23). `--ddp_find_unused_parameters true` still turns the search on (a model that leaves some
    parameter out, which DDP would otherwise report as an error on the first step).
    """
    if args is not None and args.ddp_find_unused_parameters is None and every_parameter_trains(
            getattr(model, "config", None)):
        args.ddp_find_unused_parameters = False


class IntervalLoss:
    """The mean training loss per optimizer step since the last evaluation: with one evaluation per epoch, the
    epoch's mean. The Trainer only keeps the mean since its last log (every `logging_steps`), so an epoch line built
    from its logs shows an older epoch's loss or none (issue 23).

    `training_step` returns the loss already divided by the gradient accumulation steps, so the sum over an
    interval divided by its optimizer steps is the Trainer's own formula for a logged loss. Across processes the
    sums are averaged like the Trainer's (`nested_gather(...).mean()`)."""

    def __init__(self):
        self.total: torch.Tensor | None = None
        self.since_step = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total = loss.detach().clone() if self.total is None else self.total + loss.detach()

    def start(self, global_step: int) -> None:
        self.total, self.since_step = None, global_step

    def take(self, global_step: int, args) -> float | None:
        """The mean since the last `take` (every process must call it: it gathers), and start a new interval."""
        steps = global_step - self.since_step
        total = self.total if self.total is not None else torch.zeros((), device=args.device)
        mean = nested_gather(total, args.parallel_mode).float().mean().item() / steps if steps > 0 else None
        self.start(global_step)
        return mean


class MtimeNoteFilter(logging.Filter):
    """Drops transformers' "mtime may not be reliable on this filesystem": it says so whenever two checkpoints were
    saved less than a second apart (a tiny model's epochs), not because of the filesystem, and the numbered order it
    falls back to is the right one for `checkpoint-N` folders (issue 23)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mtime may not be reliable" not in record.getMessage()


MTIME_NOTE_FILTER = MtimeNoteFilter()


class BPSTrainer(Trainer):
    """`Trainer` with a strict checkpoint reload, an optional class-weighted loss, the training loss per evaluation
    interval (`IntervalLoss`), and no DDP search for unused parameters on models that use them all
    (`default_find_unused_parameters`)."""

    def __init__(self, model=None, args=None, *rest, class_weights=None, **kwargs):
        default_find_unused_parameters(model, args)
        logging.getLogger("transformers.trainer_utils").addFilter(MTIME_NOTE_FILTER)  # once: the same filter object
        super().__init__(model, args, *rest, **kwargs)
        self.class_weights = class_weights
        self.interval_loss = IntervalLoss()

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.interval_loss.add(loss)
        return loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The Trainer's save (the final model and every checkpoint), then the weights get the user's umask."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            for weights in Path(output_dir or self.args.output_dir).glob("*.safetensors"):
                readable_like_other_outputs(weights)

    def _strict_reload_possible(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # Every rank reads the checkpoint; none may read before the main process has written all of it.
        self.accelerator.wait_for_everyone()
        if not self._strict_reload_possible():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        logger.info("Restoring all weights from %s (strict, via from_pretrained)", resume_from_checkpoint)
        load_checkpoint_weights(target, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        # The main process may still be writing the last checkpoint (optimizer, state, rotation) when a
        # faster rank gets here: without the barrier that rank fails on a half-written folder.
        self.accelerator.wait_for_everyone()
        if not self._strict_reload_possible():
            return super()._load_best_model()
        logger.info("Restoring the best model from %s (strict, via from_pretrained)", self.state.best_model_checkpoint)
        load_checkpoint_weights(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)

    def _clip_grad_norm(self, model):
        """Performance only: clip on one intra-op thread (restored right after).

        Clipping a ViT's gradients is ~70 small parallel ops per step (a norm and a scale per
        weight). On a CPU whose cores are also busy elsewhere, each OpenMP region waits for a
        descheduled thread, and the clip can cost more than the step's matrix products
        (`bench/train_throughput.py` measures it; BENCHMARKS.md has the numbers). CUDA kernels
        do not use these threads, so on a GPU this changes nothing.
        """
        with one_intraop_thread():
            return super()._clip_grad_norm(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's own loss; with `--class_weighted_loss`, a weighted cross-entropy; and for a head that computes
        no loss (DeiT's distillation head, `DeiTForImageClassificationWithTeacher`, which transformers ships for
        inference only), the model's own `loss_function` on its logits: the mean of the CLS and distillation
        logits, so both heads learn the labels (there is no teacher to distil from)."""
        unwrapped = self.accelerator.unwrap_model(model)
        if self.class_weights is None and "labels" in inspect.signature(unwrapped.forward).parameters:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        labels = inputs.pop("labels")
        outputs = model(**inputs)
        if self.class_weights is None:
            loss = unwrapped.loss_function(labels, outputs.logits, unwrapped.config,
                                           num_items_in_batch=num_items_in_batch)
        else:
            weight = self.class_weights.to(outputs.logits.device, outputs.logits.dtype)
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


def classification_logits(logits, labels=None):
    """The Trainer's `preprocess_logits_for_metrics`: the class logits alone. DeiT's distillation head returns its
    two heads' logits after them (`cls_logits`, `distillation_logits`), which the Trainer would gather as a tuple."""
    return logits[0] if isinstance(logits, (tuple, list)) else logits


class CtrlCCallback(TrainerCallback):
    """Stops training after the step in which a Ctrl-C was pressed, even when its KeyboardInterrupt was swallowed
    (`cli.ctrl_c_remembered`)."""

    def on_step_end(self, args, state, control, **kwargs):
        raise_if_ctrl_c_seen()


class RunIdentityCallback(TrainerCallback):
    """Writes `bps_run.json` into every checkpoint, so a resume can prove the checkpoint is this run's."""

    def __init__(self, identity: RunIdentity):
        self.identity = identity

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            self.identity.write(Path(args.output_dir) / f"checkpoint-{state.global_step}")


class QuietProgressCallback(ProgressCallback):
    """The Trainer's progress bars without its per-step `{'loss': ...}` dictionaries (`--verbose` brings them back)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class EvaluationLineCallback(TrainerCallback):
    """One line per evaluation: the epoch, the mean training loss since the previous evaluation (with one
    evaluation per epoch: that epoch's) and the validation metrics that choose the model."""

    def __init__(self, interval_loss: IntervalLoss):
        self.interval_loss = interval_loss

    def on_train_begin(self, args, state, control, **kwargs):
        self.interval_loss.start(state.global_step)  # a resumed run starts counting at its checkpoint's step

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        mean_loss = self.interval_loss.take(state.global_step, args)  # on every process: it gathers
        if not state.is_world_process_zero or not metrics:
            return
        shown = ", ".join(f"{key[len('eval_'):]} {metrics[key]:.4f}" for key in
                          ("eval_accuracy", "eval_balanced_accuracy", "eval_roc_auc") if key in metrics)
        loss = f"train loss {mean_loss:.4f}, " if mean_loss is not None else ""
        tqdm.write(f"epoch {state.epoch:.2f}/{args.num_train_epochs:g}: {loss}validation {shown}", file=sys.stderr)


def quiet_trainer_output(trainer: BPSTrainer) -> None:
    """Replace the Trainer's per-step log printing by one line per evaluation (see `--verbose`)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgressCallback)
    trainer.pop_callback(PrinterCallback)
    trainer.add_callback(EvaluationLineCallback(trainer.interval_loss))


def _epoch_of_step(state, step: int) -> float | None:
    return next((entry["epoch"] for entry in state.log_history if entry.get("step") == step and "epoch" in entry),
                None)


class AnnouncedEarlyStopping(EarlyStoppingCallback):
    """`EarlyStoppingCallback` that says when it ends a run: after which epoch, why, and whose weights are kept."""

    def __init__(self, early_stopping_patience: int):
        super().__init__(early_stopping_patience=early_stopping_patience)
        self.stopped_at_epoch: float | None = None

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if control.should_training_stop and self.stopped_at_epoch is None:
            self.stopped_at_epoch = state.epoch

    def note(self, args, state) -> str | None:
        """The sentence for the log and bps_results.json; None when the run went to its last step (a patience that
        runs out on the last evaluation stops nothing)."""
        if self.stopped_at_epoch is None or state.global_step >= state.max_steps:
            return None
        metric = args.metric_for_best_model
        best_step = int(Path(state.best_model_checkpoint).name.split("-")[-1]) if state.best_model_checkpoint else None
        best_epoch = _epoch_of_step(state, best_step) if best_step is not None else None
        kept = "kept the last epoch's weights"
        if best_epoch is not None and args.load_best_model_at_end:
            kept = (f"kept the weights of epoch {best_epoch:g} ({Path(state.best_model_checkpoint).name}, "
                    f"validation {metric} {state.best_metric:.4f})")
        return (f"Stopped early after epoch {self.stopped_at_epoch:g} of {args.num_train_epochs:g}: validation "
                f"{metric} did not improve for {self.early_stopping_patience} evaluation(s) "
                f"(--early_stopping_patience {self.early_stopping_patience}); {kept}.")

    def on_train_end(self, args, state, control, **kwargs):
        note = self.note(args, state)
        if note and state.is_world_process_zero:
            tqdm.write(note, file=sys.stderr)


class AugmentationEpochCallback(TrainerCallback):
    """Tells the augmenter which epoch it is, so its draws depend on (seed, epoch, example) only."""

    def __init__(self, augmenter: Augmenter):
        self.augmenter = augmenter

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.augmenter.epoch = int(state.epoch or 0)


def class_weights_for(train_labels: np.ndarray, num_classes: int):
    """Inverse class frequency, normalised so a balanced set gets 1 per class: [n / (k * n_c)]."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)



def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint written to the end: its weights (`*.safetensors`) and `trainer_state.json`, which the Trainer
    writes last. The one test for both an automatic resume (`last_complete_checkpoint`) and an explicit one."""
    folder = Path(path)
    return (folder / "trainer_state.json").is_file() and any(folder.glob("*.safetensors"))


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` that was written to the end.

    A job killed while saving leaves a `checkpoint-N` folder without `trainer_state.json` (the
    Trainer writes it last); `get_last_checkpoint` would pick that folder and the resume would
    fail or, worse, start from a half-written model. Such folders are skipped with a warning.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    candidates = sorted(
        (p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in candidates:
        if is_complete_checkpoint(checkpoint):
            return str(checkpoint)
        logger.warning("Skipping incomplete %s (interrupted while saving).", checkpoint)
    return None
