"""Phase 3: ``EmbeddedDCEMPolicy`` inside stock SB3 PPO (ratio = 1, gradients, save/load, evaluate_policy, updates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize

from dcem_agents import EmbeddedDCEMPolicy
from dcem_agents.envs.make import make_env
from dcem_agents.sb3 import BeliefVecEnv, load_components, make_belief_vec_env


def _ppo(ckpt: Path, n_envs: int = 2, **policy_kwargs: object) -> PPO:
    env = make_belief_vec_env(ckpt, n_envs=n_envs, seed=0)
    return PPO(EmbeddedDCEMPolicy, env, n_steps=16, batch_size=16, n_epochs=2, seed=0, device="cpu",
               policy_kwargs=dict(checkpoint=str(ckpt), **policy_kwargs))


class _RatioProbe(BaseCallback):
    """At the end of every rollout (= the start of the update) compute PPO's ratio on the whole buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.max_deviation: list[float] = []
        self.batch_size = 8

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        policy = self.model.policy
        with torch.no_grad():
            for data in self.model.rollout_buffer.get(batch_size=self.batch_size):
                _, log_prob, _ = policy.evaluate_actions(data.observations, data.actions)
                ratio = torch.exp(log_prob - data.old_log_prob)
                self.max_deviation.append(float((ratio - 1).abs().max()))


def test_ratio_is_one_at_start_of_each_update(phase2_checkpoint: Path) -> None:
    model = _ppo(phase2_checkpoint)
    probe = _RatioProbe()
    model.learn(64, callback=probe)  # 2 rollouts, each followed by an update
    assert len(probe.max_deviation) >= 4
    assert max(probe.max_deviation) < 1e-5


@pytest.mark.parametrize("precision", [None, "fp32"])
def test_mean_action_does_not_depend_on_the_batch(phase2_checkpoint: Path, precision: str | None) -> None:
    """PPO collects with n_envs rows and updates with shuffled minibatches: a row's action must be the same in both.

    The shipped preset collects 4 at a time and updates 128 at a time."""
    model = _ppo(phase2_checkpoint, precision=precision)
    policy = model.policy
    g = torch.Generator().manual_seed(0)
    obs = torch.cat([torch.randn(128, policy.world_model.belief_dim, generator=g) * 0.5,
                     torch.randint(0, 2**24, (128, 1), generator=g).float()], 1)
    with torch.no_grad():
        whole = policy.mean_action(obs)
        parts = torch.cat([policy.mean_action(obs[i : i + 4]) for i in range(0, 128, 4)])
    torch.testing.assert_close(whole, parts, atol=1e-6, rtol=0)


def test_ratio_would_differ_with_fresh_planner_noise(phase2_checkpoint: Path) -> None:
    """The property above is not automatic: re-planning with other seeds moves the mean action."""
    model = _ppo(phase2_checkpoint)
    obs = torch.as_tensor(model.env.reset())
    policy = model.policy
    with torch.no_grad():
        a = policy.mean_action(obs)
        other = obs.clone()
        other[:, -1] += 1
        b = policy.mean_action(other)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("components", [("decoder", "reward"), ("decoder",), ("transition", "observation")])
def test_gradient_reaches_exactly_the_chosen_components(phase2_checkpoint: Path, components: tuple[str, ...]) -> None:
    model = _ppo(phase2_checkpoint, train_components=list(components))
    policy = model.policy
    obs = torch.as_tensor(model.env.reset())
    actions = torch.zeros(obs.shape[0], 1)
    _, log_prob, _ = policy.evaluate_actions(obs, actions)
    log_prob.sum().backward()
    optimized = {id(p) for g in policy.optimizer.param_groups for p in g["params"]}
    for name in ("decoder", "reward", "transition", "observation"):
        params = policy._component_parameters(name)
        if name in components:
            assert all(id(p) in optimized for p in params), name
            if name != "observation":  # the observation head is not on the planning path (imagination feeds back its mean)
                assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
        else:
            assert all(not p.requires_grad and p.grad is None and id(p) not in optimized for p in params), name


def test_pretrained_weights_survive_construction(phase2_checkpoint: Path) -> None:
    comps = load_components(phase2_checkpoint)
    policy = _ppo(phase2_checkpoint).policy
    for k, v in comps.decoder.state_dict().items():
        torch.testing.assert_close(policy.decoder.state_dict()[k], v, atol=0, rtol=0)
    for k, v in comps.model.state_dict().items():
        torch.testing.assert_close(policy.world_model.state_dict()[k], v, atol=0, rtol=0)
    torch.testing.assert_close(policy.log_std.exp(), torch.full((1,), 0.1))


def test_save_load_round_trip(phase2_checkpoint: Path, tmp_path: Path) -> None:
    model = _ppo(phase2_checkpoint)
    model.learn(32)
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
    obs = model.env.reset()
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a, b)
    for (k, v), (k2, v2) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


