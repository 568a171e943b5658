"""The entries of a PPO learning curve: ``python evaluate.py --ppo-curve RUN_DIR [--steps S ...]``.

A ``ppo`` run (phase 3) saves SB3 checkpoints ``sb3_checkpoints/ppo_<steps>_steps.zip`` as it goes. Its learning
curve is a comparison (:func:`dcem_agents.evaluation.compare.compare`) of some of them on the same test episodes.
Step 0 is the first zip's ``dcem`` controller: the same policy with the phase-2 weights PPO started from. Every point
is paired with step 0 episode by episode, so the curve's gain is a paired difference with its own 95 % CI, not two
overlapping intervals. :func:`curve_annotation` adds the curve to the comparison's summary, and the report
(:func:`dcem_agents.evaluation.report.write_report`) draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dcem_agents.evaluation.entries import EntryError, EntrySpec
from dcem_agents.evaluation.report import curve_points
from dcem_agents.training.checkpoint import checkpoint_step, step_checkpoints

__all__ = ["DEFAULT_STEPS", "curve_annotation", "curve_specs", "saved_steps"]

#: PPO agent steps a curve shows by default (each the first saved checkpoint at or after it; the last one always)
DEFAULT_STEPS = (0, 5_000, 10_000, 25_000, 50_000)


def saved_steps(run_dir: Path) -> dict[int, Path]:
    """``{agent steps: zip}`` of the SB3 checkpoints of the ppo run folder ``run_dir``.

    :raises EntryError: the folder has none (not a ppo run folder, or one killed before its first checkpoint).
    """
    folder = Path(run_dir) / "sb3_checkpoints"
    zips = {checkpoint_step(p, "ppo"): p for p in step_checkpoints(folder, "ppo")} if folder.is_dir() else {}
    if not zips:
        raise EntryError(f"{run_dir}: no SB3 checkpoints (sb3_checkpoints/ppo_<steps>_steps.zip); --ppo-curve takes "
                         "the run folder of a ppo experiment (train.py --config configs/ppo/...)")
    return dict(sorted(zips.items()))


def curve_specs(run_dir: Path, steps: Sequence[int] | None = None) -> tuple[list[EntrySpec], list[int]]:
    """The entries of the curve of ``run_dir`` and their PPO agent steps.

    :param steps: agent steps to show, each 0 or one of the saved checkpoints' (None: :data:`DEFAULT_STEPS`, each
        taken as the first checkpoint at or after it, and the newest checkpoint).
    :return: ``(specs, steps)``, step 0 first (the ``dcem`` controller of the first zip), then increasing steps.
    :raises EntryError: no checkpoints, or a requested step that was not saved (the message lists the saved ones).
    """
    zips = saved_steps(run_dir)
    if steps is None:
        chosen = {0, max(zips)}
        for target in DEFAULT_STEPS[1:]:
            at_or_after = [s for s in zips if s >= target]
            if at_or_after:
                chosen.add(min(at_or_after))
    else:
        missing = [s for s in steps if s != 0 and s not in zips]
        if missing:
            raise EntryError(f"{run_dir}: no checkpoint at {missing[0]} PPO steps; saved: "
                             f"{', '.join(map(str, zips))} (and 0, the phase-2 weights)")
        chosen = set(steps)
    first = next(iter(zips.values()))
    specs = [EntrySpec(first, "dcem", "0 PPO steps") if s == 0 else EntrySpec(zips[s], "ppo", f"{s} PPO steps")
             for s in sorted(chosen)]
    return specs, sorted(chosen)


def curve_annotation(steps: Sequence[int]) -> Callable[[dict[str, Any]], None]:
    """The ``annotate`` of :func:`~dcem_agents.evaluation.compare.compare` for a curve whose entries sit at ``steps``
    (one per entry, the first the start the others are paired with): adds ``summary["curve"]``."""
    def annotate(summary: dict[str, Any]) -> None:
        if len(steps) != len(summary["entries"]):
            raise ValueError(f"a curve needs one step per entry, got {len(steps)} for {len(summary['entries'])}")
        summary["curve"] = {"x": "PPO agent steps", "points": curve_points(summary, steps)}

    return annotate
