"""Build or load an image classifier (ViT, DeiT, BEiT, DINOv2, Swin: see `backbones`) with the BPS labels, safely
and with the right attention kernel; and the loaded classifier every inference step takes (`InferenceModel`).

Two facts shape this module. Training wants sdpa attention (fast), explanation needs eager
attention: with sdpa, transformers returns an *empty tuple* for `output_attentions=True`, and
`attn_implementation` is not saved in config.json, so every loader states which it wants.
And a model id is untrusted: weights load from safetensors only, remote code never runs, and
an id that cannot be reached fails in seconds with a message on how to use a local folder.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import constants, try_to_load_from_cache
from safetensors import SafetensorError

from .backbones import (
    UnsupportedArchitectureError,
    image_classification_class,
    supported_architecture,
    supported_list,
)
from .bps import LABELS
from .hf_env import hub_offline
from .imaging import Preprocessor, Stretch

DEFAULT_BASE_MODEL = "google/vit-base-patch16-224-in21k"
#: Weight files that are pickles (loading one can run code): never loaded, never exported.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says why and how to fix it."""


def label_maps(labels: tuple[str, ...] = LABELS) -> tuple[dict[int, str], dict[str, int]]:
    id2label = {i: name for i, name in enumerate(labels)}
    return id2label, {name: i for i, name in id2label.items()}


def labels_of(config: Any) -> list[str]:
    """Class names in id order from a model config (object or config.json dict; ids may be int or str keys)."""
    id2label = config.get("id2label") if isinstance(config, dict) else getattr(config, "id2label", None)
    if not isinstance(id2label, dict) or not id2label:
        raise ModelLoadError("the model config has no id2label; it is not a classifier saved by bps-vit.")
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def weight_files(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(safetensors weights and shard indexes, pickle weight files) directly in a saved model folder."""
    folder = Path(folder)
    safe = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.safetensors.index.json"))
    pickles = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    return safe, pickles


def _hub_reachable(timeout: float = 4.0) -> bool:
    import requests  # deferred: only an uncached Hub id is probed over the network

    try:
        requests.head(constants.ENDPOINT, timeout=timeout)
        return True
    except requests.RequestException:
        return False


def _missing_folder_message(name_or_path: str, flag: str) -> str | None:
    """`outputs/demoo` is a typo of a folder, not a Hub id, when its parent folder exists here."""
    path = Path(name_or_path).expanduser()
    parent = path.parent
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or (
        str(parent) not in ("", ".") and parent.is_dir()
    ):
        siblings = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
        close = difflib.get_close_matches(path.name, siblings, n=3)
        hint = f" Did you mean {', '.join(str(parent / c) for c in close)}?" if close else ""
        return f"{flag} {name_or_path}: no such model folder (looked at {path.resolve()}).{hint}"
    return None


def ensure_resolvable(name_or_path: str, flag: str = "--model_name_or_path") -> None:
    """Fail fast (seconds, not minutes of retries) when a Hub id cannot be reached.

    A local folder must hold config.json and safetensors weights; a Hub id is tried in the
    local cache first, then the Hub is probed once with a short timeout. Messages name `flag`,
    the option of the script that failed (`--model` for predict/explain/app, `--model_name_or_path` for train).
    """
    name_or_path = str(name_or_path)
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: no config.json; this is not a saved model folder.")
        safe, pickles = weight_files(path)
        if not safe:
            names = [p.name for p in pickles]
            hint = f" Found only pickle weights {names}, which are refused (they can run code)." if names else ""
            raise ModelLoadError(
                f"{path}: no *.safetensors weights.{hint} "
                "Re-save the model with save_pretrained(safe_serialization=True)."
            )
        return
    missing = _missing_folder_message(name_or_path, flag)
    if missing:
        raise ModelLoadError(missing)

    cached = try_to_load_from_cache(name_or_path, "config.json")
    if isinstance(cached, str):
        return
    offline = hub_offline()
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
        if flag == "--model_name_or_path":
            advice = ("Pass a local folder instead (--model_name_or_path path/to/model, a folder written by "
                      "save_pretrained or `hf download`), or train from scratch with --config_name "
                      "(e.g. configs/model/vit_tiny.json).")
        else:
            advice = (f"Pass a local folder instead ({flag} outputs/demo, a folder written by scripts/train.py or "
                      "`hf download`), or connect to the Hub.")
        raise ModelLoadError(f"{flag} {name_or_path}: {why} and it is not in the local cache. {advice}")


def hub_id_of(name_or_path: str | os.PathLike) -> str | None:
    """The Hub id a checkpoint is loaded by, or None for a local folder (`from_pretrained` reads a folder first)."""
    return None if Path(name_or_path).is_dir() else str(name_or_path)


def _attn_kwargs(attn_implementation: str | None) -> dict[str, Any]:
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def read_model_config(config_name: str | os.PathLike | dict) -> dict:
    """A model config (file, folder with config.json, or dict) whose `model_type` is a supported architecture; an
    unsupported or missing one is refused by name, before any data or weights are touched."""
    where = "--config_name " + ("<dict>" if isinstance(config_name, dict) else str(config_name))
    if isinstance(config_name, dict):
        config_dict = dict(config_name)
    else:
        path = Path(config_name)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise ModelLoadError(f"{where}: no such config file.")
        try:
            config_dict = json.loads(path.read_text())
        except ValueError as err:
            raise ModelLoadError(f"{where}: not a JSON config ({err}).") from None
    try:
        supported_architecture(config_dict.get("model_type"), where)
    except UnsupportedArchitectureError as err:
        raise ModelLoadError(str(err)) from None
    return config_dict


def build_model_from_config(
    config_name: str | os.PathLike | dict,
    labels: tuple[str, ...] = LABELS,
    attn_implementation: str | None = "sdpa",
    image_size: int | None = None,
):
    """A randomly initialised classifier of the config's architecture (its `model_type`, one of
    `backbones.ARCHITECTURES`), from a config file or dict (the tiny configs for demo and tests).

    The class is the one `AutoModelForImageClassification` maps the type to (`backbones.image_classification_class`;
    DeiT's distillation head when the config's `architectures` names it). `image_size` overrides the config's (the
    position embeddings are sized from it). An unsupported `model_type` is refused, naming the supported ones.
    """
    from transformers import AutoConfig  # deferred: transformers takes seconds to load

    config_dict = read_model_config(config_name)
    model_type = config_dict.pop("model_type")
    id2label, label2id = label_maps(labels)
    config_dict.update(id2label=id2label, label2id=label2id, num_labels=len(labels))
    if image_size is not None:
        config_dict["image_size"] = int(image_size)
    config = AutoConfig.for_model(model_type, **config_dict)
    return image_classification_class(config)._from_config(config, **_attn_kwargs(attn_implementation))


def check_architecture(name_or_path: str | os.PathLike, flag: str = "--model_name_or_path") -> str:
    """The `model_type` of a checkpoint's config, read before any weights; unsupported ones are refused by name."""
    from transformers import AutoConfig  # deferred: as above

    try:
        config = AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=False)
    except (OSError, ValueError) as err:  # an unknown model_type is a ValueError of AutoConfig
        raise ModelLoadError(f"{flag} {name_or_path}: cannot read its config.json ({err}). Supported "
                             f"architectures: {supported_list()}.") from None
    try:
        return supported_architecture(getattr(config, "model_type", None), f"{flag} {name_or_path}").model_type
    except UnsupportedArchitectureError as err:
        raise ModelLoadError(str(err)) from None


