"""Reading microscopy images and the one preprocessing function every step shares.

BPS images are 16-bit greyscale TIFFs whose background is a camera offset (~250-550), not 0,
and whose useful signal sits in a few hundred grey levels. Two common mistakes destroy it:
Pillow's `.convert("RGB")` on an `I;16` image saturates every pixel to 255, and dividing by
65535 squeezes the nucleus into the bottom 4% of the range. So images are decoded to their
native dtype (tifffile for TIFF), then stretched per image between two percentiles to [0, 1]
floats, then repeated to 3 channels for an RGB-pretrained ViT.

`Preprocessor` is the single source of that preprocessing: stretch, then a float resize and the
processor's normalisation. It takes size/mean/std from the model's image processor but does the
resize itself in float32, because transformers' Pillow-backed ViT processor quantises float
images to 8 bits when resizing (242 distinct levels left in the real 149x141 crop). Its stretch
is saved in the model's `preprocessor_config.json` under `bps_preprocessing`, so training,
explanation, prediction and a Hub user all see the same pixels.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args

import numpy as np
import tifffile
from PIL import Image

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = TIFF_SUFFIXES + (".png", ".jpg", ".jpeg", ".bmp")
PREPROCESSING_KEY = "bps_preprocessing"
_READ_WHOLE_FILE_BYTES = 64 * 2**20

ImageSource = Union[str, Path, bytes, np.ndarray, "PIL.Image.Image"]  # noqa: F821


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder` (IMAGE_SUFFIXES, any case), sorted: what every step takes as images."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_examples(folder: str | Path, labels: list[str], per_class: int = 2) -> list[str]:
    """A few example images: `per_class` from each class folder (data/bps/test/<label>), else the first ones of a
    flat folder (the app's examples, and those `publish --examples_from` copies beside the model)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    class_dirs = [folder / label for label in labels if (folder / label).is_dir()]
    if class_dirs:
        return [str(path) for d in class_dirs for path in images_in(d)[:per_class]]
    return [str(path) for path in images_in(folder)[: per_class * max(1, len(labels))]]


class ImageReadError(ValueError):
    """An image that cannot be used; the message names the file and what to do."""


def _decode_tiff(data: bytes | str | Path) -> np.ndarray:
    handle = io.BytesIO(data) if isinstance(data, bytes) else data
    with tifffile.TiffFile(handle) as tif:
        return tif.pages[0].asarray()


def _decode_pil(data: bytes | str | Path) -> np.ndarray:
    handle = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(handle) as image:
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        return np.asarray(image)  # I;16 -> uint16, L -> uint8, RGB(A) -> HxWxC uint8; no conversion


#: An image's first bytes -> its format: the one list behind reading (tifffile vs Pillow), the prepare step's
#: image checks and the app's upload checks.
IMAGE_MAGIC = (
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"),
)


def sniff_format(head: bytes) -> str | None:
    """The format named by a file's first bytes (at least 8 for PNG), or None for none we know."""
    for magic, name in IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    return None


def is_tiff(head: bytes) -> bool:
    """TIFF or BigTIFF, either byte order: decoded by tifffile (Pillow would saturate 16-bit pixels)."""
    return sniff_format(head) in ("TIFF", "BigTIFF")


def read_image(source: ImageSource, name: str | None = None) -> np.ndarray:
    """Decode an image to a numpy array in its native dtype (HxW or HxWxC), without rescaling.

    `source` is a path, raw bytes (with `name` for messages), a numpy array or a PIL image.
    TIFFs go through tifffile (exact 16-bit, Deflate/LZW); other formats through Pillow.
    """
    if isinstance(source, np.ndarray):
        array = source
    elif hasattr(source, "mode") and hasattr(source, "size") and not isinstance(source, (str, Path, bytes)):
        array = np.asarray(source)
    else:
        label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
        if not isinstance(source, bytes):
            path = Path(source)
            if not path.is_file():
                raise ImageReadError(f"{label}: no such file.")
            size = path.stat().st_size
            if size <= _READ_WHOLE_FILE_BYTES:  # one read, then decode from memory (BPS crops are ~100 kB)
                source = path.read_bytes()
        if isinstance(source, bytes) and len(source) == 0:
            raise ImageReadError(f"{label}: the file is empty (0 bytes); delete it and fetch it again.")
        if isinstance(source, bytes):
            head = source[:4]
        else:  # a file too large to read whole: decoded from its path
            with Path(source).open("rb") as handle:
                head = handle.read(4)
        try:
            array = _decode_tiff(source) if is_tiff(head) else _decode_pil(source)
        except Exception as err:  # tifffile/PIL raise many types; the user needs one message
            raise ImageReadError(
                f"{label}: cannot decode as an image ({type(err).__name__}: {err}). "
                "The file is corrupt or not an image; delete it and fetch it again."
            ) from err
    if array.ndim not in (2, 3) or array.size == 0 or min(array.shape[:2]) < 2:
        raise ImageReadError(f"{name or 'image'}: unexpected image shape {array.shape}; expected HxW or HxWxC.")
    return array


def to_grayscale(array: np.ndarray) -> np.ndarray:
    """HxW float32 from HxW, HxWx1, RGB or RGBA. Fluorescence is one channel: colour is averaged."""
    array = np.asarray(array)
    if array.ndim == 3:
        if array.shape[2] == 4:  # drop alpha
            array = array[..., :3]
        if array.shape[2] == 1:
            array = array[..., 0]
        else:
            array = array.astype(np.float32).mean(axis=2)
    return array.astype(np.float32, copy=False)


def _is_integer_gray(image: np.ndarray) -> bool:
    return image.ndim == 2 and image.dtype in (np.uint8, np.uint16)


def integer_percentiles(image: np.ndarray, percentiles) -> list[float]:
    """`np.percentile(image, percentiles)` (linear interpolation) for uint8/uint16 images, from a histogram.

    Why: the percentile stretch runs on every image decoded for training and prediction, and
    `np.percentile` sorts a float copy of every pixel; a histogram of the raw grey levels gives the
    same order statistics without the sort (tests check the equality; BENCHMARKS.md has the time saved).
    """
    return percentiles_of_histogram(np.bincount(image.reshape(-1)), percentiles)


#: what follows the stretch; the Literal type gives `--intensity_transfer` its argparse choices
Transfer = Literal["linear", "asinh", "log", "sqrt"]
TRANSFERS: tuple[str, ...] = get_args(Transfer)


@dataclass(frozen=True)
class Stretch:
    """Per-image percentile stretch to [0, 1], or a fixed clip in raw grey levels when `clip` is set,
    followed by an optional compressive transfer.

    The default p1-p99.8 keeps the camera-offset background near 0 and the brightest foci
    near 1 whatever the exposure. But the per-image upper bound is set by the brightest foci, so
    it rescales the whole nucleus by the foci's brightness and writes the class into the image's
    large-scale brightness, where a blur cannot remove it. A fixed clip (from training-set
    percentiles: `dataset_clip`) keeps the signal local: a pixel's value depends on that pixel
    only. `transfer` then lifts dim structures (X-ray foci sit low in a clip wide enough for
    bright Fe foci): "asinh"/"log" map x to asinh(g x)/asinh(g) or log1p(g x)/log1p(g) with gain
    g = `transfer_gain`; "sqrt" to sqrt(x); all monotone, 0 -> 0 and 1 -> 1.
    """

    low_percentile: float = 1.0
    high_percentile: float = 99.8
    clip: tuple[float, float] | None = None
    transfer: str = "linear"
    transfer_gain: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100; got {self.low_percentile}, {self.high_percentile}"
            )
        if self.clip is not None:
            low, high = self.clip
            if not high > low:
                raise ValueError(f"clip must be (low, high) with high > low; got {self.clip}")
            object.__setattr__(self, "clip", (float(low), float(high)))
        if self.transfer not in TRANSFERS:
            raise ValueError(f"intensity transfer must be one of {TRANSFERS}; got {self.transfer!r}")
        if not self.transfer_gain > 0:
            raise ValueError(f"transfer gain must be > 0; got {self.transfer_gain}")

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        """(low, high) grey levels: the clip, or the image's percentiles (numpy's linear definition)."""
        if self.clip is not None:
            return self.clip
        if _is_integer_gray(image):
            low, high = integer_percentiles(image, (self.low_percentile, self.high_percentile))
        else:
            low, high = np.percentile(to_grayscale(image), [self.low_percentile, self.high_percentile])
        return float(low), float(high)

    def apply_transfer(self, unit: np.ndarray) -> np.ndarray:
        """The compressive transfer on values already in [0, 1] (in place where possible)."""
        if self.transfer == "linear":
            return unit
        if self.transfer == "sqrt":
            return np.sqrt(unit, out=unit)
        gain = np.float32(self.transfer_gain)
        if self.transfer == "asinh":
            return np.arcsinh(unit * gain, out=unit) * np.float32(1.0 / np.arcsinh(gain))
        return np.log1p(unit * gain, out=unit) * np.float32(1.0 / np.log1p(gain))

    def raw_level(self, value: float, bounds: tuple[float, float]) -> float:
        """The raw grey level that this stretch maps to `value` in [0, 1] (colour-bar labels)."""
        gain = self.transfer_gain
        unit = {
            "linear": lambda v: v,
            "sqrt": lambda v: v * v,
            "asinh": lambda v: np.sinh(v * np.arcsinh(gain)) / gain,
            "log": lambda v: np.expm1(v * np.log1p(gain)) / gain,
        }[self.transfer](float(value))
        low, high = bounds
        return float(low + unit * (high - low))

    def __call__(self, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)
        gray = to_grayscale(array)
        low, high = self.bounds(array if _is_integer_gray(array) else gray)  # raw levels feed the histogram
        if high <= low:  # a flat image carries no signal; map it to 0 rather than divide by zero
            return np.zeros_like(gray, dtype=np.float32)
        out = (gray - low) * np.float32(1.0 / (high - low))
        return self.apply_transfer(np.clip(out, 0.0, 1.0, out=out)).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["clip"] = list(self.clip) if self.clip is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Stretch":
        if not data:
            return cls()
        clip = data.get("clip")
        return cls(
            low_percentile=float(data.get("low_percentile", 1.0)),
            high_percentile=float(data.get("high_percentile", 99.8)),
            clip=tuple(clip) if clip is not None else None,
            transfer=str(data.get("transfer", "linear")),
            transfer_gain=float(data.get("transfer_gain", 10.0)),
        )

    @classmethod
    def from_processor(cls, processor: Any) -> "Stretch":
        """The stretch a saved model was trained with (default if the processor predates it)."""
        return cls.from_dict(getattr(processor, PREPROCESSING_KEY, None))

    def attach_to(self, processor: Any) -> Any:
        """Store this stretch on an image processor so `save_pretrained` writes it with the model."""
        setattr(processor, PREPROCESSING_KEY, self.to_dict())
        return processor


