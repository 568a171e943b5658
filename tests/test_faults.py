"""Hostile and broken inputs: checkpoints never run code, older numpy-replay checkpoints still load."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dcem_agents.training import CheckpointError, load_checkpoint, save_checkpoint
from dcem_agents.training.checkpoint import CHECKPOINT_FORMAT
from dcem_agents.training.replay import EpisodeReplay

sys.path.insert(0, str(Path(__file__).parent))
from _scripts import run_main, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this object runs a command that creates ``marker`` (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"format": CHECKPOINT_FORMAT, "experiment": "planet", "config": {}, "trainer": _Payload(marker)}, path)
    return path


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = _crafted(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_evaluate_refuses_a_crafted_checkpoint_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = _crafted(tmp_path / "evil.pt", marker)
    for args in (["--checkpoint", str(evil)], ["--entry", str(evil), "--episodes", "1"]):
        p = run_script("evaluate.py", *args)
        assert p.returncode == 2, p.stderr[-2000:]
        assert "never unpickled" in p.stderr
        assert not marker.exists()


def test_the_crafted_file_would_run_code_under_plain_pickle(tmp_path: Path) -> None:
    """The guard above is meaningful: the same bytes run the command when unpickled without restrictions."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Payload(marker))
    pickle.loads(payload)  # noqa: S301 - deliberately, to show the payload works
    assert marker.exists()


def test_replay_checkpoints_hold_tensors_and_older_numpy_ones_still_load(tmp_path: Path) -> None:
    replay = EpisodeReplay(3, 1, capacity=100)
    rng = np.random.default_rng(0)
    for length in (4, 6):
        replay.add_episode(rng.normal(size=(length + 1, 3)).astype(np.float32),
                           rng.uniform(-1, 1, (length, 1)).astype(np.float32),
                           rng.normal(size=length).astype(np.float32), terminated=False)
    state = replay.state_dict()
    assert all(torch.is_tensor(v) for k, v in state.items() if k in ("obs", "actions", "rewards", "lengths"))
    new = save_checkpoint(tmp_path / "new.pt", "planet", {}, {"replay": state})
    old_state = {k: v.numpy() if torch.is_tensor(v) else v for k, v in state.items()}
    old = save_checkpoint(tmp_path / "old.pt", "planet", {}, {"replay": old_state})
    for path in (new, old):
        restored = EpisodeReplay(3, 1, capacity=100)
        restored.load_state_dict(load_checkpoint(path)["replay"])
        for a, b in zip(restored._obs, replay._obs):
            np.testing.assert_array_equal(a, b)
        assert restored.total_episodes == replay.total_episodes


def test_shipped_checkpoints_load_safely() -> None:
    root = Path(__file__).parent.parent / "checkpoints"
    for name in ("planet_cartpole_swingup.pt", "dcem_cartpole_swingup.pt", "ppo_cartpole_swingup.pt"):
        assert load_checkpoint(root / name)["format"] == CHECKPOINT_FORMAT


class _NaNAfter(__import__("gymnasium").Wrapper):
    """Returns a NaN observation (or reward) at agent step ``at``."""

    def __init__(self, env, at: int, where: str = "obs") -> None:  # noqa: ANN001
        super().__init__(env)
        self.at, self.where, self.t = at, where, 0

    def reset(self, **kwargs):  # noqa: ANN003, ANN201
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):  # noqa: ANN001, ANN201
        obs, reward, term, trunc, info = self.env.step(action)
        self.t += 1
        if self.t == self.at:
            if self.where == "obs":
                obs = np.full_like(obs, np.nan)
            else:
                reward = float("inf")
        return obs, reward, term, trunc, info


