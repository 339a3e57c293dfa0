"""Fine-tune an image classifier (ViT or another supported backbone) on the prepared BPS folder with the `Trainer`,
then evaluate honestly.

One readable flow, like the transformers image-classification example: arguments -> data ->
model -> Trainer -> train -> evaluate validation and test -> write results and figures. What
this adds is what the BPS data needs: accuracy per condition (dose x hour), the sham negative
control (Fe vs X-ray on unirradiated images; far from chance means plate signature), a majority
baseline, and a checkpoint reload that provably restores every weight (see `BPSTrainer`).

Runs the same under `python`, `accelerate launch` (CPU, DDP, multi-node) and `torchrun`.

The Trainer subclass and its callbacks are in `trainer.py`. This file is over 450 lines because it
is the step's three argument dataclasses followed by its flow, in the order they run, as in the
transformers example: a reader follows a run from flags to `bps_results.json` without switching files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import datasets
import numpy as np
import torch
import transformers
from accelerate import PartialState
from huggingface_hub import get_token
from transformers import Trainer, TrainingArguments, set_seed

from .backbones import supported_list
from .cli import library_progress_bars_off, parse_args
from .data import (
    Augmenter,
    check_prepared_folder,
    collate_pixel_batch,
    decode_for_model,
    labels_and_conditions,
    load_bps_dataset,
    load_sham_dataset,
    with_pixel_transform,
)
from .distributed import multi_process_on_cpu
from .figures import plot_confusion_matrix, plot_training_curves
from .imaging import Preprocessor, Stretch, Transfer, dataset_clip
from .labels import OWN_SOURCES
from .manifest import read_report
from .metrics import (
    confound_check,
    judge_baseline,
    majority_baseline,
    make_compute_metrics,
    sham_control,
    softmax,
    split_metrics,
)
from .model import (
    DEFAULT_BASE_MODEL,
    build_model_from_config,
    check_architecture,
    ensure_resolvable,
    hub_id_of,
    load_classifier,
    load_processor,
    read_model_config,
    vit_processor_class,
)
from .provenance import (
    RUN_ARTIFACTS,
    RunIdentity,
    check_output_dir,
    check_same_run,
    clear_run,
    data_fingerprint,
    weights_fingerprint,
)
from .results import DataSummary, ModelSummary, RunResults, SplitMetrics, TrainingSummary, fmt
from .split import GROUPS_UNKNOWN_NOTE
from .trainer import (
    AnnouncedEarlyStopping,
    AugmentationEpochCallback,
    BPSTrainer,
    CtrlCCallback,
    RunIdentityCallback,
    class_weights_for,
    classification_logits,
    is_complete_checkpoint,
    last_complete_checkpoint,
    quiet_trainer_output,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which model to fine-tune (a Hub id or local folder), or which config to train from scratch."""

    # one of these on the command line replaces the config file's other (cli.parse_args)
    ALTERNATIVE_FLAGS = (("model_name_or_path", "config_name"),)

    model_name_or_path: str = field(
        default=DEFAULT_BASE_MODEL,
        metadata={"help": "Hub id or local folder of a checkpoint (safetensors) of a supported architecture: "
                  f"{supported_list()}. On the command line it replaces a config file's config_name; otherwise "
                  "ignored with --config_name."},
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "Train from scratch from this config JSON; its model_type picks the architecture "
                  f"({supported_list()}; e.g. configs/model/vit_tiny.json)."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input resolution; default: the checkpoint's or config's image_size."}
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={"help": "Attention kernel for training (sdpa is fastest). Explanations reload with eager."},
    )

    def __post_init__(self):
        self.config_name = self.config_name or None  # `--config_name ""` after a config file clears the file's one


StretchMode = Literal["image", "dataset"]
STRETCH_MODES: tuple[str, ...] = get_args(StretchMode)


