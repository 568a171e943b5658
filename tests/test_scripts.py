"""Smoke tests of ``train.py`` and ``evaluate.py`` as a user runs them (subprocesses; input errors through the same
``main`` in this process, :func:`_scripts.run_main`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _scripts import run_main

ROOT = Path(__file__).resolve().parents[1]
DEMO = "configs/demo_rastrigin.yaml"


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_train_default_demo_small(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    p = _run("train.py", "--config", DEMO, "--run-dir", str(run_dir), "--set", "n_problems=4", "--set", "n_iters=20",
             "--set", "n_samples=200", "--set", "n_elites=20")
    assert p.returncode == 0, p.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    # The same problems solved here, in this process, with the settings given on the command line: the summary must
    # report these solutions, measured with Rastrigin written out (10 d + Σ x² - 10 cos 2πx) and the default
    # tolerance 1e-2; its last logged mean-iterate value is the final value.
    import csv
    import math

    from dcem_agents.math import dcem, rastrigin

    progress = list(csv.DictReader((run_dir / "progress.csv").open()))
    assert [int(r["step"]) for r in progress] == list(range(20))
    for method, temperature in (("cem", None), ("dcem", 1.0)):
        solution = dcem(rastrigin, 2, n_batch=4, n_samples=200, n_elites=20, n_iters=20, temperature=temperature,
                        lower=-5.12, upper=5.12, generator=torch.Generator().manual_seed(0)).tolist()
        values = [20 + sum(x * x - 10 * math.cos(2 * math.pi * x) for x in row) for row in solution]
        solved = sum(max(abs(x) for x in row) <= 1e-2 for row in solution) / 4
        assert summary[method]["temperature"] == temperature
        assert summary[method]["final_value_mean"] == pytest.approx(sum(values) / 4, rel=1e-5, abs=1e-5), method
        assert summary[method]["final_value_max"] == pytest.approx(max(values), rel=1e-5, abs=1e-5), method
        assert summary[method]["solved_fraction"] == solved, method
        assert float(progress[-1][f"{method}/mean_iterate_value"]) == pytest.approx(sum(values) / 4, rel=1e-5, abs=1e-5)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["n_problems"] == 4 and cfg["experiment"] == "optimize"
    assert (run_dir / "progress.csv").exists() and (run_dir / "iterates.png").stat().st_size > 1000


def test_train_rejects_bad_config(tmp_path: Path) -> None:
    p = _run("train.py", "--config", DEMO, "--run-dir", str(tmp_path / "r"), "--set", "n_iter=3")
    assert p.returncode == 2 and "unknown config key 'n_iter'" in p.stderr and "n_iters" in p.stderr
    # the same main() in this process for the other inputs (no interpreter start-up each)
    p = run_main("train.py", "--config", DEMO, "--run-dir", str(tmp_path / "r"), "--set", "function=sphere")
    assert p.returncode == 2 and "must be one of ['rastrigin', 'ackley']" in p.stderr
    p = run_main("train.py", "--config", str(tmp_path / "missing.yaml"))
    assert p.returncode == 2 and "config file not found" in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: nonsense\n")
    p = run_main("train.py", "--config", str(bad))
    assert p.returncode == 2 and "unknown experiment 'nonsense'" in p.stderr
    assert not (tmp_path / "r").exists()  # nothing runs before the config is valid


def test_help_config_lists_keys() -> None:
    p = run_main("train.py", "--config", DEMO, "--help-config")
    assert p.returncode == 0 and "n_elites" in p.stdout and "temperature" in p.stdout


def test_default_config_is_the_cpu_agent() -> None:
    """``python train.py`` with no arguments trains phase 1 on cartpole-swingup (the README's first command)."""
    p = run_main("train.py", "--help-config")
    assert p.returncode == 0, p.stderr
    assert "default 'planet'" in p.stdout
    assert "overshooting" in p.stdout and "action_repeat" in p.stdout


def test_evaluate_reports_bad_checkpoints(tmp_path: Path) -> None:
    p = _run("evaluate.py", "--checkpoint", str(tmp_path / "missing.pt"))
    assert p.returncode == 2 and "checkpoint not found" in p.stderr
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": 1}, foreign)
    p = _run("evaluate.py", "--checkpoint", str(foreign))
    assert p.returncode == 2 and "not a dcem-agents checkpoint" in p.stderr
    p = _run("evaluate.py", "--checkpoint", "checkpoints/dcem_cartpole_swingup.pt", "--out", str(tmp_path))
    assert p.returncode == 2 and "is a folder" in p.stderr and "Traceback" not in p.stderr  # before evaluating
    p = _run("evaluate.py", "--checkpoint", str(tmp_path))  # a run folder instead of its checkpoint
    assert p.returncode == 2 and f"{tmp_path / 'checkpoint.pt'}" in p.stderr and "not found" not in p.stderr


def test_a_config_error_names_its_section_once(tmp_path: Path) -> None:
    p = _run("train.py", "--config", "configs/planet/debug.yaml", "--set", "planner.n_elites=500",
             "--runs-dir", str(tmp_path))
    assert p.returncode == 2 and "config error: planner: need 1 <= n_elites" in p.stderr


@pytest.mark.slow
def test_reproduce_task_script_runs_every_step_and_resumes(tmp_path: Path) -> None:
    """``scripts/reproduce_task.sh`` on the debug presets: four run folders, each published and marked done, and the
    five-entry report; run again, it skips the finished steps; with one mark removed, it re-enters only that step."""
    import os

    from _scripts import ROOT

    env = {**os.environ, "PYTHON": sys.executable, "EPISODES": "2", "REPORT_OUT": str(tmp_path / "report")}
    cmd = ["bash", str(ROOT / "scripts" / "reproduce_task.sh"), "debug", str(tmp_path / "runs")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    for step in ("planet", "dcem", "ppo", "sac"):
        assert (tmp_path / "runs" / step / "DONE").is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    assert [e["label"] for e in report["entries"]] == ["full-space CEM", "latent DCEM", "latent hard CEM",
                                                       "latent DCEM + PPO", "SAC"]
    assert report["episodes"] == 2
    (tmp_path / "runs" / "ppo" / "DONE").unlink()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "=== planet: done" in again.stdout and "=== sac: done" in again.stdout
    assert "=== ppo: configs/ppo/debug.yaml" in again.stdout
    assert (tmp_path / "runs" / "ppo" / "DONE").is_file()


def _repo_with_presets(root: Path, presets: dict[str, str | dict]) -> Path:
    """A copy of the repository's layout (scripts/reproduce_task.sh copied; train.py, evaluate.py and the package
    linked) whose configs are only ``presets``: ``{"planet/x_cpu.yaml": "planet/debug.yaml" or a dict}``."""
    import shutil

    import yaml

    from _scripts import ROOT

    repo = root / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "reproduce_task.sh", repo / "scripts")
    for name in ("train.py", "evaluate.py", "dcem_agents"):
        (repo / name).symlink_to(ROOT / name)
    for dst, src in presets.items():
        (repo / "configs" / dst).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, str):
            shutil.copy(ROOT / "configs" / src, repo / "configs" / dst)
        else:
            (repo / "configs" / dst).write_text(yaml.safe_dump(src))
    return repo