class _Record(VecEnvWrapper):
    """Keeps the rewards, dones and infos the wrapped env returns at every step (the terminal-observation entries
    copied before SB3 can touch them)."""

    def __init__(self, venv) -> None:  # noqa: ANN001
        super().__init__(venv)
        self.rewards: list[np.ndarray] = []
        self.dones: list[np.ndarray] = []
        self.infos: list[list[dict]] = []

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.rewards.append(np.array(rewards, np.float64))
        self.dones.append(np.array(dones))
        self.infos.append([{k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in info.items()}
                           for info in infos])
        return obs, rewards, dones, infos


def test_evaluate_policy_on_two_envs_with_vecnormalize(phase2_checkpoint: Path) -> None:
    env = VecNormalize(make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=3), norm_obs=False, norm_reward=True)
    model = PPO(EmbeddedDCEMPolicy, env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(checkpoint=str(phase2_checkpoint)))
    recorder = _Record(make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=7))
    mean, std = evaluate_policy(model, recorder, n_eval_episodes=2)
    # one whole episode per environment (1000 env steps at action repeat 8), scored in environment reward units:
    # evaluate_policy's statistics (from the monitor's episode records) equal the sums of the rewards the policy's
    # environment handed out step by step, not the normalized rewards of the training env
    rewards, dones = np.array(recorder.rewards), np.array(recorder.dones)  # (steps, 2)
    assert [int(np.flatnonzero(dones[:, i])[0]) for i in range(2)] == [124, 124]
    returns = rewards[:125].sum(0)
    assert mean == pytest.approx(returns.mean(), abs=1e-3) and std == pytest.approx(returns.std(), abs=1e-3)
    assert returns.min() > 1.0  # a real episode's reward, not an all-zero stream


class _RawInfos(VecEnvWrapper):
    """Keeps a copy of the wrapped env's infos before the belief wrapper rewrites them."""

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.raw = [dict(info) for info in infos]
        return obs, rewards, dones, infos


