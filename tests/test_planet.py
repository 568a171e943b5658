"""The PlaNet phase-1 trainer and experiment: config validation, resume equality, train.py / evaluate.py runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dcem_agents.config import ConfigError, apply_overrides, build, load_yaml
from dcem_agents.experiments import EvalOptions
from dcem_agents.training.replay_store import inline_replay
from dcem_agents.experiments.planet import CHECKPOINT_NAME, Config, build_agent, evaluate
from dcem_agents.training import load_checkpoint, save_checkpoint
from dcem_agents.training.planet import PlanetTrainer

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "planet" / "debug.yaml"
PRESETS = ["cartpole_swingup", "cartpole_swingup_cpu", "cheetah_run", "walker_walk", "debug"]



def _config(*overrides: str) -> Config:
    return build(Config, apply_overrides(load_yaml(DEBUG), overrides))


def _trainer(cfg: Config) -> PlanetTrainer:
    env_fn, model, controller = build_agent(cfg, torch.device("cpu"))
    return PlanetTrainer(env_fn, model, controller, cfg.train, cfg.seed, cfg.action_repeat)


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_build(preset: str) -> None:
    cfg = build(Config, load_yaml(ROOT / "configs" / "planet" / f"{preset}.yaml"))
    assert cfg.experiment == "planet" and cfg.env_id.startswith("dm_control/")


def test_paper_presets_use_the_paper_sizes() -> None:
    for preset, repeat in [("cartpole_swingup", 8), ("cheetah_run", 4), ("walker_walk", 2)]:
        cfg = build(Config, load_yaml(ROOT / "configs" / "planet" / f"{preset}.yaml"))
        assert cfg.action_repeat == repeat
        assert (cfg.model.hidden_size, cfg.model.layer_size) == (200, 200)
        p = cfg.planner
        assert (p.horizon, p.n_samples, p.n_elites, p.n_iters) == (12, 1000, 100, 10)
        assert (cfg.train.batch_size, cfg.train.chunk_length, cfg.train.seed_episodes) == (50, 50, 5)


def test_unknown_key_and_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.bogus'.*allowed keys: .*batch_size"):
        _config("train.bogus=1")
    with pytest.raises(ConfigError, match=r"planner.*n_elites=20.*n_samples=16"):
        _config("planner.n_elites=20")
    with pytest.raises(ConfigError, match=r"'train\.batch_size' must be an integer"):
        _config("train.batch_size=big")
    with pytest.raises(ConfigError, match=r"train\.seed_episodes must be >= 1"):
        _config("train.seed_episodes=0")
    with pytest.raises(ConfigError, match=r"config key 'experiment' must be one of \['planet'\]"):
        _config("experiment=optimize")


def test_train_script_rejects_a_bad_key_at_start_up(tmp_path: Path) -> None:
    out = _run("train.py", "--config", str(DEBUG), "--set", "model.width=3", "--run-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "unknown config key 'model.width'" in out.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- trainer
def test_updates_reduce_the_model_loss() -> None:
    cfg = _config("train.total_env_steps=3000", "train.seed_episodes=2", "train.updates_per_episode=30",
                  "train.eval_every=0", "final_eval_episodes=0")
    trainer = _trainer(cfg)
    trainer.train(max_iterations=2)  # the seed episodes
    first = trainer._update()
    trainer.settings.updates_per_episode = 60
    trainer._update()
    trainer.settings.updates_per_episode = 30
    last = trainer._update()
    assert last["loss"] < first["loss"] and last["obs_nll"] < first["obs_nll"] and last["reward"] < first["reward"]
    assert trainer.counters["updates"] == 120


def test_resume_from_a_checkpoint_continues_identically(tmp_path: Path) -> None:
    overrides = ("train.total_env_steps=4000", "train.seed_episodes=2", "train.eval_every=0", "train.eval_episodes=1")
    straight = _trainer(_config(*overrides))
    straight.train()
    interrupted = _trainer(_config(*overrides))
    interrupted.train(max_iterations=3)  # 2 seed episodes + 1 collect-and-update cycle
    path = save_checkpoint(tmp_path / "ckpt.pt", "planet", {}, {"trainer": interrupted.state_dict()})
    del interrupted
    resumed = _trainer(_config(*overrides))
    resumed.load_state_dict(load_checkpoint(path, "planet")["trainer"])
    assert resumed.counters["episodes"] == 3 and resumed.counters["env_steps"] == 3000 and len(resumed.replay) == 3
    resumed.train()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("env_steps", "episodes", "updates", "normalized", "next_eval"):
        assert a["counters"][key] == b["counters"][key], key
    for key, value in a["replay"].items():
        np.testing.assert_array_equal(value, b["replay"][key], err_msg=key)
    assert a["rng"] == b["rng"] and torch.equal(a["torch_gen"], b["torch_gen"])
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0, msg=key)
    assert [e["returns"] for e in straight.evaluations] == [e["returns"] for e in resumed.evaluations]


def test_stop_return_ends_the_run_and_a_resume_does_not_continue() -> None:
    trainer = _trainer(_config("train.eval_every=1000", "train.eval_episodes=1", "train.stop_return=-1"))
    summary = trainer.train()
    assert summary["counters"]["env_steps"] == 1000 and len(trainer.evaluations) == 1
    trainer.train()  # e.g. the resume command run again on a finished folder
    assert trainer.counters["env_steps"] == 1000


# ---------------------------------------------------------------- scripts
def test_debug_preset_trains_resumes_and_evaluates(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ship = ["--set", f"results_json={tmp_path / 'pub' / 'r.json'}", "--set", f"export_checkpoint={tmp_path / 'pub' / 'c.pt'}"]
    out = _run("train.py", "--config", str(DEBUG), "--run-dir", str(run_dir), *ship)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "pub").exists() and "--publish" in out.stderr  # nothing leaves the run folder unasked
    summary = json.loads(out.stdout)
    assert summary["env_steps"] == 3000 and summary["episodes"] == 3 and summary["updates"] == 2
    for key in ("checkpoint", "eval_return_mean", "eval_return_std", "wall_time_s", "ms_per_plan"):
        assert key in summary
    assert (run_dir / "config.yaml").exists() and (run_dir / "tb").is_dir() and (run_dir / "summary.json").exists()
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    assert [int(float(r["step"])) for r in rows] == [1000, 2000, 3000]
    assert rows[-1]["train/obs_nll"] and rows[-1]["eval/return_mean"]  # one collect-and-update cycle, evaluated
    # resume: the same command on the same folder picks the checkpoint up and goes on from 3000 steps
    out = _run("train.py", "--config", str(DEBUG), "--run-dir", str(run_dir), "--set", "train.total_env_steps=4000",
               "--set", "final_eval_episodes=0", *ship, "--publish")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stderr and json.loads(out.stdout)["episodes"] == 4
    shipped = json.loads((tmp_path / "pub" / "r.json").read_text())  # --publish: the summary and the checkpoint
    assert shipped["episodes"] == 4 and shipped["checkpoint"] == str(tmp_path / "pub" / "c.pt")
    run_ckpt, published = load_checkpoint(run_dir / CHECKPOINT_NAME), load_checkpoint(tmp_path / "pub" / "c.pt")
    assert "segments" in run_ckpt["trainer"]["replay"]  # the run's replay lives in replay/ beside its checkpoint
    assert published["trainer"]["replay"]["lengths"].tolist() == [125] * 4  # the published copy is self-contained
    for k, v in run_ckpt["trainer"]["model"].items():
        assert torch.equal(published["trainer"]["model"][k], v)
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    assert [int(float(r["step"])) for r in rows] == [1000, 2000, 3000, 4000]
    # evaluate.py reads everything from the checkpoint
    result_path = tmp_path / "eval.json"
    out = _run("evaluate.py", "--checkpoint", str(run_dir / CHECKPOINT_NAME), "--episodes", "2", "--seed", "5",
               "--out", str(result_path), "--device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert len(result["returns"]) == 2 and result["env_steps"] == 4000
    default = _run("evaluate.py", "--checkpoint", str(run_dir / CHECKPOINT_NAME), "--episodes", "1", "--device", "cpu")
    beside = run_dir / "checkpoint_eval.json"  # without --out: next to the checkpoint, never into results/
    assert default.returncode == 0 and f"wrote {beside}" in default.stderr
    assert len(json.loads(beside.read_text())["returns"]) == 1
    assert result["return_mean"] == pytest.approx(np.mean(result["returns"]), abs=0.01)
    with pytest.raises(ValueError, match="unknown controller 'dcem'.*available: cem"):
        evaluate(load_checkpoint(run_dir / CHECKPOINT_NAME), EvalOptions(controller="dcem", episodes=1))
    # a slim copy (export_slim): no replay, no optimizer; it evaluates exactly like the full one, is much smaller,
    # and phase 2 refuses it with the way out
    slim_path = tmp_path / "pub" / "slim.pt"
    out = _run("train.py", "--config", str(DEBUG), "--run-dir", str(run_dir), "--set", "train.total_env_steps=4000",
               "--set", "final_eval_episodes=0", "--set", f"export_checkpoint={slim_path}", "--set", "export_slim=true",
               "--publish")
    assert out.returncode == 0, out.stderr[-3000:]
    slim = load_checkpoint(slim_path)
    assert slim["trainer"]["slim"] is True and not {"optimizer", "replay"} & set(slim["trainer"])
    assert slim_path.stat().st_size < 0.6 * (tmp_path / "pub" / "c.pt").stat().st_size
    slim_result = evaluate(slim, EvalOptions(episodes=2, seed=5, out=tmp_path / "slim_eval.json", device="cpu"))
    assert slim_result["returns"] == result["returns"] and slim_result["env_steps"] == 4000
    out = _run("train.py", "--config", "configs/dcem/debug.yaml", "--set", f"phase1_checkpoint={slim_path}",
               "--run-dir", str(tmp_path / "phase2"))
    assert out.returncode == 2 and "shipped for evaluation only" in out.stderr and "reseed_episodes=" in out.stderr
    # ... unless its planner first collects a new replay: those episodes count as environment steps, happen once per
    # run (a resume does not collect them again) and shift the evaluation schedule
    phase2 = ["train.py", "--config", "configs/dcem/debug.yaml", "--set", f"phase1_checkpoint={slim_path}",
              "--run-dir", str(tmp_path / "phase2"), "--set", "reseed_episodes=2", "--set", "final_eval_episodes=0",
              "--set", "train.eval_every=1000"]
    out = _run(*phase2, "--set", "train.total_env_steps=7000")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["env_steps"] == 7000 and summary["phase1_env_steps"] == 4000 and summary["reseed_env_steps"] == 2000
    assert [e["env_steps"] for e in summary["learning_curve"]] == [7000]  # not at 6000, right after the reseeding
    p2 = load_checkpoint(tmp_path / "phase2" / CHECKPOINT_NAME)["trainer"]
    assert p2["counters"]["reseeded"] == 1 and p2["counters"]["episodes"] == 4 + 3
    out = _run(*phase2, "--set", "train.total_env_steps=8000")
    assert out.returncode == 0 and "reseeded the replay" not in out.stderr, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["env_steps"] == 8000 and summary["reseed_env_steps"] == 2000


class _Killed(Exception):
    """Stands for a kill right after a checkpoint was written."""


def test_reseed_collects_in_batches_and_a_killed_collection_resumes() -> None:
    """Phase 2's reseeding plans for ``n_envs`` environments at once, saves after every batch, and a run killed after
    the first batch collects only what is missing on resume, to the same replay and counters as an unkilled run."""
    from dcem_agents.experiments import dcem
    from dcem_agents.training.latent_phase import LatentPhaseTrainer

    p1 = _config()
    cfg = build(dcem.Config, load_yaml(ROOT / "configs" / "dcem" / "debug.yaml"))

    def trainer(save_fn=None):
        torch.manual_seed(0)  # the same model weights in every trainer
        env_fn, model, latent = dcem.build_latent_agent(p1, cfg, torch.device("cpu"))
        t = LatentPhaseTrainer(env_fn, model, latent, cfg.train, cfg.decoder_training, cfg.seed, p1.action_repeat,
                               save_fn=save_fn)
        cem = dcem.named_controller("cem", p1, model, latent, torch.device("cpu"))
        batches: list[int] = []
        act = cem.act
        cem.act = lambda belief, generator=None: (batches.append(belief.shape[0]), act(belief, generator))[1]
        return t, cem, batches

    whole, cem, batches = trainer()
    next_eval = whole.counters["next_eval"]
    returns = whole.reseed(cem, 3, n_envs=2)
    c = whole.counters
    steps_per_episode = 1000 // p1.action_repeat
    assert batches == [2] * steps_per_episode + [1] * steps_per_episode  # one planning call per step for the batch
    assert len(whole.replay) == 3 and len(returns) == 3
    assert (c["reseeded"], c["reseed_done"], c["episodes"], c["env_steps"], c["reseed_env_steps"]) == (1, 3, 3, 3000, 3000)
    assert c["next_eval"] == next_eval + 3000 and c["reseed_return_sum"] == pytest.approx(sum(returns))
    assert whole.reseed(cem, 3, n_envs=2) == []  # done once per run

    saved: list[dict] = []

    def save_then_kill(state: dict) -> None:
        saved.append(state)
        raise _Killed

    killed, cem, _ = trainer(save_then_kill)
    with pytest.raises(_Killed):
        killed.reseed(cem, 3, n_envs=2)
    assert len(saved) == 1 and saved[0]["counters"]["reseed_done"] == 2 and not saved[0]["counters"]["reseeded"]
    resumed, cem, batches = trainer()
    resumed.load_state_dict(saved[0])
    assert len(resumed.replay) == 2
    assert len(resumed.reseed(cem, 3, n_envs=2)) == 1 and batches == [1] * steps_per_episode
    assert resumed.counters == c
    for i in range(3):
        for a, b in zip(resumed.replay.episode(i), whole.replay.episode(i)):
            np.testing.assert_array_equal(a, b)
    # a resume that asks for fewer episodes than were collected keeps them, and completes the reseeding
    fewer, cem, batches = trainer()
    fewer.load_state_dict(saved[0])
    assert fewer.reseed(cem, 1, n_envs=2) == [] and batches == []
    assert (fewer.counters["reseeded"], fewer.counters["reseed_done"], len(fewer.replay)) == (1, 2, 2)
    assert fewer.counters["next_eval"] == next_eval + 2000
    with pytest.raises(ValueError, match="n_envs"):
        trainer()[0].reseed(cem, 3, n_envs=0)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    """SIGKILL a train.py run after a checkpoint, resume it, and compare with an uninterrupted run."""
    args = ["--config", str(DEBUG), "--set", "train.total_env_steps=6000", "--set", "final_eval_episodes=0"]
    straight = tmp_path / "straight"
    assert _run("train.py", *args, "--run-dir", str(straight)).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "train.py", *args, "--run-dir", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpt = killed / CHECKPOINT_NAME
        if ckpt.exists():
            try:
                if load_checkpoint(ckpt)["trainer"]["counters"]["episodes"] >= 4:
                    break
            except Exception:  # noqa: BLE001 - being replaced right now
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _run("train.py", *args, "--run-dir", str(killed)).returncode == 0
    a = inline_replay(load_checkpoint(straight / CHECKPOINT_NAME), straight / CHECKPOINT_NAME)["trainer"]
    b = inline_replay(load_checkpoint(killed / CHECKPOINT_NAME), killed / CHECKPOINT_NAME)["trainer"]
    assert a["counters"]["episodes"] == b["counters"]["episodes"] == 6
    for key, value in a["replay"].items():
        np.testing.assert_array_equal(value, b["replay"][key], err_msg=key)
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(("per_step", "updates", "credit"), [(0.1, 25, 0.0), (0.013, 3, 0.25)])
def test_updates_per_step_pays_for_the_agent_steps_collected(tmp_path: Path, per_step: float, updates: int,
                                                             credit: float) -> None:
    """2 seed episodes of 125 agent steps earn 250 x per_step gradient steps before the third; the remainder waits."""
    from dcem_agents.experiments.planet import train

    summary = train(_config(f"train.updates_per_step={per_step}", "final_eval_episodes=0"), tmp_path)
    assert summary["updates"] == updates
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)["trainer"]["counters"]
    assert state["update_credit"] == pytest.approx(credit) and state["new_steps"] == 125  # the third episode's steps


def test_a_budget_spent_in_the_seed_episodes_warns_of_an_untrained_model(tmp_path: Path) -> None:
    p = _run("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(tmp_path / "run"),
                   "--set", "train.total_env_steps=500", "--set", "final_eval_episodes=1")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "the world model was never trained" in p.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["updates"] == 0
