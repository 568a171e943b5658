"""Studies (``train.py --study``, ``evaluate.py --study``): arms of one preset run into one folder, resumed, compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _scripts import run_main, run_script

from dcem_agents.config import ConfigError
from dcem_agents.training.study import arm_config, load_study


def _study_file(tmp_path: Path, phase2_checkpoint: Path, **extra: object) -> Path:
    data = {"name": "tiny", "base": "configs/ppo/debug.yaml", "seed": 3,
            "common": {"phase2_checkpoint": str(phase2_checkpoint), "total_timesteps": 32, "eval_episodes": 0},
            "arms": {"base": {}, "learned_std": {"policy.learn_log_std": True, "ppo.learning_rate": 0.001}},
            "evaluation": {"episodes": 2, "seed": 11, "n_envs": 2}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_arm_configs_apply_common_then_arm_overrides(tmp_path: Path, phase2_checkpoint: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    study = load_study(_study_file(tmp_path, phase2_checkpoint))
    base, arm = arm_config(study, "base"), arm_config(study, "learned_std")
    assert base["name"] == "tiny-base" and arm["name"] == "tiny-learned_std" and base["seed"] == arm["seed"] == 3
    assert base["total_timesteps"] == arm["total_timesteps"] == 32
    assert arm["policy"]["learn_log_std"] is True and "learn_log_std" not in base.get("policy", {})
    assert arm["ppo"]["learning_rate"] == 0.001 and arm["ppo"]["n_steps"] == base["ppo"]["n_steps"]


@pytest.mark.parametrize(("change", "message"), [
    ({"arms": {}}, "'arms' must map arm names"),
    ({"arms": {"a/b": {}}}, "arm name 'a/b'"),
    ({"base": "configs/ppo/nothing.yaml"}, "base preset not found"),
    ({"evaluation": {"episodes": 0}}, "evaluation.episodes and evaluation.n_envs must be >= 1"),
    ({"evaluation": {"episode": 3}}, "evaluation:"),
    ({"evaluation": {"episodes": "ten"}}, "must be integers"),
    ({"colour": "red"}, "unknown study key 'colour'"),
    ({"name": "../up"}, "study name '../up'"),
    ({"seed": "zero"}, "seed must be an integer"),
])
def test_bad_study_files(tmp_path: Path, phase2_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                         change: dict, message: str) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(ConfigError, match=message):
        load_study(_study_file(tmp_path, phase2_checkpoint, **change))


def test_a_bad_arm_is_refused_before_any_folder(tmp_path: Path, phase2_checkpoint: Path) -> None:
    path = _study_file(tmp_path, phase2_checkpoint, arms={"good": {}, "bad": {"policy.colour": "red"}})
    p = run_main("train.py", "--study", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 2 and "arm 'bad'" in p.stderr and "colour" in p.stderr
    assert not (tmp_path / "runs").exists()
    p = run_main("train.py", "--study", str(path), "--config", "configs/ppo/debug.yaml")
    assert p.returncode == 2 and "--study/--study-dir run a study file's arms" in p.stderr
    p = run_main("train.py", "--study", str(path), "--study-dir", str(tmp_path))
    assert p.returncode == 2 and "give one" in p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run_main("train.py", "--study-dir", str(empty))
    assert p.returncode == 2 and "not a study folder" in p.stderr
    p = run_main("evaluate.py", "--study", str(empty))
    assert p.returncode == 2 and "not a study folder" in p.stderr


def test_a_study_runs_resumes_and_compares_its_arms(tmp_path: Path, phase2_checkpoint: Path) -> None:
    path = _study_file(tmp_path, phase2_checkpoint)
    p = run_script("train.py", "--study", str(path), "--runs-dir", str(tmp_path / "runs"), "--workers", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    study_dir = Path(json.loads(p.stdout[p.stdout.index("{"):])["study_dir"])
    states = json.loads((study_dir / "study.json").read_text())["arms"]
    assert set(states) == {"base", "learned_std"} and all(s["state"] == "finished" for s in states.values())
    for arm in ("base", "learned_std"):
        cfg = yaml.safe_load((study_dir / arm / "config.yaml").read_text())
        assert cfg["name"] == f"tiny-{arm}" and cfg["policy"]["learn_log_std"] is (arm == "learned_std")
        assert (study_dir / arm / "checkpoint.pt").is_file() and (study_dir / arm / "train.log").is_file()

    # an arm that had not finished is run again by the same command with --study-dir; the finished one is left alone
    del states["learned_std"]
    (study_dir / "study.json").write_text(json.dumps({"arms": states}))
    untouched = (study_dir / "base" / "checkpoint.pt").stat().st_mtime_ns
    p = run_script("train.py", "--study-dir", str(study_dir))
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((study_dir / "study.json").read_text())["arms"]["learned_std"]["state"] == "finished"
    assert (study_dir / "base" / "checkpoint.pt").stat().st_mtime_ns == untouched

    p = run_script("evaluate.py", "--study", str(study_dir), "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((study_dir / "study.json").read_text())["arms"]["base"]["state"] == "finished"  # not overwritten
    report = json.loads((study_dir / "comparison.json").read_text())
    assert [e["label"] for e in report["entries"]] == ["latent DCEM (start)", "base", "learned_std"]
    assert [(e["kind"], e["controller"]) for e in report["entries"]] == [("ppo", "dcem"), ("ppo", "ppo"), ("ppo", "ppo")]
    assert report["episodes"] == 2 and report["episode_seeds"] == [11, 12]  # the study file's evaluation section
    assert [(d["a"], d["b"]) for d in report["paired_differences"]][:2] == [("latent DCEM (start)", "base"),
                                                                          ("latent DCEM (start)", "learned_std")]
    arms = report["study"]["arms"]  # one row per arm: its own overrides and its paired gain over the start
    assert arms["learned_std"]["overrides"] == {"policy.learn_log_std": True, "ppo.learning_rate": 0.001}
    assert arms["base"]["overrides"] == {} and report["study"]["common"]["total_timesteps"] == 32
    assert [arms[a]["gain"] for a in ("base", "learned_std")] == [d["mean"] for d in report["paired_differences"][:2]]
    md = (study_dir / "comparison.md").read_text()
    assert "## Study `tiny`: each arm against latent DCEM (start)" in md
    assert "| learned_std | `policy.learn_log_std=true`, `ppo.learning_rate=0.001` |" in md
