"""The typed, versioned schema of the files the steps hand over: one class per fact, one rule per verdict.

`train` writes `bps_results.json` (`RunResults`), `predict --data_dir` writes `<output>_metrics.json`
(`PredictionResults`, with the same `splits[<split>]` shape as training's), `explain` writes
`explain_metrics.json` (`ExplanationResults`), and the model card reads all of them through these
classes instead of guessing at dict keys. Every file carries `schema_version` and `kind`; a file of
an older version (one written before versioning, with no `schema_version`, is "version 0") is upgraded
on load by its class's `_upgrade`, and a file of a newer version than this code knows fails with a
message that names both versions.

`Condition` is the one formatter and parser of condition strings such as `Fe 0.82Gy 4h`, and
`ShamControl.judge` is the one rule that reads the sham negative control. This module knows about
nothing else in the package, so every other module may import it. It is one file, over 450 lines, on
purpose: a reader checks a field's meaning, its version rule and its (de)serialisation in one place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

#: Bump when a field is renamed, removed or changes meaning; adding an optional field does not need it.
#: 1: splits nested under `splits`. 2: explain_metrics.json typed (per-image lines nest their methods, `labels`
#: is always the class list), and a run records the Hub id it was fine-tuned from (`ModelSummary.base_model`).
SCHEMA_VERSION = 2

T = TypeVar("T")


class SchemaError(ValueError):
    """A results file that does not match the schema; the message names the file, the field and the fix."""


# --------------------------------------------------------------------------- conditions


_CONDITION = re.compile(r"^(?P<label>\S+) (?P<dose>[0-9.eE+-]+)Gy (?P<hours>\d+)h$")
_UNKNOWN = " (dose/hour unknown)"


@dataclass(frozen=True)
class Condition:
    """One experimental condition: particle label x dose (Gy) x hours after exposure.

    `str()` gives `Fe 0.82Gy 4h`; a source without dose/hour metadata (the Hub mirror) gives
    `Fe (dose/hour unknown)`. `Condition.parse` reads either form back.
    """

    label: str
    dose_Gy: float | None = None
    hours: int | None = None

    @classmethod
    def of(cls, label: str, dose_Gy: Any = None, hours: Any = None) -> Condition:
        """From raw values (floats, CSV strings, NaN or -1 for unknown); unknown dose or hour -> both None."""
        try:
            dose, hour = float(dose_Gy), float(hours)
        except (TypeError, ValueError):
            return cls(label)
        if not (math.isfinite(dose) and dose >= 0 and math.isfinite(hour) and hour >= 0):
            return cls(label)
        return cls(label, dose, int(hour))

    @property
    def known(self) -> bool:
        return self.dose_Gy is not None and self.hours is not None

    def __str__(self) -> str:
        if not self.known:
            return f"{self.label}{_UNKNOWN}"
        return f"{self.label} {self.dose_Gy:g}Gy {self.hours}h"

    @classmethod
    def parse(cls, text: str) -> Condition:
        text = str(text).strip()
        if text.endswith(_UNKNOWN):
            return cls(text[: -len(_UNKNOWN)])
        match = _CONDITION.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a condition (expected e.g. 'Fe 0.82Gy 4h' or 'Fe{_UNKNOWN}').")
        return cls(match["label"], float(match["dose"]), int(match["hours"]))

    def sort_key(self) -> tuple:
        return (self.label, -1.0 if self.dose_Gy is None else self.dose_Gy, -1 if self.hours is None else self.hours)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as the summaries and the card show it: floats to `digits` places, ints as is, missing as n/a."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# --------------------------------------------------------------------------- (de)serialisation


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as type `tp`: dataclasses, X | None, list[X], dict[str, X], scalars, Any."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if value is None:
        raise SchemaError(f"{where}: null where a {getattr(tp, '__name__', tp)} is required")
    if _is_dataclass_type(tp):
        return _from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: _convert(args[1] if args else Any, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SchemaError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SchemaError(f"{where}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.init:
            raise SchemaError(f"{where}: missing field {f.name!r} of {cls.__name__}")
    return cls(**values)


def _jsonable(value: Any) -> Any:
    """JSON has no NaN or infinity: they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _ResultsFile:
    """Mixin for the top-level files: `kind`, version check, `to_json`/`from_json`."""

    KIND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The JSON text; with `path`, also written there atomically (a reader never sees half a file)."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        return text

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Turn an older version's dict into the current one (overridden where a version 0 layout existed)."""
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>"):
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise SchemaError(f"{source}: schema_version {version!r} is not a version number.")
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{source}: schema_version {version} is newer than this bps-vit reads (version {SCHEMA_VERSION}). "
                "Upgrade bps-vit, or regenerate the file with this version."
            )
        kind = data.get("kind", cls.KIND)
        if kind != cls.KIND:
            raise SchemaError(f"{source}: a {kind!r} results file, not {cls.KIND!r}; pass the right file.")
        data = cls._upgrade(dict(data), version) if version < SCHEMA_VERSION else dict(data)
        data.update(schema_version=SCHEMA_VERSION, kind=cls.KIND)
        try:
            return _from_dict(cls, data, source)
        except SchemaError as err:
            raise SchemaError(f"{err} (schema_version {version} file; regenerate it with this bps-vit)") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike):
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SchemaError(f"{path}: unreadable JSON ({err}).") from None
        return cls.from_dict(data, str(path))