@dataclass
class DataArguments:
    """Where the prepared folder is and how pixels are made (the stretch is saved with the model)."""

    data_dir: str = field(default="data/bps", metadata={"help": "Folder written by scripts/prepare_data.py."})
    stretch_mode: StretchMode = field(
        default="image",
        metadata={"help": "image: per-image percentile stretch; dataset: one clip for every image, the training "
                  "set's pooled percentiles (computed once, saved with the model). --clip_low/high fix it by hand."},
    )
    low_percentile: float = field(default=1.0, metadata={"help": "This percentile maps to 0 (per image or pooled)."})
    high_percentile: float = field(default=99.8, metadata={"help": "This percentile maps to 1 (per image or pooled)."})
    clip_low: float | None = field(
        default=None, metadata={"help": "Fixed clip instead of percentiles (raw grey level)."}
    )
    clip_high: float | None = field(default=None, metadata={"help": "Fixed clip upper grey level (with --clip_low)."})
    intensity_transfer: Transfer = field(
        default="linear", metadata={"help": "After the stretch (compressive ones lift dim foci)."}
    )
    transfer_gain: float = field(default=10.0, metadata={"help": "Gain g of the asinh/log transfer."})
    stretch_max_images: int = field(default=2000, metadata={"help": "--stretch_mode dataset: training images pooled."})
    cache_images: bool = field(
        default=True, metadata={"help": "Decode every TIFF once into a float16 cache (faster epochs)."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for the decode cache."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate train (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate validation/test (debugging)."})
    augment: bool = field(default=True, metadata={"help": "Random flips and 90-degree rotations during training."})

    def stretch(self, train_images=None) -> Stretch:
        """The stretch to train with; `--stretch_mode dataset` needs `train_images` (sources) for its clip.

        Without them it only checks the flags (the clip is computed later, after the data is loaded).
        """
        if (self.clip_low is None) != (self.clip_high is None):
            raise ValueError("--clip_low and --clip_high go together (or use the percentiles).")
        if self.stretch_mode not in STRETCH_MODES:
            raise ValueError(f"--stretch_mode must be one of {STRETCH_MODES}; got {self.stretch_mode!r}")
        if self.stretch_mode == "dataset" and self.clip_low is not None:
            raise ValueError("--stretch_mode dataset computes the clip; drop --clip_low/--clip_high (or use image).")
        clip = (self.clip_low, self.clip_high) if self.clip_low is not None else None
        if self.stretch_mode == "dataset" and train_images is not None:
            clip = dataset_clip(train_images, self.low_percentile, self.high_percentile, self.stretch_max_images)
            logger.info("Dataset-level clip from the training set's pooled p%g-p%g: %.1f to %.1f grey levels",
                        self.low_percentile, self.high_percentile, *clip)
        return Stretch(self.low_percentile, self.high_percentile, clip, self.intensity_transfer, self.transfer_gain)


