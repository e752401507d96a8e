"""Which peers (PyTorch, scikit-learn) can run where, and why not.

Imports a peer only when asked about it, so that naming peers costs nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

from ..errors import XpnetError
from .plan import PEERS


def module_version(name: str) -> str | None:
    """``name.__version__`` (``"?"`` when absent), or None if it cannot import."""
    try:
        module = importlib.import_module(name)
    except Exception:
        return None
    return str(getattr(module, "__version__", "?"))


def import_torch() -> ModuleType | None:
    """The ``torch`` module, or None when it is missing or broken."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:
        return None
    return torch


def peer_skip_reason(peer: str, device: str) -> str | None:
    """Why ``peer`` cannot run on ``device`` (``"cpu"``/``"cuda:N"``), or None."""
    if peer == "sklearn":
        if device != "cpu":
            return f"skipped on {device} (CPU only)"
        if importlib.util.find_spec("sklearn") is None:
            return "skipped (scikit-learn not installed)"
        return None
    if peer == "pytorch":
        torch = import_torch()
        if torch is None:
            return "skipped (torch not installed)"
        if device != "cpu":
            if not torch.cuda.is_available():
                return f"skipped on {device} (this torch build sees no CUDA GPU)"
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= torch.cuda.device_count():
                return f"skipped on {device} (torch sees no such GPU)"
        return None
    raise XpnetError(f"unknown peer {peer!r}: choose from torch, sklearn or none")


def peer_messages(peers: Sequence[str], devices: Sequence[str]) -> list[str]:
    """One line per skipped peer and device, e.g. ``pytorch: skipped (...)``."""
    lines = []
    for peer in PEERS:
        if peer not in peers:
            lines.append(f"{peer}: skipped (not requested with --peers)")
            continue
        seen = set()
        for device in devices:
            reason = peer_skip_reason(peer, device)
            if reason and reason not in seen:
                seen.add(reason)
                lines.append(f"{peer}: {reason}")
    return lines
