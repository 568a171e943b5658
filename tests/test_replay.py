"""Episode replay: chunks stay inside one episode, eviction, exact save/restore."""

from __future__ import annotations

import numpy as np
import pytest

from dcem_agents.training.replay import EpisodeReplay


def _episode(episode_id: int, length: int, obs_dim: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations, actions and rewards that encode (episode, step) so chunks can be traced back."""
    t = np.arange(length + 1, dtype=np.float32)
    obs = np.stack([np.full(length + 1, episode_id, np.float32), t] + [t * 0.5] * (obs_dim - 2), 1)
    actions = np.stack([np.full(length, episode_id, np.float32), t[:-1]], 1)
    rewards = 1000.0 * episode_id + t[:-1]
    return obs, actions, rewards


def _filled(lengths: list[int], capacity: int = 10_000) -> EpisodeReplay:
    replay = EpisodeReplay(3, 2, capacity)
    for i, n in enumerate(lengths):
        replay.add_episode(*_episode(i, n))
    return replay


def test_chunks_never_cross_episode_boundaries() -> None:
    replay = _filled([12, 5, 30, 10, 11])
    rng = np.random.default_rng(0)
    chunks = replay.sample(2000, 10, rng)
    assert chunks.obs.shape == (2000, 11, 3) and chunks.actions.shape == (2000, 10, 2) and chunks.rewards.shape == (2000, 10)
    episodes = chunks.obs[:, :, 0]
    assert (episodes == episodes[:, :1]).all(), "a chunk mixes episodes"
    steps = chunks.obs[:, :, 1]
    assert (np.diff(steps, axis=1) == 1).all(), "a chunk is not consecutive"
    # actions and rewards are aligned with the observation they follow
    np.testing.assert_array_equal(chunks.actions[:, :, 1], steps[:, :-1])
    np.testing.assert_array_equal(chunks.rewards, 1000.0 * episodes[:, :-1] + steps[:, :-1])
    # the 5-step episode (id 1) is too short for 10-step chunks; all others are sampled, up to their last step
    seen = set(np.unique(episodes).astype(int))
    assert 1 not in seen and seen == {0, 2, 3, 4}
    assert steps[episodes[:, 0] == 2].max() == 30  # the last observation of the 30-step episode is reachable
    # uniform over (episode, start): the 30-step episode has 21 of the 3+21+1+2 = 27 valid starts
    assert abs((episodes[:, 0] == 2).mean() - 21 / 27) < 0.05


def test_sample_is_reproducible_with_the_same_generator() -> None:
    replay = _filled([20, 20, 20])
    a = replay.sample(8, 5, np.random.default_rng(3))
    b = replay.sample(8, 5, np.random.default_rng(3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_no_episode_long_enough_raises() -> None:
    replay = _filled([4, 6])
    with pytest.raises(ValueError, match="no stored episode has 7 steps"):
        replay.sample(1, 7, np.random.default_rng(0))


def test_capacity_evicts_oldest_episodes() -> None:
    replay = _filled([10, 10, 10, 10], capacity=25)
    assert len(replay) == 2 and replay.num_steps == 20 and replay.total_episodes == 4
    assert replay.episode(0).obs[0, 0] == 2  # episodes 0 and 1 are gone


def test_bad_episode_shapes_raise() -> None:
    replay = EpisodeReplay(3, 2)
    obs, actions, rewards = _episode(0, 5)
    with pytest.raises(ValueError, match="episode shapes"):
        replay.add_episode(obs[:-1], actions, rewards)


def test_state_dict_round_trip_is_exact() -> None:
    replay = _filled([12, 7, 30], capacity=45)
    restored = EpisodeReplay(3, 2, capacity=1)
    restored.load_state_dict(replay.state_dict())
    assert len(restored) == len(replay) and restored.capacity == 45 and restored.total_episodes == 3
    for i in range(len(replay)):
        for x, y in zip(replay.episode(i), restored.episode(i)):
            np.testing.assert_array_equal(x, y)
    a = replay.sample(16, 6, np.random.default_rng(1))
    b = restored.sample(16, 6, np.random.default_rng(1))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="obs/action dims"):
        EpisodeReplay(4, 2).load_state_dict(replay.state_dict())
