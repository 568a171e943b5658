"""The value head end to end: trained in phase 1 (model.value), added in phase 2 (value_head), carried into SB3."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO

from _scripts import run_script
from dcem_agents import EmbeddedDCEMPolicy
from dcem_agents.models.rssm import RSSM
from dcem_agents.sb3 import load_components, make_belief_vec_env
from dcem_agents.training import load_checkpoint


def test_phase1_with_a_value_head_trains_it_and_evaluates(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_script("train.py", "--config", "configs/planet/debug.yaml", "--run-dir", str(run_dir),
                     "--set", "model.value=true", "--set", "model.value_discount=0.95",
                     "--set", "final_eval_episodes=1")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    losses = [float(r["train/value"]) for r in rows if r.get("train/value")]
    assert losses and all(math.isfinite(v) for v in losses)  # the value term is trained and logged
    state = load_checkpoint(run_dir / "checkpoint.pt", "planet")["trainer"]["model"]
    assert state["value_head.4.weight"].abs().max() > 0  # it moved from its zero start
    assert float(state["value_discount"]) == np.float32(0.95)
    result = json.loads(out.stdout)
    assert math.isfinite(result["eval_return_mean"])


def test_phase2_adds_a_value_head_that_sb3_carries(phase1_checkpoint: Path, tmp_path: Path) -> None:
    """A value-less phase-1 model gets the head in phase 2: the phase-1 weights load unchanged, the head is pretrained
    alone, then trained with the model; the phase-2 checkpoint, its evaluation and the SB3 policy all have it."""
    run_dir = tmp_path / "phase2"
    out = run_script("train.py", "--config", "configs/dcem/debug.yaml", "--run-dir", str(run_dir),
                     "--set", f"phase1_checkpoint={phase1_checkpoint}", "--set", "value_head=true",
                     "--set", "value_pretrain_updates=5", "--set", "final_eval_episodes=1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "value head pretraining" in out.stderr
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", "dcem")
    assert ckpt["phase1_config"]["model"]["value"] is True and ckpt["trainer"]["counters"]["value_pretrained"] == 1
    comps = load_components(run_dir / "checkpoint.pt")
    assert comps.model.value_head is not None and comps.model.value_head[4].weight.abs().max() > 0
    # a resume does not pretrain again
    again = run_script("train.py", "--config", "configs/dcem/debug.yaml", "--run-dir", str(run_dir),
                       "--set", f"phase1_checkpoint={phase1_checkpoint}", "--set", "value_head=true",
                       "--set", "value_pretrain_updates=5", "--set", "final_eval_episodes=0",
                       "--set", "train.total_env_steps=5500")
    assert again.returncode == 0 and "value head pretraining:" not in again.stderr, again.stderr[-3000:]
    # every controller of the checkpoint plans with it
    ev = run_script("evaluate.py", "--checkpoint", str(run_dir / "checkpoint.pt"), "--controller", "dcem,cem",
                    "--episodes", "1", "--out", str(tmp_path / "eval.json"), "--device", "cpu")
    assert ev.returncode == 0, ev.stderr[-3000:]
    # SB3: the policy's world model has the head, and it survives save and load
    env = make_belief_vec_env(run_dir / "checkpoint.pt", n_envs=1, seed=0)
    model = PPO(EmbeddedDCEMPolicy, env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(checkpoint=str(run_dir / "checkpoint.pt")))
    assert model.policy.world_model.value_head is not None
    resumed = load_components(run_dir / "checkpoint.pt")  # trained on by the resume
    torch.testing.assert_close(model.policy.world_model.value_head[4].weight, resumed.model.value_head[4].weight,
                               rtol=0, atol=0)
    model.learn(16)
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
    obs = model.env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_phase1_optimizer_state_loads_around_an_added_head() -> None:
    """The phase-1 Adam state carries over to the old parameters when a value head is added (it starts without
    state)."""
    from dcem_agents.experiments.dcem import _load_optimizer

    torch.manual_seed(0)
    old = RSSM(3, 1, 8, 8)
    old_opt = torch.optim.Adam(old.parameters(), lr=1e-3)
    obs, actions, rewards = torch.randn(2, 6, 3), torch.randn(2, 5, 1), torch.randn(2, 5)
    sum(old.loss(obs, actions, rewards).values()).backward()
    old_opt.step()
    new = RSSM(3, 1, 8, 8, value=True)
    new.load_state_dict(old.state_dict(), strict=False)
    new_opt = torch.optim.Adam(new.parameters(), lr=1e-3)
    _load_optimizer(new_opt, old_opt.state_dict())
    for p_old, p_new in zip(old.parameters(), new.parameters()):
        assert torch.equal(old_opt.state[p_old]["exp_avg_sq"], new_opt.state[p_new]["exp_avg_sq"])
    assert all(p not in new_opt.state for p in new.value_head.parameters())
