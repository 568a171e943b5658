"""A study: arms of one preset, each the preset with its own overrides, run into one study folder and compared.

A study file (``configs/studies/*.yaml``) names a base preset, overrides common to every arm, and the arms::

    name: ppo_cartpole_swingup
    base: configs/ppo/cartpole_swingup.yaml
    seed: 0
    common: {total_timesteps: 5120, policy.update_iters: 1}
    arms:
      base: {}
      learned_std: {policy.learn_log_std: true}
    evaluation: {episodes: 100, seed: 4000000, out: results/ppo_cartpole_swingup_study}

``train.py --study FILE`` validates every arm's config (as ``--set`` would apply the overrides: dotted keys, the
values as YAML), then runs each arm as one ordinary ``train.py`` process into a study folder::

    <runs>/study-<name>-<time>/
        study.yaml      the study file as given
        study.json      each arm's state (finished, failed; absent: pending)
        <arm>.yaml      the arm's resolved config
        <arm>/          the arm's run folder; its output in <arm>/train.log
        comparison.*    the report of ``evaluate.py --study`` (unless the study file's evaluation.out says where)

The same command with ``--study-dir`` resumes the arms that had not finished, from their checkpoints
(:mod:`dcem_agents.training.sweep` runs the processes, as it runs a sweep's seeds). ``evaluate.py --study DIR``
compares the arms' final checkpoints on the same episodes (:func:`study_entries`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from dcem_agents.config import ConfigError, apply_overrides, load_yaml
from dcem_agents.training.run_dir import fresh_folder, write_json_atomic

__all__ = ["STUDY_FILE", "Study", "StudyEvaluation", "arm_config", "create_study", "load_study", "read_states",
           "write_arm_config", "write_states"]

#: the study's state inside the study folder
STUDY_FILE = "study.json"

_KEYS = {"name", "base", "seed", "common", "arms", "evaluation"}
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclasses.dataclass(frozen=True)
class StudyEvaluation:
    """How ``evaluate.py --study`` compares the arms: ``episodes`` on environment seeds ``seed, seed + 1, ...``,
    ``n_envs`` at a time, written under the prefix ``out`` (None: ``<study folder>/comparison``)."""

    episodes: int = 100
    seed: int = 4_000_000
    n_envs: int = 10
    out: str | None = None


@dataclasses.dataclass(frozen=True)
class Study:
    """A parsed study file (see the module docstring)."""

    name: str
    base: str
    seed: int
    common: dict[str, Any]
    arms: dict[str, dict[str, Any]]
    evaluation: StudyEvaluation


def load_study(path: str | Path) -> Study:
    """Read and check a study file: its keys, the base preset's existence, the arms' names and overrides.

    :raises ConfigError: a missing file, an unknown key, no arms, an arm name that cannot be a folder name, an override
        that is not a mapping.
    """
    path = Path(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown study key {unknown[0]!r}; a study has {', '.join(sorted(_KEYS))}")
    if "base" not in data or not isinstance(data["base"], str):
        raise ConfigError(f"{path}: 'base' must name the preset every arm starts from")
    if not Path(data["base"]).is_file():
        raise ConfigError(f"{path}: base preset not found: {data['base']}")
    arms = data.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise ConfigError(f"{path}: 'arms' must map arm names to their overrides (at least one arm)")
    for name, overrides in arms.items():
        if not isinstance(name, str) or not _ARM_NAME.fullmatch(name):
            raise ConfigError(f"{path}: arm name {name!r} must be letters, digits and _ . + - (it names a folder)")
        if not isinstance(overrides, dict | None):
            raise ConfigError(f"{path}: arm {name!r} must map config keys to values, got {overrides!r}")
    common = data.get("common") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{path}: 'common' must map config keys to values")
    evaluation = data.get("evaluation") or {}
    try:
        evaluation = StudyEvaluation(**evaluation)
    except TypeError as e:
        raise ConfigError(f"{path}: evaluation: {e}") from None
    if not all(isinstance(v, int) for v in (evaluation.episodes, evaluation.seed, evaluation.n_envs)) or \
            not isinstance(evaluation.out, str | None):
        raise ConfigError(f"{path}: evaluation.episodes, .seed and .n_envs must be integers and .out a path")
    if evaluation.episodes < 1 or evaluation.n_envs < 1:
        raise ConfigError(f"{path}: evaluation.episodes and evaluation.n_envs must be >= 1")
    name = str(data.get("name", path.stem))
    if not _ARM_NAME.fullmatch(name):
        raise ConfigError(f"{path}: study name {name!r} must be letters, digits and _ . + - (it names a folder)")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"{path}: seed must be an integer, got {seed!r}")
    return Study(name, data["base"], seed, dict(common),
                 {arm: dict(o or {}) for arm, o in arms.items()}, evaluation)


def arm_config(study: Study, arm: str) -> dict[str, Any]:
    """The raw config of ``arm``: the base preset, then the common overrides, then the arm's, then its name
    (``<study name>-<arm>``) and the study's seed. Overrides are applied as ``train.py --set`` applies them."""
    overrides = [*study.common.items(), *study.arms[arm].items(), ("name", f"{study.name}-{arm}"), ("seed", study.seed)]
    return apply_overrides(load_yaml(study.base), [f"{key}={json.dumps(value)}" for key, value in overrides])


def create_study(root: str | Path, study_file: str | Path, study: Study) -> Path:
    """A fresh study folder ``<root>/study-<name>-<time>`` holding a copy of the study file; return it."""
    path = fresh_folder(Path(root) / f"study-{study.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    (path / "study.yaml").write_text(Path(study_file).read_text())
    return path


def read_states(study_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{arm: {"state", "returncode", "seconds"}}`` from ``study.json`` (empty when none was written yet)."""
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        return {}
    try:
        return {str(k): dict(v) for k, v in json.loads(path.read_text())["arms"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a readable study state ({type(e).__name__}: {e})") from None


def write_states(study_dir: str | Path, states: dict[str, dict[str, Any]]) -> None:
    """Write ``study.json`` atomically."""
    write_json_atomic(Path(study_dir) / STUDY_FILE, {"arms": states})


def write_arm_config(study_dir: str | Path, arm: str, raw: dict[str, Any]) -> Path:
    """Write ``<study_dir>/<arm>.yaml`` (the arm's resolved config, what its process runs); return its path."""
    path = Path(study_dir) / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
