"""The entries of a study's comparison: ``python evaluate.py --study STUDY_DIR`` (:mod:`dcem_agents.training.study`).

Every finished arm's ``checkpoint.pt`` with its default controller, labelled with the arm's name, on the same test
episodes (:func:`dcem_agents.evaluation.compare.compare`). In a study of ``ppo`` arms the first entry is the
controller they all started from (the first arm's ``dcem`` controller: its policy with the phase-2 weights), so each
arm's paired difference to it is what its PPO recipe gained, with a 95 % CI. The study file's ``evaluation`` section
gives the episodes, seed and output prefix unless the command line does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dcem_agents.evaluation.entries import EntryError, EntrySpec
from dcem_agents.training import load_checkpoint
from dcem_agents.training.study import Study, load_study, read_states

__all__ = ["add_study_table", "study_specs"]


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


def _overrides(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in values.items()) or "(the common settings only)"


def add_study_table(summary: dict[str, Any], study: Study) -> str:
    """Add the study to a comparison summary of its arms (``summary["study"]``: base preset, common and per-arm
    overrides, each arm's paired gain over the first entry) and return the markdown table of it: one row per arm."""
    first = summary["entries"][0]["label"]
    gains = {d["b"]: d for d in summary["paired_differences"] if d["a"] == first}
    summary["study"] = {"name": study.name, "base": study.base, "seed": study.seed, "common": study.common,
                        "arms": {arm: {"overrides": study.arms[arm], "gain": gains[arm]["mean"],
                                       "gain_ci95": gains[arm]["ci95"], "higher": gains[arm]["b_higher"]}
                                 for arm in study.arms if arm in gains}}
    lines = [f"## Study `{study.name}`: each arm against {first}", "",
             f"Base preset `{study.base}`, seed {study.seed}, common overrides: {_overrides(study.common)}.", "",
             "| arm | its overrides | return mean | gain (paired) | 95 % CI of the gain | episodes higher |",
             "|---|---|---|---|---|---|"]
    means = {e["label"]: e["stats"]["mean"] for e in summary["entries"]}
    for arm, row in summary["study"]["arms"].items():
        lo, hi = row["gain_ci95"]
        lines.append(f"| {arm} | {_overrides(row['overrides'])} | {means[arm]:.1f} | {row['gain']:+.1f} "
                     f"| {lo:+.1f} to {hi:+.1f} | {100 * row['higher']:.0f} % |")
    return "\n".join(lines) + "\n"