@pytest.mark.parametrize("where", ["obs", "reward"])
def test_a_non_finite_environment_stops_the_rollout_with_a_clear_error(where: str) -> None:
    from dcem_agents.envs import make_env
    from dcem_agents.models.rssm import RSSM
    from dcem_agents.training.rollout import NonFiniteEnvironmentError, RandomController, run_episodes

    env = _NaNAfter(make_env("Pendulum-v1", action_repeat=1), at=3, where=where)
    model = RSSM(3, 1, 8, 8)
    with pytest.raises(NonFiniteEnvironmentError, match=r"Pendulum-v1.*non-finite.*seed 7, at agent step 3"):
        run_episodes([env], model, RandomController(torch.tensor([-2.0]), torch.tensor([2.0])), [7],
                     generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_updates_are_skipped_then_stop_the_run() -> None:
    from dcem_agents.config import apply_overrides, build, load_yaml
    from dcem_agents.experiments.planet import Config, build_agent
    from dcem_agents.training.planet import NonFiniteTrainingError, PlanetTrainer

    root = Path(__file__).parent.parent
    cfg = build(Config, apply_overrides(load_yaml(root / "configs/planet/debug.yaml"),
                                         ["train.max_nonfinite_updates=3", "train.updates_per_episode=2"]))
    env_fn, model, controller = build_agent(cfg, torch.device("cpu"))
    trainer = PlanetTrainer(env_fn, model, controller, cfg.train, cfg.seed, cfg.action_repeat)
    rng = np.random.default_rng(0)
    for _ in range(2):
        trainer.replay.add_episode(rng.normal(size=(21, 5)).astype(np.float32),
                                   rng.uniform(-1, 1, (20, 1)).astype(np.float32),
                                   rng.normal(size=20).astype(np.float32))
    trainer._update()  # finite: a real step
    assert trainer.counters["updates"] == 2
    with torch.no_grad():
        model.reward_head[4].bias.fill_(float("nan"))  # every later loss is NaN
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer._update()  # two skipped steps: nothing changes, nothing is counted
    assert trainer.counters["updates"] == 2 and trainer.counters["skipped_updates"] == 2
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], equal_nan=True)
    with pytest.raises(NonFiniteTrainingError, match="3 model updates in a row"):
        trainer._update()


