"""The offline, quiet environment every test and benchmark runs in, set before any Hugging Face import.

A Hub call in a test would burn ~20 s of retries; a progress bar in a timed region costs time. Values already in the
environment win (setdefault), so `HF_HUB_OFFLINE=0 pytest ...` still reaches the Hub on purpose.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "TOKENIZERS_PARALLELISM": "false",
}


def use_offline_environment(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Put OFFLINE into `environ` (default: this process's os.environ) where unset; returns it (for subprocesses'
    `env=`)."""
    environ = os.environ if environ is None else environ
    for key, value in OFFLINE.items():
        environ.setdefault(key, value)
    return environ