@dataclass
class BPSTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults this task wants and two BPS options."""

    # the Trainer options this project's configs and README use: `--help` shows these, `--help_all` every one
    HELP_SHOWN_INHERITED = (
        "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
        "gradient_accumulation_steps", "learning_rate", "weight_decay", "warmup_steps", "lr_scheduler_type", "seed",
        "bf16", "fp16", "use_cpu", "dataloader_num_workers", "eval_steps", "save_steps", "report_to", "push_to_hub",
        "hub_model_id", "disable_tqdm",
    )

    output_dir: str = field(default="outputs/run", metadata={"help": "Where the model, metrics and figures go."})
    eval_strategy: str = field(default="epoch", metadata={"help": "Evaluate every epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint every epoch."})
    logging_strategy: str = field(default="steps", metadata={"help": "Log training loss every logging_steps."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the best model by the metric."})
    metric_for_best_model: str = field(default="balanced_accuracy", metadata={"help": "Validation metric to keep."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is always kept)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False with with_transform."})
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"],
        metadata={"help": "Batch keys holding the labels (a head without a loss, DeiT's distillation head, takes no "
                  "`labels` argument, so the Trainer could not find them from its signature)."},
    )
    early_stopping_patience: int | None = field(
        default=3, metadata={"help": "Stop after this many evaluations without improvement (None: never)."}
    )
    class_weighted_loss: bool = field(
        default=False, metadata={"help": "Weight the loss by inverse class frequency (imbalanced data)."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Continue a run: a checkpoint folder, or `last` for the newest complete checkpoint in "
                          "output_dir (it must be of the same data and model)."},
    )
    verbose: bool = field(
        default=False,
        metadata={"help": "Print the Trainer's per-step logs and metric tables (default: one line per evaluation)."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=None,
        metadata={"help": "Multi-process training: let DDP search every step for parameters without a gradient (an "
                          "extra pass over the autograd graph). Default: off for ViT, DeiT, Swin and BEiT without a "
                          "mask token, whose every parameter trains; on for DINOv2 (its unused mask token) and "
                          "others."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Remove an earlier run's files from output_dir first (otherwise such a folder is refused)."},
    )

    def __post_init__(self):
        if multi_process_on_cpu() and not self.use_cpu:
            # Without this, each of N CPU processes trains alone on all the data and they race on output_dir.
            self.use_cpu = True
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning only helps (and only warns) without a GPU
        super().__post_init__()


# ----------------------------------------------------------------------------------------------
# The flow
# ----------------------------------------------------------------------------------------------


def check_before_training(model_args: ModelArguments, data_args: DataArguments, training_args: BPSTrainingArguments):
    """Everything that can fail cheaply fails here, before minutes of decoding and training."""
    check_prepared_folder(data_args.data_dir)
    data_args.stretch()
    if training_args.push_to_hub:
        if not get_token():
            raise SystemExit(
                "--push_to_hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
                "(or drop --push_to_hub and publish later with scripts/publish.py)."
            )
    if model_args.config_name is None:
        ensure_resolvable(model_args.model_name_or_path)
        check_architecture(model_args.model_name_or_path)
    else:
        read_model_config(model_args.config_name)


def build_model_and_processor(model_args: ModelArguments, stretch: Stretch, labels: tuple[str, ...]):
    """The model, with one output per class of the data (`labels`, in id order), and its processor."""
    if model_args.config_name:
        model = build_model_from_config(
            model_args.config_name, labels, attn_implementation=model_args.attn_implementation,
            image_size=model_args.image_size,
        )
        size = model.config.image_size
        processor = vit_processor_class()(
            size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
    else:
        model = load_classifier(model_args.model_name_or_path, labels,
                                attn_implementation=model_args.attn_implementation)
        processor = load_processor(model_args.model_name_or_path, image_size=model_args.image_size)
    stretch.attach_to(processor)
    return model, processor


def resume_requested(training_args: BPSTrainingArguments) -> bool:
    return training_args.resume_from_checkpoint not in (None, "", "false", "False")


def resolve_resume(training_args: BPSTrainingArguments, identity: RunIdentity | None = None) -> str | None:
    """`--resume_from_checkpoint last|auto` picks the newest complete checkpoint in output_dir.

    With `identity`, the checkpoint must belong to the same run (data and model), else `RunMismatchError`.
    """
    value = training_args.resume_from_checkpoint
    if not resume_requested(training_args):
        return None
    if value in ("last", "auto", "true", "True"):
        checkpoint = last_complete_checkpoint(training_args.output_dir)
        if checkpoint is None:
            logger.warning("No checkpoint in %s to resume from; starting from scratch.", training_args.output_dir)
            return None
    elif not is_complete_checkpoint(value):
        raise SystemExit(f"--resume_from_checkpoint {value}: not a complete checkpoint folder (it needs "
                         "trainer_state.json and the *.safetensors weights).")
    else:
        checkpoint = value
    if identity is not None:
        check_same_run(Path(checkpoint), identity)
    return checkpoint


def run_identity(model_args: ModelArguments, data_args: DataArguments,
                 inputs: RunInputs | None = None) -> RunIdentity:
    """The data and model settings a resumed run must share with the run that wrote the checkpoint."""
    pixels = {key: value for key, value in vars(data_args).items()
              if any(word in key for word in ("percentile", "clip", "stretch", "transfer"))}
    return RunIdentity(
        data_fingerprint=inputs.data_fingerprint if inputs else data_fingerprint(data_args.data_dir),
        model=str(model_args.config_name or model_args.model_name_or_path),
        image_size=model_args.image_size,
        preprocessing=pixels,
    )


def prepare_output_dir(training_args: BPSTrainingArguments, identity: RunIdentity,
                       artifacts: tuple[str, ...] = RUN_ARTIFACTS) -> None:
    """Refuse or clear a folder of another run (every rank decides before the main process changes anything).

    `artifacts`: the names such a run writes (the audit's folder has its own)."""
    state = PartialState()
    clear = check_output_dir(training_args.output_dir, identity, overwrite=training_args.overwrite_output_dir,
                             resume=resume_requested(training_args), artifacts=artifacts)
    state.wait_for_everyone()
    if state.is_main_process:
        if clear:
            removed = clear_run(training_args.output_dir, artifacts)
            logger.warning("--overwrite_output_dir: removed the earlier run's %s", ", ".join(removed))
        identity.write(training_args.output_dir)
    state.wait_for_everyone()


def _truncate(dataset, n: int | None):
    return dataset.select(range(min(n, len(dataset)))) if n else dataset


def evaluate_split(trainer: Trainer, dataset, raw_dataset, prefix: str) -> tuple[dict, SplitMetrics, np.ndarray]:
    """Trainer metrics (scalars, logged), the full result (confusion matrix, per condition) and the probabilities."""
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    labels, conditions = labels_and_conditions(raw_dataset)
    probabilities = softmax(output.predictions)
    return output.metrics, split_metrics(labels, probabilities, conditions), probabilities


@dataclass
class RunInputs:
    """The splits a run trains, validates and scores on, decoded but not yet transformed.

    `inputs_from_folder` reads them from the prepared folder. A caller that decodes once for several runs (the
    audit's folds) builds its own from `select`s of one decode cache, with the fingerprint of the run's own data.
    """

    raw: dict[str, Any]  # train, validation, test: datasets of paths, labels, conditions
    raw_sham: Any  # the 0 Gy images, or None
    decoded: dict[str, Any]  # train, validation, test, sham -> `decode_for_model` output (sham may be None)
    stretch: Stretch
    preprocessor: Preprocessor  # what `decoded` was made with
    data_fingerprint: str | None = None  # None: the prepared folder's manifest.csv
    split_by: str | None = None  # None: split_report.json's


@dataclass
class RunData:
    """The raw splits (paths, labels, conditions) and the decoded datasets the Trainer consumes."""

    raw: Any  # datasets.DatasetDict: train, validation, test
    raw_sham: Any  # datasets.Dataset of the 0 Gy images, or None
    decoded: dict[str, Any]  # train, validation, test, sham -> dataset with pixel_values
    split_by: str | None = None

    @property
    def train_labels(self) -> np.ndarray:
        return np.asarray(self.raw["train"]["label"], dtype=np.int64)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes, in the model's id order (the data's label folders)."""
        return tuple(self.raw["train"].features["label"].names)


@dataclass
class RunOutcome:
    """What `bps_results.json` holds, and the probabilities behind its test and sham numbers."""

    results: RunResults
    probabilities: dict[str, np.ndarray]  # test, sham -> softmax [n, 2], in the split's order


def start_run(model_args: ModelArguments, data_args: DataArguments, training_args: BPSTrainingArguments,
              inputs: RunInputs | None = None) -> tuple[RunIdentity, str | None]:
    """Everything that can fail cheaply, the output-folder guard and the resume choice, before any decoding."""
    check_before_training(model_args, data_args, training_args)
    identity = run_identity(model_args, data_args, inputs)
    prepare_output_dir(training_args, identity)
    resume_from = resolve_resume(training_args, identity)
    if resume_from and training_args.should_log:
        step = json.loads((Path(resume_from) / "trainer_state.json").read_text()).get("global_step")
        print(f"Resuming from {resume_from} (step {step}).", file=sys.stderr)
    return identity, resume_from


def inputs_from_folder(data_args: DataArguments, training_args: BPSTrainingArguments, model_args: ModelArguments):
    """(inputs, model, processor): the splits, the stretch (dataset mode: from the training images), the model and
    every split decoded."""
    raw = load_bps_dataset(data_args.data_dir)
    raw["train"] = _truncate(raw["train"], data_args.max_train_samples)
    for split in ("validation", "test"):
        raw[split] = _truncate(raw[split], data_args.max_eval_samples)
    # dataset mode: the clip from the training images, the same on every rank (a function of the sorted file list)
    stretch = data_args.stretch(sorted(image["path"] for image in raw["train"]["image"]))
    raw_sham = load_sham_dataset(data_args.data_dir)
    model, processor = build_model_and_processor(model_args, stretch, tuple(raw["train"].features["label"].names))
    preprocessor = Preprocessor.from_processor(processor, stretch)
    with training_args.main_process_first(desc="decoding images"):
        def decode(dataset, name):
            return decode_for_model(dataset, preprocessor, data_args.cache_images,
                                    data_args.preprocessing_num_workers, f"Decoding {name}")

        decoded = {name: decode(raw[name], name) for name in ("train", "validation", "test")}
        decoded["sham"] = decode(raw_sham, "sham") if raw_sham is not None else None
    return RunInputs(raw, raw_sham, decoded, stretch, preprocessor), model, processor


def load_run_data(data_args: DataArguments, training_args: BPSTrainingArguments, model_args: ModelArguments,
                  inputs: RunInputs | None = None):
    """The model and the splits as the Trainer reads them (training images augmented), from `inputs` when given."""
    if inputs is None:
        inputs, model, processor = inputs_from_folder(data_args, training_args, model_args)
    else:
        model, processor = build_model_and_processor(model_args, inputs.stretch,
                                                     tuple(inputs.raw["train"].features["label"].names))
        if Preprocessor.from_processor(processor, inputs.stretch) != inputs.preprocessor:
            raise ValueError("the given inputs were decoded with other preprocessing than this model's; decode them "
                             "with Preprocessor.from_processor of the same model arguments and stretch.")
    augmenter = Augmenter(seed=training_args.seed) if data_args.augment else None
    decoded = {name: with_pixel_transform(dataset, inputs.preprocessor, augmenter if name == "train" else None)
               for name, dataset in inputs.decoded.items() if dataset is not None}
    decoded.setdefault("sham", None)
    data = RunData(inputs.raw, inputs.raw_sham, decoded, inputs.split_by)
    return data, model, processor, inputs.preprocessor, inputs.stretch, augmenter


def build_trainer(model, processor, data: RunData, augmenter: Augmenter | None, identity: RunIdentity,
                  training_args: BPSTrainingArguments) -> BPSTrainer:
    callbacks: list[Any] = [RunIdentityCallback(identity), CtrlCCallback()]
    if augmenter is not None:
        callbacks.append(AugmentationEpochCallback(augmenter))
    if training_args.early_stopping_patience and training_args.load_best_model_at_end:
        callbacks.append(AnnouncedEarlyStopping(training_args.early_stopping_patience))
    trainer = BPSTrainer(
        model=model,
        args=training_args,
        train_dataset=data.decoded["train"],
        eval_dataset=data.decoded["validation"],
        processing_class=processor,
        data_collator=collate_pixel_batch,
        compute_metrics=make_compute_metrics(),
        preprocess_logits_for_metrics=classification_logits,
        callbacks=callbacks,
        class_weights=(class_weights_for(data.train_labels, len(data.class_names))
                       if training_args.class_weighted_loss else None),
    )
    if not training_args.verbose:
        quiet_trainer_output(trainer)
    return trainer


def evaluate_run(trainer: BPSTrainer, data: RunData, log_metrics) -> tuple[SplitMetrics, SplitMetrics, Any, dict]:
    """Validation and test (metric files and detail), then the sham control on the 0 Gy images; and the test and
    sham probabilities."""
    details, probabilities = {}, {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        metrics, details[split], probabilities[split] = evaluate_split(trainer, data.decoded[split], data.raw[split],
                                                                        prefix)
        log_metrics(prefix, metrics)
        trainer.save_metrics(prefix, metrics)
    sham = None
    if data.decoded["sham"] is not None:
        sham_output = trainer.predict(data.decoded["sham"], metric_key_prefix="sham")
        sham_labels, _ = labels_and_conditions(data.raw_sham)
        probabilities["sham"] = softmax(sham_output.predictions)
        sham = sham_control(sham_labels, probabilities["sham"], data.class_names)
    del probabilities["validation"]
    return details["validation"], details["test"], sham, probabilities


def model_summary(model_args: ModelArguments, model, image_size: int) -> ModelSummary:
    """What a results file says about the model trained: where it came from, its architecture and size."""
    return ModelSummary(
        model_name_or_path=None if model_args.config_name else model_args.model_name_or_path,
        config_name=model_args.config_name,
        base_model=None if model_args.config_name else hub_id_of(model_args.model_name_or_path),
        image_size=image_size,
        architecture=model.config.model_type,
        model_class=type(model).__name__,
        num_parameters=int(sum(p.numel() for p in model.parameters())),
    )


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: BPSTrainingArguments,
                 inputs: RunInputs | None = None) -> RunResults:
    """Train, evaluate and write everything to `training_args.output_dir`; returns what bps_results.json holds.

    `--disable_tqdm true` hides the libraries' bars too ("Decoding train", "Loading weights"), for this run only."""
    return train_and_evaluate(model_args, data_args, training_args, inputs).results