# --------------------------------------------------------------------------- metrics


@dataclass
class ConditionScore:
    """Accuracy within one experimental condition."""

    condition: str
    label: str
    dose_Gy: float | None
    hr_post_exposure: int | None
    n: int
    accuracy: float | None


@dataclass
class SplitMetrics:
    """Classifier metrics on one split; the same shape in training (`bps_results.json`) and prediction."""

    n: int
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    f1_macro: float | None = None
    roc_auc: float | None = None
    loss: float | None = None  # mean cross-entropy of the predicted probabilities
    confusion_matrix: list[list[int]] = field(default_factory=list)  # rows: true label, columns: predicted
    per_condition: list[ConditionScore] = field(default_factory=list)


#: Two-sided z for the sham chance band: a fair coin stays inside it 95% of the time.
SHAM_Z = 1.96


def chance_band(class_counts: list[int], num_classes: int = 2) -> float | None:
    """Half-width of the ~95% range of a fair die's balanced accuracy on these class sizes.

    Balanced accuracy is the mean of the per-class recalls; under a die with `num_classes` faces each recall is
    Binomial(n_c, p) / n_c with p = 1/num_classes and variance p(1-p) / n_c, so the standard deviation is
    sqrt(sum p(1-p)/n_c) / (number of classes present); for two classes, sqrt(0.25/n_0 + 0.25/n_1) / 2 (0.5/sqrt(n)
    when balanced). None when fewer than two classes have images.
    """
    if len(class_counts) < 2 or min(class_counts) <= 0:
        return None
    p = 1.0 / num_classes
    return SHAM_Z * math.sqrt(sum(p * (1 - p) / c for c in class_counts)) / len(class_counts)


