"""Environment construction: flat float32 observations, action repeat, seeding, unsupported spaces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dcem_agents.envs import ActionRepeat, FlatFloatObservation, UnsupportedSpaceError, make_env

CARTPOLE = "dm_control/cartpole-swingup-v0"


def test_dm_control_observation_is_flat_float32_in_sorted_key_order() -> None:
    env = make_env(CARTPOLE, seed=3)
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (5,) and env.observation_space.shape == (5,)
    raw = env.unwrapped  # shimmy's env: Dict observation {"position": (3,), "velocity": (2,)}
    assert sorted(raw.observation_space.spaces) == ["position", "velocity"]
    obs, reward, terminated, truncated, _ = env.step(np.zeros(1))
    assert isinstance(reward, float) and not terminated and not truncated
    # recompute the flattening from the same seeded reset of a plain shimmy env
    import shimmy

    gym.register_envs(shimmy)
    plain = gym.make(CARTPOLE)
    d, _ = plain.reset(seed=3)
    d, *_ = plain.step(np.zeros(1))
    np.testing.assert_allclose(obs, np.concatenate([d["position"], d["velocity"]]).astype(np.float32))


def test_action_repeat_sums_rewards_and_counts_steps() -> None:
    repeat = 8
    env, base = make_env(CARTPOLE, action_repeat=repeat, seed=0), make_env(CARTPOLE, action_repeat=1, seed=0)
    env.reset(), base.reset()
    rng = np.random.default_rng(0)
    steps = 0
    while True:
        a = rng.uniform(-1, 1, size=1)
        obs, reward, terminated, truncated, _ = env.step(a)
        base_rewards = []
        for _ in range(repeat):
            base_obs, r, bt, btr, _ = base.step(a)
            base_rewards.append(r)
            if bt or btr:
                break
        steps += 1
        assert reward == pytest.approx(sum(base_rewards), rel=1e-6, abs=1e-9)
        np.testing.assert_array_equal(obs, base_obs)
        if terminated or truncated:
            break
    assert steps == 1000 // repeat and truncated


class _CountingEnv(gym.Env):
    """Reward 1 per step, terminates after 3 steps; counts the steps it was given."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(2, self.t, np.float32), 1, self.t >= 3, False, {}


def test_action_repeat_stops_at_termination() -> None:
    env = ActionRepeat(_CountingEnv(), 5)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.zeros(1))
    assert terminated and not truncated and reward == 3.0 and isinstance(reward, float) and env.unwrapped.t == 3
    assert info["action_repeat_steps"] == 3  # the agent step ended inside its repeat: 3 real environment steps, not 5
    np.testing.assert_array_equal(obs, [3.0, 3.0])
    with pytest.raises(ValueError, match="action_repeat"):
        ActionRepeat(_CountingEnv(), 0)


