"""The entries of a study's comparison: ``python evaluate.py --study STUDY_DIR`` (:mod:`dcem_agents.training.study`).

Every finished arm's ``checkpoint.pt`` with its default controller, labelled with the arm's name, on the same test
episodes (:func:`dcem_agents.evaluation.compare.compare`). In a study of ``ppo`` arms the first entry is the
controller they all started from (the first arm's ``dcem`` controller: its policy with the phase-2 weights), so each
arm's paired difference to it is what its PPO recipe gained, with a 95 % CI. The study file's ``evaluation`` section
gives the episodes, seed and output prefix unless the command line does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcem_agents.evaluation.entries import EntryError, EntrySpec
from dcem_agents.training import load_checkpoint
from dcem_agents.training.study import Study, load_study, read_states

__all__ = ["study_annotation", "study_specs"]


def study_specs(study_dir: str | Path) -> tuple[list[EntrySpec], Study, list[str]]:
    """``(entries, study, arms left out)`` of a study folder.

    :raises EntryError: not a study folder, or no arm has finished; arms still running or failed are left out (and
        listed).
    """
    study_dir = Path(study_dir)
    if not (study_dir / "study.yaml").is_file():
        raise EntryError(f"not a study folder (no study.yaml): {study_dir}")
    study = load_study(study_dir / "study.yaml")
    states = read_states(study_dir)
    finished = [arm for arm in study.arms if states.get(arm, {}).get("state") == "finished"
                and (study_dir / arm / "checkpoint.pt").is_file()]
    if not finished:
        raise EntryError(f"{study_dir}: no arm has finished yet (train.py --study-dir {study_dir} runs them)")
    specs = [EntrySpec(study_dir / arm / "checkpoint.pt", None, arm) for arm in finished]
    first = load_checkpoint(specs[0].path)
    if first["experiment"] == "ppo":
        specs.insert(0, EntrySpec(specs[0].path, "dcem", "latent DCEM (start)"))
    return specs, study, [arm for arm in study.arms if arm not in finished]


def study_annotation(study: Study) -> Callable[[dict[str, Any]], None]:
    """The ``annotate`` of :func:`~dcem_agents.evaluation.compare.compare` for a study's comparison: adds
    ``summary["study"]`` (base preset, seed, common overrides, and per arm its overrides and paired gain over the first
    entry), which the report renders as one table row per arm."""
    def annotate(summary: dict[str, Any]) -> None:
        first = summary["entries"][0]["label"]
        gains = {d["b"]: d for d in summary["paired_differences"] if d["a"] == first}
        summary["study"] = {"name": study.name, "base": study.base, "seed": study.seed, "common": study.common,
                            "against": first,
                            "arms": {arm: {"overrides": study.arms[arm], "gain": gains[arm]["mean"],
                                           "gain_ci95": gains[arm]["ci95"], "higher": gains[arm]["b_higher"]}
                                     for arm in study.arms if arm in gains}}

    return annotate