@dataclass
class ShamControl(SplitMetrics):
    """Fe-vs-X-ray metrics on unirradiated (0 Gy) images, and THE verdict on them (`judge`).

    Both sham branches are undamaged, so a model that reads radiation damage scores at chance.
    The verdict is a binomial band, not a fixed tolerance: a fixed +-0.1 raises false alarms on
    small sham sets (on 40 images a fair coin leaves 0.5 +- 0.1 about one time in five) and misses
    real batch signals on large ones (on 1,059 sham images a coin stays within 0.5 +- 0.03, so 0.58
    is a clear signal that +-0.1 lets pass). Far from chance in EITHER direction is flagged: below
    chance means the model systematically assigns the other branch, just as much a batch signal.
    """

    chance_band: float | None = None
    batch_signature_suspected: bool | None = None
    interpretation: str = ""
    #: Share of each predicted class among the sham images, overall ("all") and per branch.
    predicted_share: dict[str, dict[str, float]] | None = None
    #: The same in plain words, e.g. "the model calls 99.7% of undamaged nuclei X-ray (Fe branch 99.6%, ...)".
    prediction_summary: str = ""

    @staticmethod
    def shares(confusion_matrix: list[list[int]], labels: tuple[str, ...]) -> dict[str, dict[str, float]] | None:
        """Predicted-class shares from the confusion matrix (rows: branch, columns: predicted class)."""
        if not confusion_matrix or sum(map(sum, confusion_matrix)) == 0:
            return None
        rows = {branch: row for branch, row in zip(labels, confusion_matrix) if sum(row)}
        total = [sum(column) for column in zip(*confusion_matrix)]
        rows["all"] = total
        return {name: {label: count / sum(row) for label, count in zip(labels, row)} for name, row in rows.items()}

    @staticmethod
    def describe(shares: dict[str, dict[str, float]]) -> str:
        overall = shares["all"]
        majority = max(overall, key=overall.get)
        branches = ", ".join(f"{name} branch {100 * share[majority]:.1f}%" for name, share in shares.items()
                             if name != "all")
        return f"the model calls {100 * overall[majority]:.1f}% of undamaged nuclei {majority} ({branches})"

    @classmethod
    def judge(cls, metrics: SplitMetrics, labels: tuple[str, ...]) -> ShamControl:
        """The verdict, always followed by what the model predicts on the sham images (when it predicted any).
        `labels` are the model's classes; chance is 1 / their number. Class sizes come from the confusion matrix
        (rows = true label, the branch); a version 0 file without one is read as two balanced halves of `n`."""
        fields_ = {f.name: getattr(metrics, f.name) for f in dataclasses.fields(SplitMetrics)}
        shares = cls.shares(metrics.confusion_matrix, labels)
        fields_["predicted_share"] = shares
        fields_["prediction_summary"] = cls.describe(shares) if shares else ""
        counts = [sum(row) for row in metrics.confusion_matrix] or [metrics.n / 2, metrics.n / 2]
        branches = [label for label, count in zip(labels, counts) if count]
        if len(labels) > 2:  # a class without sham images is no branch of the control
            counts = [count for count in counts if count]
        chance = 1.0 / len(labels)
        score, band = metrics.balanced_accuracy, chance_band(counts, len(labels))
        predictions = f" Predictions: {fields_['prediction_summary']}." if shares else ""
        if score is None or band is None:
            return cls(**fields_, chance_band=band,
                       interpretation="not available (the sham set needs images of both branches)" + predictions)
        where = (f"balanced accuracy {score:.3f} on {metrics.n} unirradiated images; chance range {chance:.3g} "
                 f"± {band:.3f}")
        suspected = abs(score - chance) > band
        if not suspected:
            text = (f"{where}. Within chance, as expected if the model reads radiation damage rather than which "
                    "plate or branch an image came from.")
        elif score > chance:
            text = (f"Warning: {where}. The model separates the {' and '.join(branches)} branches without radiation "
                    "damage, so "
                    "part of what it learned is a plate/batch signature; treat the test accuracy with suspicion.")
        else:
            text = (f"Warning: {where}. Below chance: the model systematically assigns the opposite branch to "
                    "unirradiated cells, which also points at a plate/batch signal rather than damage.")
        text += predictions
        if shares and max(shares["all"].values()) > 0.9:
            text += (" A model that sends almost every undamaged nucleus to one class has learned 'no damage' "
                     "as that class: its call on an unirradiated cell carries no information.")
        return cls(**fields_, chance_band=band, batch_signature_suspected=bool(suspected), interpretation=text)


@dataclass
class PairScore:
    """Particle accuracy within one nearly dose-matched pair of conditions (e.g. Fe 0.82 Gy vs X-ray 1 Gy)."""

    pair: str
    n: int
    accuracy: float | None
    balanced_accuracy: float | None  # the mean of the two arms' accuracies (each arm is one class)


@dataclass
class ConfoundCheck:
    """What else the task can learn in this design, and the scores that test for it."""

    note: str
    dose_matched_pairs: list[PairScore] = field(default_factory=list)


@dataclass
class Baseline:
    """Always predicting the most common training class: the floor any model must beat."""

    majority_class: str
    accuracy: float | None
    beaten: bool | None = None  # the test accuracy above it by a one-sided binomial test (metrics.judge_baseline)
    interpretation: str | None = None  # that verdict in words, for the training summary and the card


# --------------------------------------------------------------------------- run, prediction, explanation


@dataclass
class DataSummary:
    data_dir: str
    source: str | None = None  # synthetic | s3 | hf | local, from split_report.json
    split_by: str | None = None
    test_hours: list[int] | None = None
    include_sham: bool | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label -> images
    #: The classes in the model's id order (files before this field: the keys of `counts`).
    labels: list[str] = field(default_factory=list)
    #: What the classes are: particle_type, dose_Gy, hr_post_exposure, condition or a table's own label.
    label_column: str | None = None
    #: False when the data named no plates, wells or fields (split by image: accuracy may be inflated).
    groups_known: bool = True

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = next((list(c) for c in self.counts.values() if len(c) >= 2), [])

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


@dataclass
class ModelSummary:
    model_name_or_path: str | None = None  # None when trained from scratch
    config_name: str | None = None
    image_size: int | None = None
    architecture: str | None = None  # the config's model_type (vit, deit, beit, dinov2, ...); None in older files
    model_class: str | None = None  # the transformers class trained, e.g. DeiTForImageClassificationWithTeacher
    num_parameters: int | None = None
    #: The Hub id the run was fine-tuned from, recorded by training (it knows whether it loaded a Hub id or a
    #: local folder); None from scratch or from a local folder. The card's `base_model` metadata.
    base_model: str | None = None


def _looks_like_hub_id(name: str) -> bool:
    """For files written before `base_model` was recorded: USER/NAME or NAME, not a path that exists here."""
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1 and not Path(name).exists()


@dataclass
class TrainingSummary:
    epochs_run: float | None = None
    num_train_epochs: float | None = None
    global_step: int | None = None
    best_model_checkpoint: str | None = None
    best_metric: float | None = None
    metric_for_best_model: str | None = None
    learning_rate: float | None = None
    per_device_train_batch_size: int | None = None
    seed: int | None = None
    train_runtime_s: float | None = None
    early_stop: str | None = None  # why and after which epoch early stopping ended the run, whose weights it kept


def _labels_of(data: dict[str, Any]) -> tuple[str, ...]:
    """The classes an old file names in its per-split counts (its `data.counts`), in their order there."""
    counts = (data.get("data") or {}).get("counts") if isinstance(data.get("data"), dict) else None
    for by_label in (counts or {}).values():
        if isinstance(by_label, dict) and len(by_label) >= 2:
            return tuple(by_label)
    return ("class 0", "class 1")


def _upgrade_metrics_v0(data: dict[str, Any], split_keys: dict[str, str]) -> dict[str, Any]:
    """Version 0 kept splits at the top level and per-condition rows beside them; version 1 nests both."""
    splits = {}
    for split, rows_key in split_keys.items():
        if isinstance(data.get(split), dict):
            splits[split] = {**data.pop(split), "per_condition": data.pop(rows_key, None) or []}
    data["splits"] = splits
    sham = data.get("sham_control")
    if isinstance(sham, dict):  # re-judged: version 0 files used a fixed +-0.1 that could disagree with the band
        kept = {k: sham[k] for k in dataclasses.asdict(SplitMetrics(n=0)) if k in sham and k != "per_condition"}
        judged = ShamControl.judge(_from_dict(SplitMetrics, kept, "sham_control"), _labels_of(data))
        data["sham_control"] = dataclasses.asdict(judged)
    return data


@dataclass
class RunResults(_ResultsFile):
    """`bps_results.json`: what a training run measured, and on what."""

    KIND: ClassVar[str] = "run"
    FILENAME: ClassVar[str] = "bps_results.json"

    splits: dict[str, SplitMetrics] = field(default_factory=dict)  # validation, test
    sham_control: ShamControl | None = None
    baseline: Baseline | None = None
    data: DataSummary | None = None
    model: ModelSummary | None = None
    training: TrainingSummary | None = None
    preprocessing: dict[str, Any] | None = None  # imaging.Stretch.to_dict()
    model_fingerprint: str | None = None  # sha256 of the weights (`weights_fingerprint`)
    settings: dict[str, Any] | None = None  # the command's settings
    confound: ConfoundCheck | None = None  # BPS tasks: what else the model can learn, and the test for it
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        if version < 1:
            data = _upgrade_metrics_v0(data, {"validation": "validation_per_condition", "test": "per_condition"})
            known = {f.name for f in dataclasses.fields(TrainingSummary)}
            if isinstance(data.get("training"), dict):  # version 0 runs may carry keys this version dropped
                data["training"] = {k: v for k, v in data["training"].items() if k in known}
        model = data.get("model")
        if version < 2 and isinstance(model, dict) and "base_model" not in model:
            name = model.get("model_name_or_path")
            hub_id = isinstance(name, str) and not model.get("config_name") and _looks_like_hub_id(name)
            data["model"] = {**model, "base_model": name if hub_id else None}
        return data