def load_classifier(
    name_or_path: str | os.PathLike,
    labels: tuple[str, ...] | None = LABELS,
    attn_implementation: str | None = "sdpa",
    flag: str = "--model_name_or_path",
    **kwargs: Any,
):
    """Load an image classifier of a supported architecture (`backbones.ARCHITECTURES`) from the Hub or a folder;
    safetensors only, no remote code; the architecture is checked from config.json before any weights load.

    With `labels`, the head is (re)built for those labels (`ignore_mismatched_sizes` when the
    checkpoint has another head, e.g. the 21k-class in21k base). With `labels=None` the
    checkpoint's own labels are kept (loading a fine-tuned BPS model).
    """
    from transformers import AutoModelForImageClassification  # deferred: as above

    ensure_resolvable(str(name_or_path), flag)
    check_architecture(name_or_path, flag)
    label_kwargs: dict[str, Any] = {}
    if labels is not None:
        id2label, label2id = label_maps(labels)
        label_kwargs = dict(
            num_labels=len(labels), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
        )
    try:
        return AutoModelForImageClassification.from_pretrained(
            str(name_or_path),
            use_safetensors=True,
            trust_remote_code=False,
            **label_kwargs,
            **_attn_kwargs(attn_implementation),
            **kwargs,
        )
    except (OSError, ValueError, SafetensorError) as err:  # a corrupt weights file too: one error line
        raise ModelLoadError(f"Cannot load {name_or_path!r}: {err}") from err


