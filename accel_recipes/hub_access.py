"""Is the Hugging Face Hub reachable? Answered in seconds, so an offline machine fails fast with a clear message
instead of after minutes of the client's retries. Used by data loading, model building, push and predict."""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

HUB_PROBE_SECONDS = 3.0
_TRUE = {"1", "true", "yes", "on"}


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """Offline mode, read now (huggingface_hub and datasets read the variables only when they are imported)."""
    return offline_variable() is not None


def offline_variable() -> str | None:
    """The environment variable that turns offline mode on, for messages to name the one actually set."""
    import datasets
    from huggingface_hub import constants

    for flag in OFFLINE_VARIABLES:
        if os.environ.get(flag, "").strip().lower() in _TRUE:
            return flag
    if constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE:  # read at import, since unset again
        return "HF_HUB_OFFLINE"
    return None


def offline_reason() -> str:
    return f"{offline_variable() or 'HF_HUB_OFFLINE'} is set"


def hub_unreachable_reason(url: str | None = None, timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why ``url`` (default: the Hub endpoint) cannot be reached, found within ``timeout``; None if it can be."""
    from huggingface_hub import constants

    if hub_offline():
        return offline_reason()
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct connection says nothing; the request itself will tell
    parsed = urlparse(url or constants.ENDPOINT)
    host = parsed.hostname or ""
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    errors: list[str | None] = []

    def probe() -> None:  # in a thread: the socket timeout does not bound the DNS lookup
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            errors.append(None)
        except OSError as error:
            errors.append(f"no network connection to {host}:{port}: {error}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return errors[0] if errors else f"no answer from {host}:{port} within {timeout:.0f} s"


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    return hub_unreachable_reason(timeout=timeout) is None
