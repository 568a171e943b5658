"""YAML presets into validated dataclasses: unknown keys, wrong types, Literal choices, overrides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from dcem_agents.config import ConfigError, apply_overrides, build, describe, field, load_yaml, to_dict


@dataclass
class _Inner:
    hidden: int = field(64, help="hidden units")
    sizes: tuple[int, ...] = field((8, 8), help="layer sizes")


@dataclass
class _Cfg:
    experiment: Literal["demo"] = field("demo", help="experiment")
    lr: float = field(1e-3, help="learning rate")
    steps: int = field(10, help="steps")
    flag: bool = field(False, help="a flag")
    device: str = field("auto", help="device")
    clip: float | None = field(None, help="optional clip")
    model: _Inner = field(default_factory=_Inner, help="model section")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_builds_nested_and_converts() -> None:
    cfg = build(_Cfg, {"lr": 3, "steps": 5.0, "clip": 1, "model": {"hidden": 32, "sizes": [4, 5, 6]}})
    assert cfg.lr == 3.0 and isinstance(cfg.lr, float) and cfg.steps == 5 and cfg.clip == 1.0
    assert cfg.model.hidden == 32 and cfg.model.sizes == (4, 5, 6)
    assert to_dict(cfg)["model"] == {"hidden": 32, "sizes": [4, 5, 6]}


@pytest.mark.parametrize(
    "data,match",
    [({"lrr": 1.0}, r"unknown config key 'lrr'.*allowed keys: .*lr"),
     ({"model": {"hiden": 3}}, r"unknown config key 'model.hiden' in section 'model'.*hidden"),
     ({"experiment": "other"}, r"'experiment' must be one of \['demo'\]"),
     ({"steps": "ten"}, r"'steps' must be an integer"),
     ({"steps": 2.5}, r"'steps' must be an integer"),
     ({"flag": "yes"}, r"'flag' must be true or false"),
     ({"lr": True}, r"'lr' must be a number"),
     ({"model": {"sizes": 3}}, r"'model.sizes' must be a list"),
     ({"model": {"sizes": [1, "a"]}}, r"'model.sizes\[1\]' must be an integer"),
     ({"steps": 0}, r"steps must be >= 1")],
)
def test_bad_config_names_the_key(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(_Cfg, data)


def test_overrides_parse_yaml_values() -> None:
    data = apply_overrides({"model": {"hidden": 8}}, ["lr=3e-4", "model.hidden=16", "model.sizes=[2, 3]", "flag=true"])
    cfg = build(_Cfg, data)
    assert cfg.lr == 3e-4 and cfg.model.hidden == 16 and cfg.model.sizes == (2, 3) and cfg.flag is True
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["lr"])


def test_load_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(bad)


def test_describe_lists_every_key() -> None:
    text = "\n".join(describe(_Cfg))
    for key in ("lr", "steps", "model.hidden", "model.sizes"):
        assert key in text
    assert "learning rate" in text


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "studies")
STUDIES = sorted((CONFIGS / "studies").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_preset_validates(preset: Path) -> None:
    from dcem_agents.experiments import get_experiment

    raw = load_yaml(preset)
    build(get_experiment(raw["experiment"]).Config, raw)


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_every_arm_of_every_shipped_study_validates(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dcem_agents.experiments import get_experiment
    from dcem_agents.training.study import arm_config, load_study

    monkeypatch.chdir(CONFIGS.parent)  # the base preset is named from the repository root
    spec = load_study(study)
    assert spec.arms
    for arm in spec.arms:
        raw = arm_config(spec, arm)
        cfg = build(get_experiment(raw["experiment"]).Config, raw)
        assert cfg.name == f"{spec.name}-{arm}" and cfg.seed == spec.seed


def test_every_experiment_starts_with_the_shared_run_header() -> None:
    """One header (RunConfig) for every preset: the same first keys, the same checks, whatever the runner."""
    import dataclasses

    from dcem_agents.experiments import EXPERIMENTS, get_experiment
    from dcem_agents.training.run_config import RunConfig

    header = [f.name for f in dataclasses.fields(RunConfig)]
    assert header == ["experiment", "name", "seed", "device", "num_threads"]
    for name in EXPERIMENTS:
        cfg_cls = get_experiment(name).Config
        assert issubclass(cfg_cls, RunConfig), name
        assert [f.name for f in dataclasses.fields(cfg_cls)][:5] == header, name
        assert cfg_cls().experiment == name
        with pytest.raises(ValueError, match="device must be one of"):
            cfg_cls(device="tpu")


def test_ppo_minibatch_size_depends_on_advantage_normalization() -> None:
    from dcem_agents.experiments.ppo import PPOSettings

    PPOSettings(batch_size=1, normalize_advantage=False)  # a one-sample minibatch is fine without normalizing
    with pytest.raises(ValueError, match="batch_size >= 2"):
        PPOSettings(batch_size=1)