@pytest.mark.parametrize(("config", "override", "message"), [
    ("configs/planet/debug.yaml", "env_id=NoSuchEnv-v0", "doesn't exist"),
    ("configs/planet/debug.yaml", "env_id=CartPole-v1", "unsupported action space Discrete"),
    ("configs/dcem/debug.yaml", "phase1_checkpoint=nowhere.pt", "checkpoint not found: nowhere.pt"),
    ("configs/ppo/debug.yaml", "phase2_checkpoint=checkpoints/planet_cartpole_swingup.pt", "expected 'dcem'"),
    ("configs/ppo/debug.yaml", "ppo.gamma=1.5", "need 0 < gamma <= 1"),
    ("configs/ppo/debug.yaml", "ppo.batch_size=1", "batch_size >= 2"),
    ("configs/ppo/debug.yaml", "ppo.batch_size=64", "exceeds a rollout"),
    ("configs/ppo/debug.yaml", "policy.train_components=[decoder, critic]", "'critic' is not a component"),
    ("configs/ppo/cartpole_swingup.yaml", "policy.grad_iters=11", "exceeds the 10 iterations of the phase-2 planner"),
    ("configs/ppo/cartpole_swingup.yaml", "policy.update_iters=11", "update_iters=11 exceeds the 10 iterations"),
    ("configs/ppo/debug.yaml", "policy.update_iters=0", "policy.update_iters must be >= 1"),
    ("configs/ppo/debug.yaml", "policy.value_input=plan", "value_input"),
    ("configs/baselines/debug.yaml", "algo_kwargs.batch_size=0", "algo_kwargs.batch_size must be an integer >= 1"),
    ("configs/baselines/debug.yaml", "algo_kwargs.gamma=2", "algo_kwargs.gamma must be a number in [0.0, 1.0]"),
    ("configs/baselines/debug.yaml", "device=gpu", "device must be one of auto, cpu, cuda (or cuda:N), got 'gpu'"),
    ("configs/ppo/debug.yaml", "device=cuda:x", "device must be one of auto, cpu, cuda (or cuda:N)"),
    ("configs/demo_rastrigin.yaml", "num_threads=-1", "num_threads must be >= 0"),
    ("configs/cartpole_embed.yaml", "threads=1", "unknown config key 'threads'"),
    ("configs/planet/debug.yaml", "train.learning_rate=nan", "'train.learning_rate' must be a finite number"),
    ("configs/planet/debug.yaml", "model.min_std=.inf", "'model.min_std' must be a finite number"),
    ("configs/planet/debug.yaml", "model.hidden_size=[unclosed", "not valid YAML (line 1, column 10)"),
    ("configs/planet/debug.yaml", "seed=-1", "seed must be an integer in [0, 2**63)"),
    ("configs/planet/debug.yaml", "name=x/../../escaped", "must not contain a path separator"),
])
def test_train_validates_inputs_before_the_run_folder_exists(tmp_path: Path, config: str, override: str,
                                                            message: str) -> None:
    runs = tmp_path / "runs"
    p = run_main("train.py", "--config", config, "--runs-dir", str(runs), "--set", override)
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if line.startswith("train.py:")]
    assert len(lines) == 1 and message in lines[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert not runs.exists()


def test_hostile_config_files_give_one_line(tmp_path: Path) -> None:
    """A YAML syntax error (a tab), non-UTF-8 bytes, a "billion laughs" alias bomb and a key given twice: one line,
    no traceback."""
    tab = tmp_path / "tab.yaml"
    tab.write_text("experiment: planet\nmodel:\n\thidden_size: 3\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"experiment: planet\nname: \xff\xfe\n")
    bomb = tmp_path / "bomb.yaml"
    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb.write_text("experiment: planet\n" + "\n".join(levels) + "\n")
    duplicate = tmp_path / "duplicate.yaml"  # PyYAML alone would silently run the last one: a PPO preset
    duplicate.write_text("experiment: planet\nname: debug\nexperiment: ppo\n")
    for path, message in ((tab, "not valid YAML (line 3, column 1)"), (binary, "cannot be read as UTF-8"),
                          (bomb, "expands to more than 100,000 values through YAML aliases"),
                          (duplicate, "key 'experiment' is given twice (line 3)")):
        p = run_main("train.py", "--config", str(path), "--runs-dir", str(tmp_path / "runs"))
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_without_a_gpu_is_refused_before_the_run_folder_exists(tmp_path: Path) -> None:
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--runs-dir", str(tmp_path / "runs"),
                 "--set", "device=cuda")
    assert p.returncode == 2 and "device 'cuda' was requested but this machine has no CUDA GPU" in p.stderr
    assert not (tmp_path / "runs").exists()


def test_the_resume_guard_reads_the_checkpoints_config(tmp_path: Path) -> None:
    """config.yaml emptied (a kill while it was written, before it was atomic) or deleted: the checkpoint's own
    config still refuses a changed key; a corrupt config.yaml without a checkpoint is one line."""
    run = tmp_path / "run"
    first = run_script("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(run),
                       "--set", "train.total_env_steps=2000")
    assert first.returncode == 0, first.stderr[-2000:]
    (run / "config.yaml").write_text("")
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(run), "--set", "seed=9")
    assert p.returncode == 2 and "other values of seed;" in p.stderr
    (run / "config.yaml").unlink()
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(run), "--set", "planner.n_samples=64")
    assert p.returncode == 2 and "other values of planner.n_samples;" in p.stderr
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text("a: [\n")
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(fresh))
    assert p.returncode == 2 and "config.yaml cannot be read" in p.stderr and "Traceback" not in p.stderr


def test_phase2_refuses_a_phase1_model_that_was_never_trained(tmp_path: Path) -> None:
    """A phase-1 budget spent on seed episodes leaves an untrained model (phase 1 warns); phase 2 refuses it."""
    p1 = tmp_path / "p1"
    first = run_script("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(p1),
                       "--set", "train.total_env_steps=2000", "--set", "final_eval_episodes=0")
    assert first.returncode == 0, first.stderr[-2000:]
    p = run_main("train.py", "--config", "configs/dcem/debug.yaml", "--runs-dir", str(tmp_path / "runs"),
                 "--set", f"phase1_checkpoint={p1 / 'checkpoint.pt'}")
    assert p.returncode == 2 and "its world model was never trained (0 updates in 2000 env steps" in p.stderr
    assert not (tmp_path / "runs").exists()