@dataclass
class PredictionError:
    path: str
    status: str


@dataclass
class PredictionResults(_ResultsFile):
    """`predict --data_dir`'s metrics JSON: `splits[split]` and `sham_control` are shaped as in `RunResults`."""

    KIND: ClassVar[str] = "prediction"

    model: str | None
    data_dir: str
    split: str
    splits: dict[str, SplitMetrics] = field(default_factory=dict)
    sham_control: ShamControl | None = None
    baseline: Baseline | None = None
    errors: list[PredictionError] = field(default_factory=list)
    model_fingerprint: str | None = None
    settings: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND

    @property
    def n_errors(self) -> int:
        return len(self.errors)

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        if version >= 1:
            return data
        data.pop("n_errors", None)
        split = data.get("split", "test")
        return _upgrade_metrics_v0(data, {split: "per_condition"})


# --------------------------------------------------------------------------- explanation


@dataclass
class Interval:
    """A paired per-image gain (method minus its baseline, image by image): mean and bootstrap 95% interval."""

    mean: float
    ci95: list[float]  # [low, high]
    n: int


@dataclass
class Verdicts:
    """The explain step's yes/no per check, the only verdicts any reader shows: True beats the baseline, False does
    not, None means withheld (the perturbation the number rests on does not remove the signal) or no data."""

    deletion: bool | None = None
    insertion: bool | None = None
    randomization: bool | None = None
    foci_mass: bool | None = None
    pointing_game: bool | None = None


@dataclass
class MethodSummary:
    """One explanation method over all images: each score beside its baseline, the paired gains, the verdicts."""

    title: str | None = None  # the method's display name (the explain step's method registry)
    deletion_auc: float | None = None  # probability scale, mean over images; lower is more faithful
    insertion_auc: float | None = None  # higher is more faithful
    random_deletion_auc: float | None = None
    random_insertion_auc: float | None = None
    deletion_log_odds_gain: Interval | None = None  # random order minus heatmap order: > 0 is better
    insertion_log_odds_gain: Interval | None = None  # heatmap order minus random order: > 0 is better
    randomization_spearman: float | None = None  # map vs the map of a re-initialised model (last stage)
    randomization_spearman_by_stage: dict[str, float | None] | None = None  # classifier / cascade checks only
    foci_mass: float | None = None  # share of the map on the true foci (images with foci only)
    foci_mass_baseline: float | None = None  # the centred Gaussian's
    foci_mass_uniform: float | None = None  # a uniform map's (the foci's share of the image)
    foci_mass_gain: Interval | None = None  # method minus centre map
    foci_mass_ratio_to_centre: float | None = None
    pointing_game: float | None = None
    pointing_game_baseline: float | None = None
    pointing_game_uniform: float | None = None
    pointing_game_gain: Interval | None = None
    num_images_with_foci: int = 0
    beats_baseline: Verdicts = field(default_factory=Verdicts)
    verdict_notes: list[str] = field(default_factory=list)  # why a verdict was withheld


@dataclass
class WholeImageCheck:
    """What the model says about images perturbed everywhere (or untouched, where `removes_signal` is None)."""

    accuracy: float | None
    balanced_accuracy: float | None
    mean_p_target: float | None
    chance: float | None
    removes_signal: bool | None = None


@dataclass
class PerturbationCheck:
    """Whether each perturbation a number rests on removes what the model reads, and which ones the numbers use."""

    labels: str  # "true", or "predicted (...)" where there is no truth
    tolerance: float
    untouched: WholeImageCheck | None
    perturbations: dict[str, WholeImageCheck] = field(default_factory=dict)
    deletion_insertion: str | None = None  # the key of `perturbations` deletion and insertion rest on
    deletion_insertion_removes_signal: bool | None = None
    shap_masker: str | None = None  # the key SHAP's masker rests on
    shap_masker_removes_signal: bool | None = None
    no_verdict: str | None = None  # why no perturbation (and no faithfulness score) is judged: too few images, or a
    # model at chance on them (explain.metrics.verdicts.no_verdict_reason)


@dataclass
class CausalCondition:
    accuracy: float | None
    balanced_accuracy: float | None
    mean_p_true: float | None