def train_and_evaluate(model_args: ModelArguments, data_args: DataArguments, training_args: BPSTrainingArguments,
                       inputs: RunInputs | None = None) -> RunOutcome:
    """`run_training`, also returning the test and sham probabilities; `inputs` instead of the prepared folder's
    splits (see `RunInputs`)."""
    with library_progress_bars_off(training_args.disable_tqdm):
        return _train_and_write(model_args, data_args, training_args, inputs)


def _train_and_write(model_args: ModelArguments, data_args: DataArguments, training_args: BPSTrainingArguments,
                     inputs: RunInputs | None) -> RunOutcome:
    identity, resume_from = start_run(model_args, data_args, training_args, inputs)
    set_seed(training_args.seed)
    data, model, processor, preprocessor, stretch, augmenter = load_run_data(data_args, training_args, model_args,
                                                                             inputs)
    trainer = build_trainer(model, processor, data, augmenter, identity, training_args)

    train_result = trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model()  # model.safetensors, config.json, preprocessor_config.json (with the stretch)
    log_metrics = trainer.log_metrics if training_args.verbose else (lambda split, metrics: None)
    log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    validation_detail, test_detail, sham, probabilities = evaluate_run(trainer, data, log_metrics)

    summary = _data_summary(data_args, data)
    results = RunResults(
        splits={"validation": validation_detail, "test": test_detail},
        sham_control=sham,
        baseline=judge_baseline(test_detail, majority_baseline(data.train_labels,
                                                               labels_and_conditions(data.raw["test"])[0],
                                                               data.class_names)),
        data=summary,
        model=model_summary(model_args, model, preprocessor.height),
        training=_training_summary(trainer, training_args, train_result),
        preprocessing=stretch.to_dict(),
        settings=command_settings(model_args, data_args, training_args),
        confound=None if summary.source in OWN_SOURCES else confound_check(summary.label_column,
                                                                            test_detail.per_condition),
    )
    if trainer.is_world_process_zero():
        write_run(Path(training_args.output_dir), results, trainer)
    return RunOutcome(results, probabilities)