def grey_level_histogram(image: np.ndarray) -> np.ndarray:
    """Counts per integer grey level 0..65535 (floats and colour images are made grey and rounded)."""
    gray = image if _is_integer_gray(image) else np.clip(np.rint(to_grayscale(image)), 0, 65535).astype(np.uint16)
    return np.bincount(gray.reshape(-1), minlength=65536)[:65536].astype(np.int64)


def percentiles_of_histogram(counts: np.ndarray, percentiles) -> list[float]:
    """`np.percentile` (linear interpolation) of the values a grey-level histogram counts."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    if n == 0:
        raise ValueError("no pixels to take percentiles of")
    values = []
    for q in percentiles:
        position = q / 100.0 * (n - 1)
        below = int(np.floor(position))
        lower, upper = np.searchsorted(cumulative, [below, min(below + 1, n - 1)], side="right")
        values.append(float(lower) + (float(upper) - float(lower)) * (position - below))
    return values


def dataset_clip(
    sources, low_percentile: float = 1.0, high_percentile: float = 99.8, max_images: int | None = 2000, seed: int = 0
) -> tuple[float, float]:
    """Fixed clip bounds from the pooled grey levels of a set of (training) images.

    Pools every pixel of up to `max_images` images (a seeded choice from the list as given) into
    one integer histogram and takes its percentiles. Integer counts sum exactly, so the result
    depends only on the list, the percentiles and the seed: every process of a multi-process run
    computes the same bounds.
    """
    sources = list(sources)
    if not sources:
        raise ValueError("dataset_clip needs at least one image")
    if max_images is not None and len(sources) > max_images:
        picks = np.sort(np.random.default_rng(seed).choice(len(sources), size=max_images, replace=False))
        sources = [sources[i] for i in picks]
    counts = np.zeros(65536, dtype=np.int64)
    for source in sources:
        counts += grey_level_histogram(read_image(source))
    low, high = percentiles_of_histogram(counts, (low_percentile, high_percentile))
    if not high > low:
        raise ValueError(f"the images' p{low_percentile} and p{high_percentile} are equal ({low}); cannot clip")
    return low, high


def prepare_image(source: ImageSource, stretch: Stretch | None = None, name: str | None = None) -> np.ndarray:
    """Decode -> greyscale float -> stretch to [0, 1] -> HxWx3 float32 at the ORIGINAL resolution.

    For model input use `Preprocessor` (it also resizes in float and normalises).
    """
    gray = (stretch or Stretch())(read_image(source, name=name))
    return np.repeat(gray[:, :, None], 3, axis=2)


def resize_gray(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float32 bilinear resize with antialiasing (no 8-bit round trip)."""
    import torch  # deferred: torch takes seconds; prepare and the app's upload checks read images without it
    import torch.nn.functional as F  # deferred: as above

    tensor = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))[None, None]
    if tensor.shape[-2:] == (height, width):
        return tensor[0, 0].numpy()
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized[0, 0].clamp_(0.0, 1.0).numpy()


