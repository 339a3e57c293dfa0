"""Which images the explain step looks at: a prepared split or the user's files, then a seeded, balanced choice.

Reproducible by construction: the lists are sorted before the seeded generator picks from them,
so the same arguments choose the same images on any machine and any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bps import read_meta_csv
from ..imaging import IMAGE_SUFFIXES, images_in
from ..manifest import SHAM_SPLIT


@dataclass(frozen=True)
class ImageItem:
    path: str
    label: str | None
    mask_path: str | None
    branch: str | None = None  # sham only: the experimental branch folder (Fe or X-ray), not a truth

    @property
    def group(self) -> str:
        return self.label or self.branch or ""

    @property
    def filename(self) -> str:
        return Path(self.path).name


def _mask_for(image: Path, mask_dirs: list[Path]) -> str | None:
    for folder in mask_dirs:
        candidate = folder / image.name
        if candidate.is_file():
            return str(candidate)
    return None


def _labels_from_meta(folder: Path) -> dict[str, str]:
    meta = folder / "meta.csv"
    if not meta.is_file():
        return {}

    return {row.filename: row.particle_type for row in read_meta_csv(meta).rows}


def items_from_split(data_dir: Path, split: str, labels: list[str]) -> list[ImageItem]:
    """Every image of `data_dir/split/<label>/`, with its mask from `data_dir/masks/` when present.

    On the sham split the class folder is the experimental branch of an unirradiated (0 Gy) nucleus,
    so it is kept as `branch` and the image has no label: nothing is scored against it."""
    split_dir = data_dir / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"--data_dir {data_dir} has no {split}/ folder. Prepare the data first (scripts/prepare_data.py) "
            "or pass --images with TIFF files or folders."
        )
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
    unknown = [p.name for p in class_dirs if p.name not in labels]
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown} are not labels of the model ({labels}).")
    mask_dirs = [data_dir / "masks"]
    sham = split == SHAM_SPLIT
    items = [
        ImageItem(str(path), None if sham else class_dir.name, _mask_for(path, mask_dirs),
                  class_dir.name if sham else None)
        for class_dir in class_dirs
        for path in images_in(class_dir)
    ]
    if not items:
        raise FileNotFoundError(f"{split_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders.")
    return items


def items_from_paths(inputs: list[str], labels: list[str]) -> list[ImageItem]:
    """Image files and folders of images (not recursive; the suffixes predict takes), deduplicated and sorted."""
    paths: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = images_in(path)
            if not found:
                raise FileNotFoundError(f"--images {path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}).")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"--images {path}: no such file or folder.")
    unique: dict[Path, Path] = {}
    for path in paths:  # dedupe by real location, but report paths as the user wrote them
        unique.setdefault(path.resolve(), path)
    items = []
    meta_cache: dict[Path, dict[str, str]] = {}
    for path in sorted(unique.values(), key=lambda p: (str(p.parent), p.name)):
        folder = path.parent
        if folder not in meta_cache:
            meta_cache[folder] = _labels_from_meta(folder)
        label = folder.name if folder.name in labels else meta_cache[folder].get(path.name)
        items.append(ImageItem(str(path), label if label in labels else None, _mask_for(path, [folder / "masks"])))
    return items


def choose_images(items: list[ImageItem], num_images: int, seed: int) -> list[ImageItem]:
    """A seeded, class-balanced choice, interleaved by class (Fe, X-ray, Fe, ...) so every figure set shows both."""
    groups: dict[str, list[ImageItem]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    if 0 < num_images < len(items):
        rng = np.random.default_rng(seed)
        quota = balanced_quota({name: len(members) for name, members in groups.items()}, num_images)
        for name in sorted(groups):
            picks = rng.choice(len(groups[name]), size=quota[name], replace=False) if quota[name] else []
            groups[name] = [groups[name][i] for i in sorted(picks)]
    return interleave([groups[name] for name in sorted(groups)])


def balanced_quota(sizes: dict[str, int], total: int) -> dict[str, int]:
    """How many to take from each class: one at a time in turn (sorted names), skipping classes that run out."""
    quota = {name: 0 for name in sizes}
    remaining = total
    while remaining > 0:
        progressed = False
        for name in sorted(sizes):
            if remaining and quota[name] < sizes[name]:
                quota[name] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            break
    return quota


def interleave(lists: list[list[ImageItem]]) -> list[ImageItem]:
    """[a1, a2], [b1] -> [a1, b1, a2]: the first images of a run show every class."""
    ordered: list[ImageItem] = []
    for position in range(max((len(group) for group in lists), default=0)):
        ordered += [group[position] for group in lists if position < len(group)]
    return ordered
