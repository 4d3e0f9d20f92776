"""Hub access that never hangs: cached files first, the network only when it answers.

Without a connection, transformers and datasets retry for about 25 seconds before
failing with a generic message. Here a name is looked up in the local cache first;
the hub is asked only when HF_HUB_OFFLINE is unset and its host accepts a connection
within a couple of seconds, so an uncached name fails at once with a message that
says what to do.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from functools import lru_cache
from urllib.parse import urlparse

_PROBE_SECONDS = 2.0


def offline_by_setting() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "")).upper() in {"1", "ON", "YES", "TRUE"}


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the hub's host (HF_ENDPOINT or huggingface.co) accepts a TCP connection."""
    if offline_by_setting():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=_PROBE_SECONDS):
            return True
    except OSError:
        return False


def why_offline() -> str:
    if offline_by_setting():
        return "HF_HUB_OFFLINE is set"
    return "the Hugging Face hub cannot be reached"


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """datasets and huggingface_hub in offline mode (cache only) for the duration.

    Both read HF_HUB_OFFLINE once at import; their module constants are what they
    consult afterwards, so those are switched and restored.
    """
    import datasets.config
    import huggingface_hub.constants

    saved = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved
