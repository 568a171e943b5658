"""The torch preamble of every runner: threads and the ``device`` setting (``auto`` picks CUDA when present)."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "setup_torch"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; ``"cuda"`` (or ``"cuda:N"``) without that GPU raises ``ValueError``;
    else ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"device {name!r} was requested but this machine has {count or 'no'} CUDA GPU(s); use "
                             "device=auto or device=cpu")
    return device


def setup_torch(num_threads: int, device: str) -> torch.device:
    """Set torch's intra-op CPU threads (``num_threads``; 0 keeps torch's default) and resolve ``device``."""
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0, got {num_threads}")
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    return resolve_device(device)