@dataclass
class CausalTest:
    """The causal foci test: the model on each image untouched, with its true foci ablated, with as many random
    nucleus pixels ablated. A model that reads the foci falls to chance on the second and holds on the third."""

    n: int
    space: str
    fill: str
    foci_dilation_px: int
    chance: float
    tolerance: float
    untouched: CausalCondition
    foci_ablated: CausalCondition
    random_nucleus_ablated: CausalCondition
    foci_ablated_near_chance: bool
    random_ablation_near_untouched: bool


@dataclass
class MethodRecord:
    """One method on one image: its deletion/insertion AUCs (probability scale) and foci scores (None without foci)."""

    deletion_auc: float | None = None
    insertion_auc: float | None = None
    foci_mass: float | None = None
    pointing_game: float | None = None


@dataclass
class ImageRecord:
    """One explained image's line in explain_metrics.json."""

    filename: str
    label: str | None  # the true class; None without one (and on sham images)
    predicted: str
    probability: float  # p(predicted class)
    has_mask: bool = False
    has_foci: bool = False
    warning: str = ""  # why the image is not what the model was trained on ("" for a BPS crop)
    branch: str | None = None  # sham only: the experimental branch folder, not a truth
    foci_note: str | None = None  # why the foci scores are missing, where they are
    methods: dict[str, MethodRecord] = field(default_factory=dict)


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class Skipped:
    count: int = 0
    items: list[SkippedFile] = field(default_factory=list)


#: The per-method keys of a version 0/1 per-image line, `<method>_<key>`, nested under `methods` since version 2.
_IMAGE_METHOD_KEYS = tuple(f.name for f in dataclasses.fields(MethodRecord))