def test_terminal_observation_is_the_filtered_belief(phase2_checkpoint: Path) -> None:
    """SB3 bootstraps truncated episodes with V(info["terminal_observation"]): it must be a belief, not a raw obs."""
    comps = load_components(phase2_checkpoint)
    raw = _RawInfos(DummyVecEnv([lambda: make_env(comps.env_id, action_repeat=comps.action_repeat, seed=0)]))
    env = BeliefVecEnv(raw, comps.model, seed=0)
    obs = env.reset()
    action = np.full((1, 1), 0.3, np.float32)
    for step in range(1000):
        prev = obs
        obs, _, dones, infos = env.step(action)
        if dones[0]:
            break
    assert dones[0] and step == 124  # 1000 env steps at action repeat 8
    terminal = infos[0]["terminal_observation"]
    assert terminal.shape == env.observation_space.shape
    with torch.no_grad():
        expected = comps.model.observe_step(torch.as_tensor(prev[:, :-1]), torch.as_tensor(action),
                                            torch.as_tensor(raw.raw[0]["terminal_observation"][None], dtype=torch.float32))
    np.testing.assert_allclose(terminal[:-1], expected[0].numpy(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the returned observation already belongs to the next episode
        fresh = comps.model.initial(torch.as_tensor(raw.venv.buf_obs[None], dtype=torch.float32))
    np.testing.assert_allclose(obs[:, :-1], fresh.numpy(), rtol=1e-5, atol=1e-5)


class _BufferProbe(BaseCallback):
    """At the end of the rollout, before the update: the buffer's rewards and episode starts, and the value that the
    collecting policy gives the terminal observation of the first episode that ``recorder`` saw end."""

    def __init__(self, recorder: _Record) -> None:
        super().__init__()
        self.recorder = recorder

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        self.rewards = buf.rewards[:, 0].astype(np.float64).copy()
        self.episode_starts = buf.episode_starts[:, 0].copy()
        end = next(t for t, done in enumerate(self.recorder.dones) if done[0])
        obs = torch.as_tensor(self.recorder.infos[end][0]["terminal_observation"][None], dtype=torch.float32)
        with torch.no_grad():
            self.terminal_value = float(self.model.policy.predict_values(obs)[0, 0])


def test_ppo_rollout_across_an_episode_end(phase2_checkpoint: Path) -> None:
    """A rollout longer than an episode (125 agent steps) collects and updates (truncation bootstrap included)."""
    env = _Record(make_belief_vec_env(phase2_checkpoint, n_envs=1, seed=0))
    model = PPO(EmbeddedDCEMPolicy, env, n_steps=130, batch_size=65, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(checkpoint=str(phase2_checkpoint)))
    probe = _BufferProbe(env)
    model.learn(130, callback=probe)
    assert model.num_timesteps == 130 and model._n_updates == 1
    # the time limit truncates the episode after 125 steps; PPO must bootstrap that step's reward with the value of
    # the final belief (reward + γ V(terminal observation)) and leave every other reward as the env gave it
    dones = np.array(env.dones)[:, 0]
    assert np.flatnonzero(dones).tolist() == [124]
    info = env.infos[124][0]
    assert info.get("TimeLimit.truncated") and info["terminal_observation"].shape == env.observation_space.shape
    raw = np.array(env.rewards)[:, 0]
    expected = raw.copy()
    expected[124] += model.gamma * probe.terminal_value
    np.testing.assert_allclose(probe.rewards, expected, rtol=0, atol=1e-4)
    assert abs(expected[124] - raw[124]) > 1e-3  # the bootstrap term is there to be seen
    assert probe.episode_starts.tolist() == [1.0] + [0.0] * 124 + [1.0] + [0.0] * 4


def test_ppo_updates_change_only_trained_components(phase2_checkpoint: Path) -> None:
    model = _ppo(phase2_checkpoint)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(64)
    after = model.policy.state_dict()
    assert model.logger.name_to_value["train/n_updates"] > 0 or model._n_updates > 0
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("decoder.net") for k in changed)
    assert any(k.startswith("world_model.reward_head") for k in changed)
    assert not any(k.startswith(("world_model.cell", "world_model.embed", "world_model.obs_head")) for k in changed)


def test_clear_errors(phase2_checkpoint: Path, tmp_path: Path) -> None:
    comps = load_components(phase2_checkpoint)
    raw = DummyVecEnv([lambda: make_env(comps.env_id, action_repeat=comps.action_repeat, seed=0)])
    with pytest.raises(ValueError, match="BeliefVecEnv"):
        PPO(EmbeddedDCEMPolicy, raw, policy_kwargs=dict(checkpoint=str(phase2_checkpoint)), device="cpu")
    with pytest.raises(ValueError, match="unknown train_components"):
        _ppo(phase2_checkpoint, train_components=["everything"])
    with pytest.raises(ValueError, match="checkpoint"):
        PPO(EmbeddedDCEMPolicy, make_belief_vec_env(phase2_checkpoint), device="cpu")
    from dcem_agents.training import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        make_belief_vec_env(tmp_path / "missing.pt")
    assert isinstance(make_belief_vec_env(phase2_checkpoint), BeliefVecEnv)
    with pytest.raises(ValueError, match=r"a list of component names, e.g. \['decoder'\]"):
        _ppo(phase2_checkpoint, train_components="decoder")
    with pytest.raises(ValueError, match="gSDE"):
        PPO(EmbeddedDCEMPolicy, make_belief_vec_env(phase2_checkpoint), use_sde=True, device="cpu",
            policy_kwargs=EmbeddedDCEMPolicy.policy_kwargs(phase2_checkpoint))
    with pytest.raises(ValueError, match="value_arch"):
        _ppo(phase2_checkpoint, net_arch=dict(vf=[256, 256]))


def test_planner_overrides_are_checked_and_extractors_refused(phase2_checkpoint: Path) -> None:
    """0 is not "the checkpoint's" (it was silently replaced); n_elites can be set; an extractor would go unused."""
    from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN

    for key in ("n_samples", "n_iters", "n_elites"):
        with pytest.raises(ValueError, match=f"{key} must be an integer >= 1"):
            _ppo(phase2_checkpoint, **{key: 0})
    model = _ppo(phase2_checkpoint, n_samples=6, n_elites=3, n_iters=2)
    assert (model.policy.planner_settings.n_samples, model.policy.planner_settings.n_elites,
            model.policy.planner_settings.n_iters) == (6, 3, 2)
    for bad in (dict(features_extractor_class=NatureCNN), dict(features_extractor_kwargs={"features_dim": 8})):
        with pytest.raises(ValueError, match="takes no features extractor"):
            _ppo(phase2_checkpoint, **bad)
    _ppo(phase2_checkpoint, features_extractor_class=FlattenExtractor)  # SB3's default, stated: accepted


def test_make_belief_vec_env_follows_make_vec_env(phase2_checkpoint: Path) -> None:
    """seed=None draws a seed (unseeded runs differ), a Monitor wrapper replaces the VecMonitor (SB3 warns about
    both), env_kwargs reach gymnasium.make (render_mode for VecVideoRecorder)."""
    import warnings

    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import VecMonitor

    first, second = (make_belief_vec_env(phase2_checkpoint, n_envs=2).reset() for _ in range(2))
    assert not np.array_equal(first[:, -1], second[:, -1])  # the planner-noise seeds
    seeded = [make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=4).reset() for _ in range(2)]
    assert np.array_equal(*seeded)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*Monitor")  # SB3's "already wrapped with a Monitor" warning
        env = make_belief_vec_env(phase2_checkpoint, n_envs=1, seed=0, wrapper_class=Monitor)
    assert not isinstance(env.venv, VecMonitor)
    assert isinstance(make_belief_vec_env(phase2_checkpoint, seed=0).venv, VecMonitor)
    rendering = make_belief_vec_env(phase2_checkpoint, seed=0, env_kwargs={"render_mode": "rgb_array"})
    assert rendering.render_mode == "rgb_array"  # what VecVideoRecorder asserts (rendering itself needs MUJOCO_GL)


