"""The Hugging Face environment as this process sees it now (offline mode), for every step that may reach the Hub."""

from __future__ import annotations

import os

from huggingface_hub.constants import _is_true


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is on, parsed by huggingface_hub's own rule (1/ON/YES/TRUE, any case).

    Read now, not from `huggingface_hub.constants.HF_HUB_OFFLINE`, which is fixed when the library is
    imported: a value set later in the process (a test's monkeypatch) counts too.
    """
    return _is_true(os.environ.get("HF_HUB_OFFLINE"))