@dataclass(frozen=True)
class Preprocessor:
    """From any image to the model's `pixel_values`: stretch -> float resize -> 3 channels -> normalise.

    Built from a saved model's image processor (`from_processor`), so the parameters travel
    with the model. `gray` stops before normalisation: that is what the training cache stores
    and what SHAP perturbs.
    """

    stretch: Stretch
    height: int
    width: int
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    do_normalize: bool = True

    @classmethod
    def from_processor(cls, processor: Any, stretch: Stretch | None = None) -> "Preprocessor":
        size = getattr(processor, "size", None) or {"height": 224, "width": 224}
        if "height" in size:
            height, width = int(size["height"]), int(size["width"])
        else:
            height = width = int(size.get("shortest_edge", 224))
        mean = getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)
        std = getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)
        mean = tuple(float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * 3))
        std = tuple(float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3))
        return cls(
            stretch=stretch or Stretch.from_processor(processor),
            height=height,
            width=width,
            image_mean=mean,
            image_std=std,
            do_normalize=bool(getattr(processor, "do_normalize", True)),
        )

    def gray(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """HxW float32 in [0, 1] at the model's resolution."""
        return resize_gray(self.stretch(read_image(source, name=name)), self.height, self.width)

    def hwc(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """HxWx3 float32 in [0, 1] at the model's resolution (what SHAP's image maskers perturb)."""
        return np.repeat(self.gray(source, name=name)[:, :, None], 3, axis=2)

    def normalize(self, images: np.ndarray):
        """[B,H,W] or [B,H,W,3] floats in [0, 1] -> torch [B,3,H,W] normalised pixel values."""
        import torch  # deferred: torch takes seconds; prepare and the app's upload checks read images without it

        batch = torch.as_tensor(np.asarray(images, dtype=np.float32))
        batch = batch[:, None] if batch.ndim == 3 else batch.permute(0, 3, 1, 2)  # [B,1 or 3,H,W]
        if not self.do_normalize:
            return batch.expand(-1, 3, -1, -1).contiguous()
        # (x - mean) / std as one broadcast multiply-add that also repeats a grey channel to 3: the
        # training loop runs this on every batch, and one pass over the output is ~3x cheaper than three
        scale = 1.0 / torch.tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        shift = -torch.tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1) * scale
        return torch.addcmul(shift, batch, scale)

    def __call__(self, sources: list[ImageSource]):
        """A batch of images -> torch [B,3,H,W] `pixel_values`."""
        return self.normalize(np.stack([self.gray(source) for source in sources]))


def display_image(source: ImageSource, stretch: Stretch | None = None) -> np.ndarray:
    """HxW float in [0, 1] for plotting, with exactly the stretch the model sees."""
    return (stretch or Stretch())(read_image(source))