def _training_summary(trainer: BPSTrainer, training_args: BPSTrainingArguments, train_result) -> TrainingSummary:
    return TrainingSummary(
        epochs_run=float(trainer.state.epoch or 0),
        num_train_epochs=float(training_args.num_train_epochs),
        global_step=int(trainer.state.global_step),
        best_model_checkpoint=_relative(trainer.state.best_model_checkpoint, training_args.output_dir),
        best_metric=trainer.state.best_metric,
        metric_for_best_model=training_args.metric_for_best_model,
        learning_rate=training_args.learning_rate,
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        seed=training_args.seed,
        train_runtime_s=train_result.metrics.get("train_runtime"),
        early_stop=next((callback.note(training_args, trainer.state) for callback in trainer.callback_handler.callbacks
                         if isinstance(callback, AnnouncedEarlyStopping)), None),
    )


def write_run(out: Path, results: RunResults, trainer: BPSTrainer) -> None:
    """bps_results.json with the weights' fingerprint, the two figures and the summary (main process only)."""
    results.model_fingerprint = weights_fingerprint(out)
    results.to_json(out / RunResults.FILENAME)
    plot_confusion_matrix(results.splits["test"].confusion_matrix, results.data.labels,
                          out / "figures" / "confusion_matrix.png")
    plot_training_curves(trainer.state.log_history, out / "figures" / "training_curves.png")
    _print_summary(out, results)