def test_action_bounds_other_than_the_decoders_are_refused(phase2_checkpoint: Path) -> None:
    import gymnasium as gym

    env = make_belief_vec_env(phase2_checkpoint)

    class Rescaled(VecEnvWrapper):  # an action space twice as wide, as a user's rescaling wrapper would declare
        def __init__(self, venv):
            super().__init__(venv, action_space=gym.spaces.Box(-2.0, 2.0, venv.action_space.shape, np.float32))

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            return self.venv.step_wait()

    with pytest.raises(ValueError, match="action bounds .* differ from those the decoder was trained in"):
        PPO(EmbeddedDCEMPolicy, Rescaled(env), device="cpu", policy_kwargs=EmbeddedDCEMPolicy.policy_kwargs(phase2_checkpoint))


def test_belief_sync_reaches_eval_envs_and_the_end_of_training(phase2_checkpoint: Path) -> None:
    """PPO training the transition model: the training env's filter and the evaluation env's (given to the callback)
    equal the policy's model after learn; sync_belief_filter does the same for an env built for a loaded model."""
    from stable_baselines3.common.monitor import Monitor

    from dcem_agents.sb3 import BeliefSyncCallback, find_belief_env, sync_belief_filter

    model = _ppo(phase2_checkpoint, train_components=["decoder", "reward", "transition"])
    eval_env = make_belief_vec_env(phase2_checkpoint, n_envs=1, seed=1, wrapper_class=Monitor)
    model.learn(48, callback=BeliefSyncCallback(eval_env))
    policy_state = model.policy.world_model.state_dict()
    changed = [k for k, v in load_components(phase2_checkpoint).model.state_dict().items()
               if not torch.equal(v, policy_state[k])]
    assert any(k.startswith("cell.") for k in changed)  # PPO did change the transition model
    for env in (model.get_env(), eval_env):
        filt = find_belief_env(env).model.state_dict()
        assert all(torch.equal(filt[k], policy_state[k]) for k in policy_state)
    fresh = make_belief_vec_env(phase2_checkpoint)
    assert not all(torch.equal(fresh.model.state_dict()[k], policy_state[k]) for k in policy_state)
    sync_belief_filter(fresh, model.policy)
    assert all(torch.equal(fresh.model.state_dict()[k], policy_state[k]) for k in policy_state)
    assert isinstance(eval_env.venv.envs[0], Monitor)  # the wrapper_class wraps each environment