def test_a_phase2_run_resumes_without_its_phase1_checkpoint(tmp_path: Path, phase1_checkpoint: Path) -> None:
    """The phase-2 checkpoint holds the phase-1 config and all the state: a resume needs no phase-1 file."""
    import shutil

    p1 = tmp_path / "p1" / "checkpoint.pt"
    shutil.copytree(phase1_checkpoint.parent, p1.parent)
    run = tmp_path / "p2"
    args = ("train.py", "--config", "configs/dcem/debug.yaml", "--run-dir", str(run), "--set", f"phase1_checkpoint={p1}")
    first = run_script(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(p1.parent)
    again = run_script(*args, "--set", "train.total_env_steps=6000")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed phase 2" in again.stderr
    assert json.loads((run / "summary.json").read_text())["env_steps"] >= 6000


def test_a_resume_with_a_changed_config_key_names_the_keys(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = run_script("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(run))
    assert first.returncode == 0, first.stderr[-2000:]
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(run),
                 "--set", "model.hidden_size=32", "--set", "train.total_env_steps=3500")
    assert p.returncode == 2
    assert "other values of model.hidden_size;" in p.stderr  # total_env_steps is safe to change, so not named
    # lowered below the 3,000 steps it has trained: it would stop at once and publish 3,000 steps as 1,000
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(run),
                 "--set", "train.total_env_steps=1000")
    assert p.returncode == 2 and "has trained 3,000 steps already, past the new train.total_env_steps=1,000" in p.stderr
    ok = run_script("train.py", "--run-dir", str(run), "--set", "train.total_env_steps=3500")  # its own config.yaml
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["env_steps"] >= 3500


def _progress(run: Path) -> list[dict[str, str]]:
    import csv

    with (run / "progress.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(f)]


def test_a_restart_after_a_kill_before_the_first_checkpoint_keeps_one_log(tmp_path: Path) -> None:
    """A killed first attempt leaves rows but no checkpoint: the restart must not append to them."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_script("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(whole)).returncode == 0
    killed.mkdir()
    rows = (whole / "progress.csv").read_text().splitlines()
    (killed / "progress.csv").write_text("\n".join(rows[:3]) + "\n")  # what the killed attempt had logged
    (killed / "config.yaml").write_text((whole / "config.yaml").read_text())
    p = run_script("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(killed))
    assert p.returncode == 0, p.stderr[-2000:]
    assert _progress(killed) == _progress(whole)
    steps = [r["step"] for r in _progress(killed)]
    assert len(steps) == len(set(steps))


def _sb3_rows(run: Path) -> list[dict[str, str]]:
    import csv

    with (run / "progress.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_ppo_run_loses_no_update_and_keeps_one_log(phase2_checkpoint: Path, tmp_path: Path) -> None:
    """Checkpoints at rollout boundaries: stopping after 32 timesteps and resuming to 64 makes the same updates."""
    common = ["--config", "configs/ppo/debug.yaml", "--set", f"phase2_checkpoint={phase2_checkpoint}",
              "--set", "eval_episodes=0"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_script("train.py", *common, "--run-dir", str(whole)).returncode == 0
    first = run_script("train.py", *common, "--run-dir", str(parts), "--set", "total_timesteps=32")
    assert first.returncode == 0, first.stderr[-2000:]
    (parts / "model.zip").unlink()
    second = run_script("train.py", *common, "--run-dir", str(parts))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed PPO from" in second.stderr
    from stable_baselines3 import PPO

    rows_whole, rows_parts = _sb3_rows(whole), _sb3_rows(parts)
    assert [r["time/total_timesteps"] for r in rows_parts] == [r["time/total_timesteps"] for r in rows_whole]
    assert not list(parts.glob("progress_*.csv"))
    n_updates = [PPO.load(run / "sb3_checkpoints" / "ppo_64_steps.zip", device="cpu")._n_updates for run in (whole, parts)]
    assert n_updates[0] == n_updates[1] == 2 * 2  # 2 rollouts x 2 epochs: no update lost at the resume


def test_evaluations_added_on_resume_measure_the_phase2_start(phase2_checkpoint: Path, tmp_path: Path) -> None:
    """A PPO run trained without evaluations and resumed with them: "before" is the phase-2 controller (as in a run
    that evaluated from the start), not the fine-tuned weights the resumed run holds."""
    common = ["--config", "configs/ppo/debug.yaml", "--set", f"phase2_checkpoint={phase2_checkpoint}"]
    fresh, late = tmp_path / "fresh", tmp_path / "late"
    p = run_script("train.py", *common, "--set", "eval_episodes=1", "--run-dir", str(fresh))
    assert p.returncode == 0, p.stderr[-2000:]
    p = run_script("train.py", *common, "--set", "eval_episodes=0", "--run-dir", str(late))
    assert p.returncode == 0, p.stderr[-2000:]
    shipped = tmp_path / "shipped.json"  # and --publish ships the evaluations' episodes with the summary
    p = run_script("train.py", *common, "--set", "eval_episodes=1", "--run-dir", str(late), "--publish",
                   "--set", f"results_json={shipped}", "--set", f"export_checkpoint={tmp_path / 'shipped.pt'}")
    assert p.returncode == 0, p.stderr[-2000:]
    summaries = [json.loads((run / "summary.json").read_text()) for run in (fresh, late)]
    assert summaries[1]["before"]["returns"] == summaries[0]["before"]["returns"]
    assert summaries[1]["after"]["returns"] == summaries[0]["after"]["returns"]
    assert summaries[0]["before"]["returns"] != summaries[0]["after"]["returns"]  # the weights PPO changed act otherwise
    assert {k: json.loads(shipped.read_text())[k] for k in ("before", "after")} == \
        {k: summaries[1][k] for k in ("before", "after")}
    # a finished run run again keeps its evaluations; other evaluation settings replace both
    p = run_script("train.py", *common, "--set", "eval_episodes=1", "--run-dir", str(late))
    assert p.returncode == 0 and "before PPO" not in p.stderr and "after PPO" not in p.stderr, p.stderr[-2000:]
    p = run_script("train.py", *common, "--set", "eval_episodes=1", "--set", "eval_seed=7", "--run-dir", str(late))
    assert p.returncode == 0 and "before PPO" in p.stderr and "after PPO" in p.stderr, p.stderr[-2000:]
    assert json.loads((late / "summary.json").read_text())["before"]["seed"] == 7


def test_phase2_log_counts_environment_steps_only(phase2_checkpoint: Path) -> None:
    """Pretraining used to log rows at decoder-update counts, mixed into a column of environment steps."""
    rows = _sb3_rows(phase2_checkpoint.parent)
    steps = [int(float(r["step"])) for r in rows]
    assert steps == sorted(set(steps))  # increasing, no duplicates
    assert min(steps) >= 3000  # the debug phase-1 checkpoint's environment steps: pretraining is logged there
    assert sum(1 for r in rows if r.get("pretrain/decoder_updates")) == 1


# ---------------------------------------------------------------- resume = uninterrupted, for every experiment
def _sb3_stop_and_resume(common: list[str], tmp_path: Path, key: str, total: int, stop: int) -> tuple[Path, Path]:
    """An uninterrupted run to ``total`` and one stopped at ``stop`` then resumed to ``total``."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    p = run_script("train.py", *common, "--run-dir", str(whole), "--set", f"{key}={total}")
    assert p.returncode == 0, p.stderr[-2000:]
    for steps in (stop, total):
        p = run_script("train.py", *common, "--run-dir", str(parts), "--set", f"{key}={steps}")
        assert p.returncode == 0, p.stderr[-2000:]
    return whole, parts


@pytest.mark.slow
def test_a_resumed_sac_run_is_the_uninterrupted_one(tmp_path: Path) -> None:
    """Same episodes, same random numbers, same log rows (every column but time/*) as a run that never stopped.

    Before the exact-resume state, a resumed SAC run restarted its episode and reseeded its generators: the rows
    after the resume differed (checked below by deleting the resume files)."""
    common = ["--config", "configs/baselines/debug.yaml", "--set", "checkpoint_every=200", "--set", "eval_every=200"]
    whole, parts = _sb3_stop_and_resume(common, tmp_path, "env_steps", 800, 400)
    assert len(_progress(whole)) >= 4 and _progress(parts) == _progress(whole)
    assert json.loads((parts / "summary.json").read_text())["evaluations"] == \
        json.loads((whole / "summary.json").read_text())["evaluations"]
    # control: the same resume without the resume state (what the zip alone gives) does not reproduce the run
    blind = tmp_path / "blind"
    assert run_script("train.py", *common, "--run-dir", str(blind), "--set", "env_steps=400").returncode == 0
    for path in (blind / "sb3_checkpoints").glob("sac_resume_*"):
        path.unlink()
    assert run_script("train.py", *common, "--run-dir", str(blind), "--set", "env_steps=800").returncode == 0
    assert _progress(blind)[:2] == _progress(whole)[:2] and _progress(blind) != _progress(whole)


@pytest.mark.slow
def test_a_resumed_ppo_run_is_the_uninterrupted_one(phase2_checkpoint: Path, tmp_path: Path) -> None:
    """PPO with reward normalization: environments, VecNormalize returns, generators and the losses logged with
    the next row all come back."""
    common = ["--config", "configs/ppo/debug.yaml", "--set", f"phase2_checkpoint={phase2_checkpoint}",
              "--set", "eval_episodes=1", "--set", "normalize_reward=true"]
    whole, parts = _sb3_stop_and_resume(common, tmp_path, "total_timesteps", 128, 64)
    rows = _progress(whole)
    assert len(rows) == 4 and all(r["train/loss"] for r in rows[1:])
    assert _progress(parts) == rows
    after = [json.loads((run / "summary.json").read_text())["after"]["returns"] for run in (whole, parts)]
    assert after[0] == after[1]


def _kill_at_random_points(args: list[str], run: Path, ready: Callable[[Path], bool], seed: int, kills: int = 2,
                           window: float = 6.0) -> None:
    """Start ``train.py``, SIGKILL it at a random moment (uniform over ``window`` s after ``ready(run)``: in the
    middle of a step, an update or a checkpoint write), ``kills`` times; then run it to the end."""
    rng = np.random.default_rng(seed)
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "train.py", *args, "--run-dir", str(run)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while not ready(run) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, window)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    p = run_script("train.py", *args, "--run-dir", str(run))
    assert p.returncode == 0, p.stderr[-2000:]


def _has(pattern: str) -> Callable[[Path], bool]:
    return lambda run: any(run.glob(pattern))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["planet", "dcem", "ppo", "baseline"])