def _reproduce(repo: Path, task: str, tmp_path: Path, *evaluate_args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHON": sys.executable, "EPISODES": "2", "REPORT_OUT": str(tmp_path / "report")}
    extra = ["--", *evaluate_args] if evaluate_args else []
    return subprocess.run(["bash", str(repo / "scripts" / "reproduce_task.sh"), task, str(tmp_path / "runs"), *extra],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_reproduce_task_script_without_phase2_presets_runs_phase1_and_sac(tmp_path: Path) -> None:
    """A task with a phase-1 and a SAC preset only (the Gymnasium MuJoCo tasks): those two steps and a two-entry
    report, plus the row that the arguments after ``--`` add to it."""
    repo = _repo_with_presets(tmp_path, {"planet/onlyp1_cpu.yaml": "planet/debug.yaml",
                                         "baselines/sac_onlyp1.yaml": "baselines/debug.yaml"})
    p = _reproduce(repo, "onlyp1", tmp_path, "--entry", f"{tmp_path / 'runs' / 'planet' / 'checkpoint.pt'}:cem@extra row")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "phase 1 and SAC only" in p.stdout
    assert sorted(d.name for d in (tmp_path / "runs").iterdir()) == ["planet", "sac"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [e["label"] for e in report["entries"]] == ["full-space CEM", "SAC", "extra row"]
    assert (tmp_path / "report_training.png").is_file()  # both runs' learning curves


@pytest.mark.slow
def test_reproduce_task_script_gives_phase2_its_planned_steps_after_an_early_stop(tmp_path: Path) -> None:
    """Phase 1 stopped by its stop_return at 3,000 of 4,000 steps: phase 2 still gets the presets' planned
    4,500 - 4,000 = 500 steps (to 3,500 from the start of phase 1), not 1,500."""
    import yaml

    from _scripts import ROOT

    planet = yaml.safe_load((ROOT / "configs/planet/debug.yaml").read_text())
    planet["train"].update(total_env_steps=4000, eval_every=3000, stop_return=-1.0e9)
    repo = _repo_with_presets(tmp_path, {"planet/early_cpu.yaml": planet, "dcem/early.yaml": "dcem/debug.yaml",
                                         "ppo/early.yaml": "ppo/debug.yaml", "baselines/sac_early.yaml": "baselines/debug.yaml"})
    p = _reproduce(repo, "early", tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((tmp_path / "runs" / "planet" / "summary.json").read_text())["env_steps"] == 3000
    phase2 = yaml.safe_load((tmp_path / "runs" / "dcem" / "config.yaml").read_text())
    assert phase2["train"]["total_env_steps"] == 3500
    assert json.loads((tmp_path / "runs" / "dcem" / "summary.json").read_text())["env_steps"] >= 3500


def test_reproduce_task_script_refuses_an_unknown_task(tmp_path: Path) -> None:
    from _scripts import ROOT

    p = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_task.sh"), "no_such_task", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "no phase-1 preset for no_such_task" in p.stderr
    assert not any(tmp_path.iterdir())  # nothing created


@pytest.mark.parametrize("args", [[], ["--"], ["debug", "RUNS", "--entry", "x.pt"], ["debug", "RUNS", "stray"]])
def test_reproduce_task_script_refuses_a_malformed_command_line(tmp_path: Path, args: list[str]) -> None:
    """Evaluation arguments come only after ``--``; anything else past RUNS_DIR is a usage error before any work."""
    from _scripts import ROOT

    args = [str(tmp_path / "runs") if a == "RUNS" else a for a in args]
    p = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_task.sh"), *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("usage: bash scripts/reproduce_task.sh TASK [RUNS_DIR] [--"), p.stderr
    assert not any(tmp_path.iterdir())  # nothing created
