"""The experiments behind ``train.py`` and ``evaluate.py``: the top layer of the library.

Each experiment module defines

- ``Config``: a dataclass (fields made with :func:`dcem_agents.config.field`) validated from the YAML preset;
- ``train(cfg: Config, run_dir: Path) -> dict``: runs it, writes into ``run_dir``, returns a summary;
- optionally ``evaluate(checkpoint: dict, options: EvalOptions) -> dict`` for checkpoints it wrote.

A preset names its experiment with the top-level key ``experiment``. Modules are imported only when used, so a
preset never pays for the dependencies of another.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = ["EXPERIMENTS", "EvalOptions", "get_experiment", "write_result"]

#: experiment name -> module that implements it
EXPERIMENTS: dict[str, str] = {
    "optimize": "dcem_agents.experiments.optimize",
    "cartpole_embed": "dcem_agents.experiments.cartpole_embed",
    "regression": "dcem_agents.experiments.regression",
    "planet": "dcem_agents.experiments.planet",
    "dcem": "dcem_agents.experiments.dcem",
    "ppo": "dcem_agents.experiments.ppo",
    "baseline": "dcem_agents.experiments.baseline",
}


@dataclass(frozen=True)
class EvalOptions:
    """Options of ``evaluate.py`` that every experiment may use.

    :param controller: which controller of the checkpoint to evaluate (experiment-specific names), or None for its default.
    :param episodes: number of evaluation episodes / initial states.
    :param seed: base seed of the evaluation.
    :param out: where to write the JSON result (None: not written; ``evaluate.py`` writes it next to the
        checkpoint, ``<checkpoint stem>_eval.json``, unless ``--out`` says where).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    controller: str | None = None
    episodes: int = 100
    seed: int = 0
    out: Path | None = None
    device: str = "auto"


def get_experiment(name: str) -> ModuleType:
    """Import and return the module of experiment ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(sorted(EXPERIMENTS))}")
    return importlib.import_module(EXPERIMENTS[name])


def write_result(result: dict, out: Path | None) -> None:
    """Write an evaluation's result as JSON to ``out`` (atomically; nothing when ``out`` is None)."""
    if out is None:
        return
    from dcem_agents.training.run_dir import write_json_atomic

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