def test_train_and_evaluate_scripts_phase3(phase2_checkpoint: Path, tmp_path: Path) -> None:
    """``train.py`` on the ppo debug preset (before/after evaluation, SB3 logs in the run folder), resume, evaluate."""
    import json

    from _scripts import run_script

    run_dir = tmp_path / "ppo"
    args = ["train.py", "--config", "configs/ppo/debug.yaml", "--run-dir", str(run_dir),
            "--set", f"phase2_checkpoint={phase2_checkpoint}", "--set", "ppo.normalize_advantage=false"]
    p = run_script(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    import zipfile

    with zipfile.ZipFile(run_dir / "model.zip") as z:  # the preset's PPO settings reach SB3's PPO
        assert json.loads(z.read("data"))["normalize_advantage"] is False
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ppo_timesteps"] == 64 and len(summary["before"]["returns"]) == 2 and len(summary["after"]["returns"]) == 2
    assert summary["before"]["ci95"][0] <= summary["before"]["return_mean"] <= summary["before"]["ci95"][1]
    assert (run_dir / "progress.csv").read_text().count("\n") >= 2 and (run_dir / "model.zip").exists()
    p = run_script(*args, "--set", "total_timesteps=96")  # resumes from the newest SB3 checkpoint
    assert p.returncode == 0 and "resumed PPO" in p.stderr
    assert json.loads((run_dir / "summary.json").read_text())["ppo_timesteps"] == 96
    from dcem_agents.training import load_checkpoint

    saved = load_checkpoint(run_dir / "checkpoint.pt", "ppo")  # counted across the resume: 96 timesteps x repeat 8
    assert saved["env_steps"] == 96 * 8 and saved["evaluations"][-1][0] - saved["evaluations"][0][0] == 96 * 8
    out = tmp_path / "eval.json"
    ev = run_script("evaluate.py", "--checkpoint", str(run_dir / "checkpoint.pt"), "--controller", "ppo,dcem",
                    "--episodes", "2", "--out", str(out))
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert set(json.loads(out.read_text())["controllers"]) == {"ppo", "dcem"}


def test_readme_sb3_snippet_runs(phase2_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's SB3 snippet runs as written (with the debug checkpoint and fewer steps)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "EmbeddedDCEMPolicy, env" in b]
    assert len(blocks) == 1
    code = (blocks[0].replace('"checkpoints/dcem_cartpole_swingup.pt"', repr(str(phase2_checkpoint)))
            .replace("model.learn(10_000)", "model.learn(64)").replace("n_eval_episodes=20", "n_eval_episodes=2")
            .replace("model = PPO(EmbeddedDCEMPolicy, env,",
                     "model = PPO(EmbeddedDCEMPolicy, env, n_steps=16, batch_size=16, n_epochs=1,"))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    assert (tmp_path / "ppo_dcem.zip").exists()


def test_hostile_observation_wrappers_give_one_clear_error(phase2_checkpoint: Path) -> None:
    from stable_baselines3.common.vec_env import VecFrameStack

    # VecNormalize(norm_obs=True) keeps the space but rewrites the seed column: caught at the first forward
    env = VecNormalize(make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=3), norm_obs=True, norm_reward=False)
    model = PPO(EmbeddedDCEMPolicy, env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(checkpoint=str(phase2_checkpoint)))
    with pytest.raises(ValueError, match=r"seed column holds .* VecNormalize with norm_obs=True"):
        model.learn(16)
    # frozen statistics that never moved (training=False): the values pass unchanged but are clipped to clip_obs=10,
    # so every seed arrives as 10.0 (it planned every row with the same noise, silently)
    from stable_baselines3.common.evaluation import evaluate_policy

    frozen = VecNormalize(make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=3), training=False, norm_reward=False)
    with pytest.raises(ValueError, match="every row's planner-noise seed is 10.0: the observations were clipped"):
        evaluate_policy(model, frozen, n_eval_episodes=2)
    # frame stacking changes the observation size: refused at construction
    stacked = VecFrameStack(make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=3), n_stack=2)
    with pytest.raises(ValueError, match="frame stacking"):
        PPO(EmbeddedDCEMPolicy, stacked, device="cpu", policy_kwargs=dict(checkpoint=str(phase2_checkpoint)))
    # an observation of the wrong width reaching the policy directly
    with pytest.raises(ValueError, match="expected belief_dim"):
        model.policy.get_distribution(torch.zeros(1, model.policy.world_model.belief_dim + 3))


class _Float16(VecEnvWrapper):
    """Casts observations to float16 (and says so in its space)."""

    def __init__(self, venv) -> None:  # noqa: ANN001
        import gymnasium as gym

        space = venv.observation_space
        super().__init__(venv, observation_space=gym.spaces.Box(space.low, space.high, space.shape, np.float16))

    def reset(self) -> np.ndarray:
        return self.venv.reset().astype(np.float16)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs.astype(np.float16), rewards, dones, infos


def test_a_float16_cast_is_refused(phase2_checkpoint: Path) -> None:
    env = _Float16(make_belief_vec_env(phase2_checkpoint, n_envs=1, seed=3))
    with pytest.raises(ValueError, match="float16 cast cannot hold the planner-noise seeds"):
        PPO(EmbeddedDCEMPolicy, env, device="cpu", policy_kwargs=dict(checkpoint=str(phase2_checkpoint)))