# The TrainingArguments that decide what a run learns (the other ~150 are defaults or speed settings).
RECORDED_TRAINING_SETTINGS = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "learning_rate", "weight_decay", "warmup_steps", "lr_scheduler_type", "seed", "bf16", "fp16",
    "eval_strategy", "save_strategy", "load_best_model_at_end", "metric_for_best_model",
    "early_stopping_patience", "class_weighted_loss", "resume_from_checkpoint", "overwrite_output_dir",
)


def command_settings(model_args: ModelArguments, data_args: DataArguments,
                     training_args: BPSTrainingArguments) -> dict[str, Any]:
    """The settings this training command ran with, recorded in bps_results.json (provenance)."""
    training = {key: getattr(training_args, key) for key in RECORDED_TRAINING_SETTINGS}
    for key in ("lr_scheduler_type", "eval_strategy", "save_strategy"):  # enums in JSON as their values
        training[key] = str(getattr(training[key], "value", training[key]))
    training["num_processes"] = training_args.world_size
    return {"model": dict(vars(model_args)), "data": dict(vars(data_args)), "training": training}


def _relative(path: str | None, root: str) -> str | None:
    return os.path.relpath(path, root) if path else None


def _data_summary(data_args: DataArguments, data: RunData) -> DataSummary:
    report = read_report(data_args.data_dir)
    raw, raw_sham = data.raw, data.raw_sham
    names = raw["train"].features["label"].names

    def count(dataset) -> dict[str, int]:
        return {label: int(n) for label, n in zip(names, np.bincount(dataset["label"], minlength=len(names)))}

    counts = {split: count(raw[split]) for split in raw}
    if raw_sham is not None:
        counts["sham"] = count(raw_sham)
    return DataSummary(
        data_dir=str(data_args.data_dir),
        source=report.get("source"),
        split_by=data.split_by or report.get("split_by"),
        test_hours=report.get("test_hours"),
        include_sham=report.get("include_sham"),
        counts=counts,
        labels=list(names),
        label_column=report.get("label_column"),
        groups_known=report.get("groups_known", True),
    )