def test_kill_at_random_points_and_resume_gives_the_uninterrupted_log(experiment: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    if experiment == "planet":
        args = ["--config", "configs/planet/debug.yaml", "--set", "train.total_env_steps=8000",
                "--set", "final_eval_episodes=0", "--set", "train.eval_every=2000"]
        ready = _has("checkpoint.pt")
    elif experiment == "dcem":
        phase1 = request.getfixturevalue("phase1_checkpoint")
        args = ["--config", "configs/dcem/debug.yaml", "--set", f"phase1_checkpoint={phase1}",
                "--set", "train.total_env_steps=10000", "--set", "final_eval_episodes=0"]
        ready = _has("checkpoint.pt")
    elif experiment == "ppo":
        phase2 = request.getfixturevalue("phase2_checkpoint")
        args = ["--config", "configs/ppo/debug.yaml", "--set", f"phase2_checkpoint={phase2}",
                "--set", "total_timesteps=320", "--set", "eval_episodes=0", "--set", "normalize_reward=true"]
        ready = _has("sb3_checkpoints/ppo_resume_*")
    else:
        args = ["--config", "configs/baselines/debug.yaml", "--set", "env_steps=2400", "--set", "eval_every=400",
                "--set", "checkpoint_every=200"]
        ready = _has("sb3_checkpoints/sac_resume_*")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    p = run_script("train.py", *args, "--run-dir", str(straight))
    assert p.returncode == 0, p.stderr[-2000:]
    _kill_at_random_points(args, killed, ready, seed=len(experiment))
    rows = _progress(straight)
    assert len(rows) >= 3 and _progress(killed) == rows