def test_subproc_vec_env_collects_what_dummy_vec_env_collects(phase2_checkpoint: Path) -> None:
    """Two worker processes step the environments; the belief filter stays here. Same seeds, same first rollout."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    buffers = []
    for cls in (None, SubprocVecEnv):
        env = make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=5, vec_env_cls=cls,
                                  vec_env_kwargs={"start_method": "spawn"} if cls else None)
        model = PPO(EmbeddedDCEMPolicy, env, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu",
                    policy_kwargs=dict(checkpoint=str(phase2_checkpoint)))
        model.learn(16)
        buf = model.rollout_buffer
        buffers.append((buf.observations.copy(), buf.actions.copy(), buf.rewards.copy()))
        env.close()
    for a, b in zip(*buffers):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_lml_rows_do_not_depend_on_the_batch() -> None:
    """PPO's ratio needs a row's soft top-k to be the same in a batch of 1, 4 and 128 (the bracketing fan varies)."""
    from dcem_agents.math import lml

    x = torch.randn(128, 100, generator=torch.Generator().manual_seed(0))
    whole = lml(x, 10, 1.0)
    for size in (1, 4):
        parts = torch.cat([lml(x[i : i + size], 10, 1.0) for i in range(0, 128, size)])
        torch.testing.assert_close(parts, whole, atol=1e-6, rtol=0)


def _ratio_at_the_shipped_batch_sizes(ckpt: Path, **policy_kwargs: object) -> float:
    """Collect 128 samples with 4 environments and compute PPO's ratio on them in one minibatch of 128, the batch
    sizes of configs/ppo/cartpole_swingup.yaml; return the largest |ratio - 1|."""
    env = make_belief_vec_env(ckpt, n_envs=4, seed=0)
    model = PPO(EmbeddedDCEMPolicy, env, n_steps=32, batch_size=128, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(checkpoint=str(ckpt), **policy_kwargs))
    probe = _RatioProbe()
    probe.batch_size = 128
    model.learn(128, callback=probe)
    assert len(probe.max_deviation) == 1
    return probe.max_deviation[0]


@pytest.mark.parametrize("arm", [{}, {"grad_iters": 1}, {"update_iters": 1}, {"value_input": "belief+plan"},
                                 {"learn_log_std": True}, {"train_components": ["decoder", "reward", "transition"]}],
                         ids=["default", "grad_iters=1", "update_iters=1", "value=belief+plan", "learned_std",
                              "+transition"])
def test_ratio_is_one_at_the_shipped_batch_sizes(phase2_checkpoint: Path, arm: dict) -> None:
    """Collection 4 rows at a time, update 128 at a time, with the debug checkpoint's small planner, for every policy
    option the PPO study varies."""
    assert _ratio_at_the_shipped_batch_sizes(phase2_checkpoint, **arm) < 1e-5


def test_value_network_on_belief_and_planned_return(phase2_checkpoint: Path, tmp_path: Path) -> None:
    """value_input="belief+plan": V sees the plan's predicted return per step; the value loss trains the value
    network only (the planned return is a constant to it); the option survives save and load."""
    model = _ppo(phase2_checkpoint, value_input="belief+plan")
    policy = model.policy
    belief_dim = policy.world_model.belief_dim
    assert policy.mlp_extractor.value_net[0].in_features == belief_dim + 1
    obs = torch.as_tensor(model.env.reset())
    mean, planned = policy.plan(obs)
    assert planned.shape == (obs.shape[0], 1) and not planned.requires_grad
    actions = policy.controller.plan(obs[:, :-1], noise=policy.planner_noise(obs[:, -1])).actions.detach()
    from dcem_agents.planning.mpc import imagined_return_cost

    expected = -imagined_return_cost(policy.world_model, obs[:, :-1])(actions.unsqueeze(1)) / actions.shape[1]
    torch.testing.assert_close(planned, expected)
    values, _, _ = policy.evaluate_actions(obs, torch.zeros(obs.shape[0], 1))
    torch.testing.assert_close(values, policy.predict_values(obs))
    shifted = policy.value_net(policy.mlp_extractor.forward_critic(torch.cat([obs[:, :-1], planned + 1.0], -1)))
    assert not torch.allclose(shifted, values)  # the planned return is an input that matters
    policy.optimizer.zero_grad()
    values.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.decoder.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.world_model.parameters())
    model.learn(32)
    model.save(tmp_path / "agent.zip")
    loaded = PPO.load(tmp_path / "agent.zip", device="cpu")
    assert loaded.policy.value_input == "belief+plan"
    torch.testing.assert_close(loaded.policy.predict_values(obs), model.policy.predict_values(obs))
    with pytest.raises(ValueError, match="value_input must be one of belief, belief\\+plan"):
        _ppo(phase2_checkpoint, value_input="plan")


@pytest.mark.slow
def test_ratio_is_one_at_the_shipped_sizes() -> None:
    """The same with the shipped phase-2 checkpoint and its own planner (100 x 10, horizon 16)."""
    ckpt = Path(__file__).parent.parent / "checkpoints" / "dcem_cartpole_swingup.pt"
    assert _ratio_at_the_shipped_batch_sizes(ckpt) < 1e-5


def test_a_saved_zip_loads_without_its_checkpoint_from_another_folder(
        phase2_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    ckpt = tmp_path / "phase2.pt"
    shutil.copyfile(phase2_checkpoint, ckpt)
    env = make_belief_vec_env(ckpt, n_envs=2, seed=0)
    model = PPO(EmbeddedDCEMPolicy, env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=EmbeddedDCEMPolicy.policy_kwargs(ckpt))
    model.learn(32)  # the trained weights differ from the checkpoint's
    obs = env.reset()
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent.zip")
    ckpt.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = PPO.load(tmp_path / "agent.zip", device="cpu")
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)
    assert loaded.policy.architecture["env_id"] == "dm_control/cartpole-swingup-v0"


@pytest.mark.parametrize("found", ["phase1", "other_phase2"])
def test_a_saved_zip_ignores_another_file_at_its_checkpoint_path(
        phase1_checkpoint: Path, phase2_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, found: str) -> None:
    """The zip records the checkpoint as a relative path; loaded in a folder where that path holds another phase's
    checkpoint, or another task's phase-2 checkpoint, it builds from its recorded architecture (a warning names the
    file) and predicts as saved."""
    import logging
    import shutil

    train_dir, other_dir = tmp_path / "train", tmp_path / "other"
    train_dir.mkdir()
    other_dir.mkdir()
    shutil.copyfile(phase2_checkpoint, train_dir / "checkpoint.pt")
    other = phase1_checkpoint if found == "phase1" else Path(__file__).resolve().parents[1] / "checkpoints" / "dcem_cartpole_swingup.pt"
    shutil.copyfile(other, other_dir / "checkpoint.pt")
    monkeypatch.chdir(train_dir)
    env = make_belief_vec_env("checkpoint.pt", n_envs=2, seed=0)
    model = PPO(EmbeddedDCEMPolicy, env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=EmbeddedDCEMPolicy.policy_kwargs("checkpoint.pt"))
    model.learn(16)
    obs = env.reset()
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent.zip")
    monkeypatch.chdir(other_dir)
    with caplog.at_level(logging.WARNING, logger="dcem_agents.training.components"):
        loaded = PPO.load(tmp_path / "agent.zip", device="cpu")
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)
    assert "recorded architecture" in caplog.text


def test_a2c_learns_with_sb3s_callbacks(phase2_checkpoint: Path, tmp_path: Path) -> None:
    """Another on-policy algorithm, with EvalCallback and CheckpointCallback as SB3's docs build them."""
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback

    env = make_belief_vec_env(phase2_checkpoint, n_envs=2, seed=0)
    model = A2C(EmbeddedDCEMPolicy, env, n_steps=8, seed=0, device="cpu",
                policy_kwargs=EmbeddedDCEMPolicy.policy_kwargs(phase2_checkpoint))
    before = [p.detach().clone() for p in model.policy.decoder.parameters()]
    eval_cb = EvalCallback(make_belief_vec_env(phase2_checkpoint, n_envs=1, seed=9), n_eval_episodes=1, eval_freq=16,
                           log_path=str(tmp_path / "eval"), verbose=0)
    model.learn(32, callback=[eval_cb, CheckpointCallback(8, str(tmp_path / "ckpts"), name_prefix="a2c")])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.decoder.parameters()))
    assert np.isfinite(eval_cb.last_mean_reward)
    # save_freq counts calls of the 2-environment VecEnv: every 8 calls is every 16 timesteps
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["a2c_16_steps.zip", "a2c_32_steps.zip"]
    A2C.load(tmp_path / "ckpts" / "a2c_32_steps.zip", device="cpu")


