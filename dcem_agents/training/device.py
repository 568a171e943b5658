"""Resolve the ``device`` setting of a config: ``auto`` picks CUDA when present."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; ``"cuda"`` without a GPU raises ``ValueError``; else ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use device=cpu or device=auto")
    return device