def _processor_backend() -> str:
    """The image-processor backend to name: "torchvision" when it is installed, else "pil".

    Naming it spares transformers' torchvision-fallback warning on every run. Only a processor's
    size, mean and std are used (pixels are made by `imaging.Preprocessor`), so the two are equivalent.
    """
    return "torchvision" if importlib.util.find_spec("torchvision") else "pil"


def vit_processor_class():
    """ViT's image processor class for `_processor_backend()`."""
    import transformers  # deferred: as above

    if _processor_backend() == "torchvision":
        return transformers.ViTImageProcessor
    return transformers.ViTImageProcessorPil


def _input_side(processor: Any) -> int | None:
    """The side of the square the processor feeds its model: the crop when it centre-crops (DeiT, DINOv2's Bit
    processor resize to 256 and crop 224), else its size."""
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = dict(crop or getattr(processor, "size", None) or {})
    side = size.get("height") or size.get("shortest_edge")
    return int(side) if side else None


def load_processor(name_or_path: str | os.PathLike, image_size: int | None = None):
    """The model's image processor, set to resize to the square its model takes (`image_size`, else the processor's
    crop or size) without a centre crop: BPS crops are whole nuclei, and bps-vit's pixels (`imaging.Preprocessor`)
    resize the whole crop, so the saved processor says what the model was fed. Falls back to a ViT processor when a
    folder has none."""
    from transformers import AutoImageProcessor  # deferred: as above

    try:
        processor = AutoImageProcessor.from_pretrained(
            str(name_or_path), trust_remote_code=False, backend=_processor_backend(),
        )
    except (OSError, ValueError):
        processor = vit_processor_class()()
    side = image_size or _input_side(processor)
    if side is not None:
        processor.size = {"height": int(side), "width": int(side)}
    if getattr(processor, "do_center_crop", False):
        processor.do_center_crop = False
        processor.crop_size = {"height": int(side), "width": int(side)} if side else processor.crop_size
    return processor


INFERENCE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_inference_dtype(name: str = "auto"):
    """`auto`: bf16 on a GPU that supports it (as training uses), fp32 on the CPU, where bf16 matmuls are slower."""
    import torch  # deferred: torch takes seconds; scripts check their flags (and --dtype) before loading it

    if name not in INFERENCE_DTYPES:
        raise ValueError(f"--dtype {name!r}: choose one of {', '.join(INFERENCE_DTYPES)}.")
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def _cast_pixel_values(module, args, kwargs):
    """Forward pre-hook: float inputs take the model's dtype, so every caller (predict, each explainer,
    SHAP's masker, the faithfulness curves) can keep building fp32 pixels."""
    dtype = module.dtype
    if "pixel_values" in kwargs and kwargs["pixel_values"].is_floating_point():
        kwargs["pixel_values"] = kwargs["pixel_values"].to(dtype)
    elif args and args[0].is_floating_point():
        args = (args[0].to(dtype), *args[1:])
    return args, kwargs


@dataclass
class InferenceModel:
    """A fine-tuned classifier ready to predict and explain: the model, its image processor, the one pixel path
    (`imaging.Preprocessor`: the stretch saved beside the model, a float resize, the processor's mean and std) and
    its class names. predict, explain and the app all take this one object."""

    model: Any  # a torch.nn.Module classifier
    processor: Any  # its transformers image processor (size, mean, std)
    preprocessor: Preprocessor
    labels: list[str]  # class names in id order

    @classmethod
    def of(cls, model: Any, processor: Any, stretch: Stretch | None = None) -> InferenceModel:
        """From a model and processor loaded some other way (transformers directly): the stretch is the one saved in
        the processor's config, else the default."""
        stretch = stretch or Stretch.from_processor(processor)
        return cls(model, processor, Preprocessor.from_processor(processor, stretch), labels_of(model.config))

    @property
    def stretch(self) -> Stretch:
        return self.preprocessor.stretch

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}


def load_for_inference(name_or_path: str | os.PathLike, attn_implementation: str = "eager",
                       dtype: str = "auto") -> InferenceModel:
    """A fine-tuned BPS model ready to predict and explain, in eval mode, in `dtype` (see `resolve_inference_dtype`).

    Eager attention by default, so attention maps are available for explanations. In bf16/fp16 the
    forward runs in that precision; the explainers compute their attention and gradient products in fp32.
    """
    torch_dtype = resolve_inference_dtype(dtype)
    model = load_classifier(name_or_path, labels=None, attn_implementation=attn_implementation, flag="--model")
    model.eval()
    model.to(torch_dtype)
    model.register_forward_pre_hook(_cast_pixel_values, with_kwargs=True)
    return InferenceModel.of(model, load_processor(name_or_path))