def _confound_lines(results: RunResults) -> list[str]:
    """The groups-unknown warning and the task's confound, with the dose-matched pairs' particle accuracy."""
    lines = [] if results.data is None or results.data.groups_known else [f"Warning: {GROUPS_UNKNOWN_NOTE}"]
    if results.confound is not None:
        lines.append(f"Confound: {results.confound.note}")
        lines += [f"  {p.pair}: balanced accuracy {fmt(p.balanced_accuracy)}, accuracy {fmt(p.accuracy)} (n={p.n})"
                  for p in results.confound.dose_matched_pairs]
    return lines


def _print_summary(out: Path, results: RunResults) -> None:
    test, sham = results.splits["test"], results.sham_control
    lines = [
        "",
        f"Test accuracy {fmt(test.accuracy)}, balanced {fmt(test.balanced_accuracy)}, "
        f"ROC-AUC {fmt(test.roc_auc)} (n={test.n}); majority baseline {fmt(results.baseline.accuracy)}",
        *([f"Warning: the model is {results.baseline.interpretation}."] if results.baseline.beaten is False else []),
        f"Sham control: {sham.interpretation}" if sham else (
            "Sham control: skipped, no 0 Gy images in the data folder (it needs a dose_Gy column that says which "
            "images are unirradiated, and 0 Gy images of irradiated classes)."),
        *_confound_lines(results),
        f"Model and processor:   {out}/model.safetensors, config.json, preprocessor_config.json",
        f"Metrics:               {out}/all_results.json, test_results.json, bps_results.json",
        f"Figures:               {out}/figures/confusion_matrix.png, training_curves.png",
        "",
    ]
    print("\n".join(lines), file=sys.stderr)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler()]
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    logging.getLogger("bps_vit").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    if not getattr(training_args, "verbose", False):
        transformers.utils.logging.disable_progress_bar()  # "Writing model shards", "Loading weights": < 1 s each


def main(argv: list[str] | None = None) -> RunResults:
    """Parse `(ModelArguments, DataArguments, BPSTrainingArguments)` from a YAML/JSON file and/or flags."""
    model_args, data_args, training_args = parse_args(
        (ModelArguments, DataArguments, BPSTrainingArguments), argv
    )
    setup_logging(training_args)
    try:
        return run_training(model_args, data_args, training_args)  # scripts/train.py turns errors into exit codes
    except KeyboardInterrupt:
        command = " ".join(["python", "scripts/train.py", *(sys.argv[1:] if argv is None else argv)])
        hint = "" if "--resume_from_checkpoint" in command else " --resume_from_checkpoint last"
        raise SystemExit(f"\nInterrupted. Continue from the last checkpoint with:\n  {command}{hint}") from None


__all__ = [
    "ModelArguments",
    "DataArguments",
    "BPSTrainingArguments",
    "RunInputs",
    "RunOutcome",
    "run_training",
    "train_and_evaluate",
    "main",
]