def _upgrade_image_line_v1(line: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """`{"rollout_deletion_auc": ...}` -> `{"methods": {"rollout": {"deletion_auc": ...}}}`."""
    line = dict(line)
    nested: dict[str, dict[str, Any]] = {}
    for name in sorted(methods, key=len, reverse=True):  # "grad_rollout_..." before a method called "rollout_..."
        for key in _IMAGE_METHOD_KEYS:
            if f"{name}_{key}" in line:
                nested.setdefault(name, {})[key] = line.pop(f"{name}_{key}")
    return {**line, "methods": nested}


@dataclass
class ExplanationResults(_ResultsFile):
    """`explain_metrics.json`: what the explain step measured, on which images, and its verdicts, all typed."""

    KIND: ClassVar[str] = "explanation"
    FILENAME: ClassVar[str] = "explain_metrics.json"

    model: str | None = None
    split: str | None = None  # the split explained, or "images" for --images
    num_images: int | None = None
    labels: list[str] = field(default_factory=list)  # the model's classes, in id order
    labels_note: str | None = None  # sham: the class folders are branches, not truths
    settings: dict[str, Any] | None = None
    perturbation_space: str | None = None
    perturbation_check: PerturbationCheck | None = None
    causal_foci_test: CausalTest | None = None
    causal_foci_test_note: str | None = None
    methods: dict[str, MethodSummary] = field(default_factory=dict)
    #: methods asked for that cannot explain this model (rollout on Swin), with why and which methods can
    refused_methods: dict[str, str] = field(default_factory=dict)
    skipped: Skipped = field(default_factory=Skipped)
    per_image: list[ImageRecord] = field(default_factory=list)
    model_fingerprint: str | None = None
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Versions 0 and 1 kept each method's per-image numbers at the top of the line, and on the sham split
        wrote a note as `labels` with the class list as `classes`; version 0 kept each method's timing, which
        now lives in explain_timings.json."""
        if isinstance(data.get("methods"), dict):
            data["methods"] = {name: {k: v for k, v in summary.items() if k != "seconds_per_image"}
                               if isinstance(summary, dict) else summary for name, summary in data["methods"].items()}
        if isinstance(data.get("labels"), str):
            data["labels_note"], data["labels"] = data["labels"], data.pop("classes", [])
        methods = list(data.get("methods") or {})
        if isinstance(data.get("per_image"), list):
            data["per_image"] = [_upgrade_image_line_v1(line, methods) if isinstance(line, dict) else line
                                 for line in data["per_image"]]
        return data


# --------------------------------------------------------------------------- audit (plate-held-out cross-validation)


@dataclass
class PlateInterval:
    """An estimate with its 95% interval (a cluster bootstrap over plates, see `bps_vit/audit/scoring.py`)."""

    estimate: float | None
    low: float | None
    high: float | None

    def __str__(self) -> str:
        return f"{fmt(self.estimate, 3)} [{fmt(self.low, 3)}, {fmt(self.high, 3)}]"


@dataclass
class PlateScore:
    """Accuracy on one plate's held-out images."""

    plate: str
    condition: str
    label: str
    n: int
    accuracy: float | None


@dataclass
class AuditFold:
    """One fold of the audit: what it held out, trained and validated on, and what it scored."""

    strategy: str
    fold: int
    held_out_plates: list[str]
    num_held_out_groups: int  # plates, fields or images, by strategy
    n_train: int
    n_validation: int
    n_held_out: int
    accuracy: float | None = None  # on its held-out images
    sham_control: ShamControl | None = None
    best_metric: float | None = None
    epochs_run: float | None = None
    train_runtime_s: float | None = None
    model_fingerprint: str | None = None


@dataclass
class FoldRecord(_ResultsFile):
    """`folds/<strategy>-<k>/fold.json`: a finished fold (written last), and the data it was planned on."""

    KIND: ClassVar[str] = "audit_fold"
    FILENAME: ClassVar[str] = "fold.json"

    fold: AuditFold
    data_fingerprint: str | None = None  # of the fold's own data: the folder's manifest and the fold's manifest
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND


@dataclass
class StrategyResults:
    """One strategy's held-out accuracy over all its folds, per plate, and its controls."""

    strategy: str
    group: str  # what a fold holds out whole: plate, field or image
    num_folds: int
    n: int  # held-out images (every irradiated image once)
    accuracy: PlateInterval
    balanced_accuracy: PlateInterval
    per_plate: list[PlateScore] = field(default_factory=list)
    folds: list[AuditFold] = field(default_factory=list)
    sham_folds_flagged: int | None = None  # folds whose sham control is outside the chance band
    sham_balanced_accuracy_mean: float | None = None
    causal_foci_test: CausalTest | None = None  # explain's causal test on one fold's model ...
    causal_foci_test_fold: str | None = None  # ... this one


@dataclass
class Inflation:
    """A leaky strategy's accuracy minus the plate-held-out one, paired over the same images and plates."""

    strategy: str
    metric: str
    difference: PlateInterval
    detected: bool  # the whole interval is above 0
    verdict: str


@dataclass
class Reading:
    """One level of confound, the check that sees it, and what the check says here."""

    level: str
    check: str
    result: str


@dataclass
class AuditResults(_ResultsFile):
    """`audit.json`: plate-held-out cross-validation and the leak audit (`scripts/audit.py`)."""

    KIND: ClassVar[str] = "audit"
    FILENAME: ClassVar[str] = "audit.json"

    strategies: dict[str, StrategyResults] = field(default_factory=dict)
    inflation: list[Inflation] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    baseline: Baseline | None = None  # the majority label over the held-out images (balanced accuracy's is 0.5)
    data: DataSummary | None = None
    plates: dict[str, list[str]] = field(default_factory=dict)  # label -> irradiated plates
    data_fingerprint: str | None = None  # sha256 of the data folder's manifest.csv
    model: ModelSummary | None = None
    preprocessing: dict[str, Any] | None = None
    bootstrap: dict[str, Any] | None = None  # resamples, seed, level, what is resampled
    timing: dict[str, float] | None = None
    settings: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND


__all__ = [
    "SCHEMA_VERSION",
    "SchemaError",
    "Condition",
    "ConditionScore",
    "SplitMetrics",
    "ShamControl",
    "chance_band",
    "Baseline",
    "DataSummary",
    "ModelSummary",
    "TrainingSummary",
    "RunResults",
    "PredictionError",
    "PredictionResults",
    "ExplanationResults",
    "Interval",
    "Verdicts",
    "MethodSummary",
    "WholeImageCheck",
    "PerturbationCheck",
    "CausalCondition",
    "CausalTest",
    "MethodRecord",
    "ImageRecord",
    "SkippedFile",
    "Skipped",
    "fmt",
    "PlateInterval",
    "PlateScore",
    "AuditFold",
    "FoldRecord",
    "StrategyResults",
    "Inflation",
    "Reading",
    "AuditResults",
]