def test_truncated_planner_gradient_keeps_the_actions_and_the_ratio(phase2_checkpoint: Path) -> None:
    """policy grad_iters=1: PPO's loss reaches the decoder through the last DCEM iteration only; the actions, and so
    the ratio at the start of each update, are those of the untruncated policy."""
    model = _ppo(phase2_checkpoint, grad_iters=1)
    policy, full = model.policy, _ppo(phase2_checkpoint).policy
    assert policy.planner_settings.grad_iters == 1 and full.planner_settings.grad_iters is None
    obs = torch.as_tensor(model.env.reset())
    torch.testing.assert_close(policy.mean_action(obs), full.mean_action(obs), atol=0, rtol=0)
    _, log_prob, _ = policy.evaluate_actions(obs, torch.zeros(obs.shape[0], 1))
    log_prob.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.decoder.parameters())
    probe = _RatioProbe()
    model.learn(64, callback=probe)
    assert len(probe.max_deviation) >= 4 and max(probe.max_deviation) < 1e-5


def test_update_time_replanning_resumes_from_the_collection_time_distribution(phase2_checkpoint: Path) -> None:
    """update_iters=1: collection keeps each observation's distribution before the last iteration; the update
    re-plans that iteration only. Same actions as the full plan at the start (the ratio is 1), a gradient to the
    decoder, stale earlier iterations once the parameters move, and a fresh set of starts each rollout."""
    model = _ppo(phase2_checkpoint, update_iters=1)
    policy, full = model.policy, _ppo(phase2_checkpoint).policy
    obs = torch.as_tensor(model.env.reset())
    policy.set_training_mode(False)
    with torch.no_grad():
        collected, _, _ = policy(obs, deterministic=True)
    assert len(policy._starts) == obs.shape[0]
    policy.set_training_mode(True)
    resumed, _ = policy.plan(obs, reuse=True)
    torch.testing.assert_close(resumed, full.mean_action(obs), atol=1e-6, rtol=0)
    torch.testing.assert_close(collected, resumed.detach(), atol=1e-6, rtol=0)
    resumed.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.decoder.parameters())
    with torch.no_grad():  # move the decoder: the re-plan keeps its collection-time start, a full plan does not
        for p in policy.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stale, _ = policy.plan(obs, reuse=True)
    fresh, _ = policy.plan(obs)
    assert not torch.allclose(stale, fresh, atol=1e-4)
    policy.set_training_mode(False)  # the next rollout starts: the kept distributions are dropped
    assert policy._starts == {}
    with pytest.raises(ValueError, match="update_iters=3 exceeds the planner.s 2 iterations"):
        _ppo(phase2_checkpoint, update_iters=3)


