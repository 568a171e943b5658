"""The header every preset starts with: which runner, the run's name, its seed and where it computes.

Each experiment's ``Config`` subclasses :class:`RunConfig`, redeclaring ``experiment`` (a ``Literal`` of its own name)
and ``name``, and any header field whose default or meaning differs (a runner that defaults to one thread, say). The
checks and the torch set-up (:meth:`RunConfig.setup_torch`) are written once, here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from dcem_agents.config import field
from dcem_agents.training.device import setup_torch

__all__ = ["RunConfig"]


@dataclass
class RunConfig:
    """Fields and checks shared by every experiment's config (the first keys of every preset)."""

    experiment: str = field("", help="experiment name (selects the runner)")
    name: str = field("run", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of every random generator of the run (models, replay sampling, noise, episodes)")
    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    num_threads: int = field(0, help="torch intra-op CPU threads (0: torch's default; set 1 per run when runs share "
                                     "a small machine)")

    def __post_init__(self) -> None:
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0: torch's default), got {self.num_threads}")
        if self.device not in ("auto", "cpu", "cuda") and re.fullmatch(r"cuda:\d+", self.device) is None:
            raise ValueError(f"device must be one of auto, cpu, cuda (or cuda:N), got {self.device!r}")

    def setup_torch(self) -> torch.device:
        """Set torch's CPU threads and return the resolved device (the preamble of every runner's ``train``)."""
        return setup_torch(self.num_threads, self.device)