def test_seeding_reproduces_and_differs() -> None:
    a = make_env(CARTPOLE, action_repeat=4, seed=7).reset()[0]
    b = make_env(CARTPOLE, action_repeat=4, seed=7).reset()[0]
    c = make_env(CARTPOLE, action_repeat=4, seed=8).reset()[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    env = make_env("Pendulum-v1", seed=5)
    assert env.reset()[0].dtype == np.float32
    np.testing.assert_array_equal(env.reset(seed=11)[0], make_env("Pendulum-v1").reset(seed=11)[0])
    assert env.action_space.sample() == pytest.approx(make_env("Pendulum-v1", seed=5).action_space.sample())


def test_discrete_action_space_is_rejected_by_name() -> None:
    with pytest.raises(UnsupportedSpaceError, match=r"CartPole-v1: unsupported action space Discrete\(2\)"):
        make_env("CartPole-v1")


class _ImageEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class _DiscreteObsEnv(_ImageEnv):
    observation_space = gym.spaces.Discrete(4)


def test_image_and_discrete_observations_are_rejected_by_name() -> None:
    with pytest.raises(UnsupportedSpaceError, match="image observations are not supported"):
        FlatFloatObservation(_ImageEnv())
    with pytest.raises(UnsupportedSpaceError, match=r"Discrete\(4\)"):
        FlatFloatObservation(_DiscreteObsEnv())
    gym.register("DcemTestImage-v0", entry_point=_ImageEnv)
    with pytest.raises(UnsupportedSpaceError, match=r"DcemTestImage-v0: .*Box\(0, 255, \(8, 8, 3\), uint8\)"):
        make_env("DcemTestImage-v0")


def test_registered_ids_are_accepted(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """An id registered with gymnasium.register, in this process or by a module named as ``module:Id``."""
    import sys

    import gymnasium as gym

    from dcem_agents.envs import make_env

    gym.register("DcemTestPendulum-v0", entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv",
                 max_episode_steps=20)
    env = make_env("DcemTestPendulum-v0", action_repeat=2, seed=0)
    assert env.observation_space.shape == (3,)
    (tmp_path / "dcem_test_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('ModulePendulum-v0', entry_point='gymnasium.envs.classic_control.pendulum:PendulumEnv',"
        " max_episode_steps=20)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = make_env("dcem_test_envs:ModulePendulum-v0", seed=0)
    assert env.spec is not None and env.spec.id == "ModulePendulum-v0"
    sys.modules.pop("dcem_test_envs", None)


class _EndlessEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN201
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):  # noqa: ANN001, ANN201
        return np.zeros(2, np.float32), 0.0, False, False, {}


class _MatrixActionEnv(_EndlessEnv):
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)


def test_an_env_without_time_limit_and_a_matrix_action_space_are_refused_by_name() -> None:
    """An episode that never ends would hang training; a (2, 2) action box would fail deep in the rollout."""
    gym.register("DcemTestEndless-v0", entry_point=_EndlessEnv)
    with pytest.raises(UnsupportedSpaceError, match="DcemTestEndless-v0: no time limit"):
        make_env("DcemTestEndless-v0")
    assert make_env("DcemTestEndless-v0", max_episode_steps=5).spec.max_episode_steps == 5
    gym.register("DcemTestMatrixAction-v0", entry_point=_MatrixActionEnv, max_episode_steps=5)
    with pytest.raises(UnsupportedSpaceError, match=r"DcemTestMatrixAction-v0: .*must be a flat vector"):
        make_env("DcemTestMatrixAction-v0")


def test_dm_control_tasks_without_a_time_limit_or_with_sentinel_action_bounds_are_refused_by_name() -> None:
    """LQR declares actions in +-1e10 (uniform seed actions broke its physics) and an infinite time limit."""
    with pytest.raises(UnsupportedSpaceError, match=r"lqr-lqr_2_1-v0: .*1e\+10, which stands for 'unbounded'"):
        make_env("dm_control/lqr-lqr_2_1-v0")
    endless = {"task_kwargs": {"time_limit": float("inf")}}
    with pytest.raises(UnsupportedSpaceError, match="cartpole-swingup-v0: the task has no time limit"):
        make_env(CARTPOLE, **endless)
    env = make_env(CARTPOLE, action_repeat=4, seed=0, max_episode_steps=10, **endless)
    env.reset()
    steps, truncated = 0, False
    while not truncated:
        *_, truncated, _ = env.step(np.zeros(1))
        steps += 1
    assert steps == 3  # 10 environment steps at action repeat 4: 4 + 4 + 2


def _headless(code: str) -> str:
    """Run ``code`` in a fresh interpreter without a display or MUJOCO_GL; its last stdout line."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_a_task_that_renders_at_reset_works_without_a_display() -> None:
    """quadruped-escape uploads its terrain to the renderer at each reset; with dm_control's own choice (GLFW, which
    imports without a display) that reset died with ``mujoco.FatalError``. Without EGL here the test is skipped."""
    line = _headless(
        "import os\n"
        "from dcem_agents.envs import make_env\n"
        "env = make_env('dm_control/quadruped-escape-v0', action_repeat=2, seed=0)\n"
        "backend = os.environ.get('MUJOCO_GL')\n"
        "obs, _ = env.reset() if backend == 'egl' else (None, None)\n"
        "print(backend, None if obs is None else obs.shape[0])\n")
    if line.startswith("None"):
        pytest.skip("EGL does not initialize on this machine")
    assert line == "egl 101"


def test_a_reset_without_a_rendering_context_names_the_remedy() -> None:
    """dm_control imported before make_env has already chosen GLFW, which cannot render without a display."""
    line = _headless(
        "import dm_control.suite, os\n"
        "from dcem_agents.envs import make_env\n"
        "env = make_env('dm_control/quadruped-escape-v0', seed=0)\n"
        "try:\n"
        "    env.reset()\n"
        "    print('reset', os.environ.get('MUJOCO_GL'))\n"
        "except RuntimeError as e:\n"
        "    print(str(e).split(' (MUJOCO_GL is')[0])\n")
    if line.startswith("reset"):
        pytest.skip("dm_control's own backend renders here")
    assert line == ("dm_control/quadruped-escape-v0 renders at reset and has no OpenGL context: set MUJOCO_GL=egl "
                    "(or osmesa) before dm_control is first imported")


def test_without_usable_egl_dm_control_keeps_its_own_backend() -> None:
    line = _headless(
        "import importlib, os\n"
        "real = importlib.import_module\n"
        "def broken(name, *a):\n"
        "    if name == 'dm_control._render':\n"
        "        raise ImportError('Cannot initialize a headless EGL display.')\n"
        "    return real(name, *a)\n"
        "importlib.import_module = broken\n"
        "from dcem_agents.envs import make_env\n"
        "env = make_env('dm_control/cartpole-swingup-v0', seed=0)\n"
        "importlib.import_module = real\n"
        "obs, _ = env.reset()\n"
        "print(os.environ.get('MUJOCO_GL'), obs.shape[0])\n")
    assert line == "None 5"


def test_rollouts_count_real_environment_steps() -> None:
    """An episode of 3 environment steps at action repeat 2 is 2 agent steps and 3 environment steps (not 4)."""
    import torch

    from dcem_agents.training.rollout import RandomController, run_episodes

    envs = [ActionRepeat(_CountingEnv(), 2), ActionRepeat(_CountingEnv(), 2)]
    controller = RandomController(torch.tensor([-1.0]), torch.tensor([1.0]))
    _, stats = run_episodes(envs, None, controller, [0, 1], generator=torch.Generator().manual_seed(0))
    assert (stats.steps, stats.env_steps) == (4, 6)
