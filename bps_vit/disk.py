"""Disk space: will what is about to be written fit, and are two folders on the same device.

Fetching 77k images, generating synthetic ones and copying a split can each fill a disk halfway
through; checking first turns that into one message naming the folder, the need and the fix.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


class InsufficientSpaceError(RuntimeError):
    """Not enough free disk space for what is about to be written."""


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024.0
    return f"{count:.1f} TB"


def existing_ancestor(path: str | Path) -> Path:
    """The folder itself, or its nearest parent that exists (where a new folder's space comes from)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def same_device(paths: set[Path] | list[Path], target: str | Path) -> bool:
    """Whether every path lives on the device `target` would be created on (so hard links can work)."""
    return {existing_ancestor(p).stat().st_dev for p in paths} == {existing_ancestor(target).stat().st_dev}


def check_free_space(folder: str | Path, needed_bytes: int, *, what: str = "this fetch") -> int:
    """Raise `InsufficientSpaceError` (naming the folder, the need and the fix) unless it fits; return free bytes."""
    probe = existing_ancestor(folder)
    free = shutil.disk_usage(probe).free
    if needed_bytes > free:
        raise InsufficientSpaceError(
            f"Not enough free disk space in {Path(folder)} (checked at {probe}): {what} needs about "
            f"{format_bytes(needed_bytes)} but only {format_bytes(free)} is free. Free some space, point "
            "--raw_dir/--output_dir at a larger disk, or select fewer images (--max_per_condition, "
            "--particles, --doses, --hours)."
        )
    return free


def current_umask() -> int:
    """The process's umask, read from /proc on Linux (setting it to read it back would race with other threads)."""
    try:
        found = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_like_other_outputs(path: str | Path) -> None:
    """Give a file the mode every other new file gets, 0666 less the umask (0644 under the usual 022).

    safetensors' `save_file` (0.8) writes its file with mode 0600 whatever the umask, so `model.safetensors` was the one
    file of a run folder, its checkpoints and hub_export/ that colleagues on a shared server could not read."""
    os.chmod(path, 0o666 & ~current_umask())