def test_update_time_replanning_is_used_inside_sb3_ppo(phase2_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside PPO.learn every update minibatch finds its observations' kept distributions (the bytes SB3 stores
    are the ones the policy saw), so no update re-plans in full."""
    from dcem_agents.planning.latent_mpc import LatentDCEMController

    calls: list[tuple[bool, bool]] = []
    original = LatentDCEMController.plan

    def spy(self, belief, generator=None, noise=None, *, callback=None, start=None):  # type: ignore[no-untyped-def]
        calls.append((torch.is_grad_enabled(), start is not None))
        return original(self, belief, generator, noise, callback=callback, start=start)

    monkeypatch.setattr(LatentDCEMController, "plan", spy)
    model = _ppo(phase2_checkpoint, update_iters=1)
    model.learn(64)  # 2 rollouts of 32, 2 epochs of 2 minibatches each
    updates = [resumed for grad, resumed in calls if grad]
    assert len(updates) == 2 * 2 * 2 and all(updates)
    assert not any(resumed for grad, resumed in calls if not grad)  # collection plans in full


def test_gradient_free_plans_replay_through_the_graph_cache(phase2_checkpoint: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With the capture forced on (an eager stand-in for CUDA graphs): collection replays one capture per batch size,
    its actions and log-probabilities are those of the eager policy, PPO's update (gradients) stays eager, an
    optimizer step reaches the replay, and moving the policy drops the captures."""
    import dcem_agents.sb3.policy as policy_module
    from dcem_agents.planning.cuda_graph import EagerBackend, GraphCache

    model = _ppo(phase2_checkpoint, value_input="belief+plan")
    policy = model.policy.eval()
    g = torch.Generator().manual_seed(0)
    obs = torch.cat([torch.randn(6, policy.world_model.belief_dim, generator=g) * 0.5,
                     torch.randint(0, 2**24, (6, 1), generator=g).float()], 1)
    with torch.no_grad():
        eager_actions, eager_values, _ = policy(obs, deterministic=True)
    monkeypatch.setattr(policy_module, "use_cuda_graphs", lambda runtime, device: not torch.is_grad_enabled())
    backend = EagerBackend()
    policy._graphs = GraphCache(backend)
    with torch.no_grad():
        actions, values, log_prob = policy(obs, deterministic=True)
        policy(obs[:2])
        policy(obs)
    assert (backend.captures, backend.replays) == (2, 3)  # one capture per batch size, every call a replay
    torch.testing.assert_close(actions, eager_actions, atol=0, rtol=0)
    torch.testing.assert_close(values, eager_values, atol=0, rtol=0)
    _, new_log_prob, _ = policy.evaluate_actions(obs, actions)  # records gradients: eager, not a replay
    assert backend.replays == 3
    torch.testing.assert_close(new_log_prob.detach(), log_prob, atol=1e-6, rtol=0)
    with torch.no_grad():
        policy.decoder.net[-1].bias.add_(0.5)  # an in-place update (as an optimizer step) reaches the replay
        shifted = policy(obs, deterministic=True)[0]
    assert backend.replays == 4 and not torch.allclose(shifted, actions)
    policy.to(torch.float64).to(torch.float32)
    assert len(policy._graphs) == 0


def test_a_comparison_entry_names_the_algorithm_of_an_sb3_zip(phase2_checkpoint: Path, tmp_path: Path) -> None:
    """An A2C zip of the policy was labelled "+ PPO" in reports."""
    from stable_baselines3 import A2C

    from dcem_agents.evaluation.entries import EntrySpec, load_entry

    kwargs = EmbeddedDCEMPolicy.policy_kwargs(phase2_checkpoint, n_samples=6, n_elites=3, n_iters=2)
    for algo, label in ((A2C, "latent DCEM + A2C (SB3 zip)"), (PPO, "latent DCEM + PPO (SB3 zip)")):
        algo(EmbeddedDCEMPolicy, make_belief_vec_env(phase2_checkpoint, seed=0), device="cpu",
             policy_kwargs=kwargs).save(tmp_path / f"{algo.__name__}.zip")
        assert load_entry(EntrySpec(tmp_path / f"{algo.__name__}.zip")).label == label
