"""Episode replay: chunks stay inside one episode, eviction, exact save/restore."""

from __future__ import annotations

import numpy as np
import torch
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
    replay = _filled([12, 30, 10, 11])
    rng = np.random.default_rng(0)
    chunks = replay.sample(2000, 10, rng)
    assert chunks.obs.shape == (2000, 11, 3) and chunks.actions.shape == (2000, 10, 2) and chunks.rewards.shape == (2000, 10)
    assert (chunks.mask == 1).all() and (chunks.cont == 1).all()  # no short episode, none terminated
    episodes = chunks.obs[:, :, 0]
    assert (episodes == episodes[:, :1]).all(), "a chunk mixes episodes"
    steps = chunks.obs[:, :, 1]
    assert (np.diff(steps, axis=1) == 1).all(), "a chunk is not consecutive"
    # actions and rewards are aligned with the observation they follow
    np.testing.assert_array_equal(chunks.actions[:, :, 1], steps[:, :-1])
    np.testing.assert_array_equal(chunks.rewards, 1000.0 * episodes[:, :-1] + steps[:, :-1])
    assert set(np.unique(episodes).astype(int)) == {0, 1, 2, 3}
    assert steps[episodes[:, 0] == 1].max() == 30  # the last observation of the 30-step episode is reachable
    # uniform over (episode, start): the 30-step episode has 21 of the 3+21+1+2 = 27 starts
    assert abs((episodes[:, 0] == 1).mean() - 21 / 27) < 0.05


def test_short_episodes_are_padded_and_masked() -> None:
    """An episode shorter than the chunk (terminated early) gives one chunk from its start, zero-padded, masked."""
    replay = EpisodeReplay(3, 2)
    replay.add_episode(*_episode(0, 4), terminated=True)  # fell after 4 steps
    replay.add_episode(*_episode(1, 6), terminated=False)  # cut by a time limit after 6 steps
    replay.add_episode(*_episode(2, 20), terminated=True)
    chunks = replay.sample(3000, 8, np.random.default_rng(1))
    ep = chunks.obs[:, 0, 0].astype(int)
    # uniform over (episode, start): 1 + 1 + 13 starts
    assert abs((ep == 0).mean() - 1 / 15) < 0.02 and abs((ep == 1).mean() - 1 / 15) < 0.02
    first = np.flatnonzero(ep == 0)[0]
    np.testing.assert_array_equal(chunks.mask[first], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(chunks.cont[first], [1, 1, 1, 0, 1, 1, 1, 1])  # terminated at its 4th transition
    np.testing.assert_array_equal(chunks.obs[first, :5, 1], [0, 1, 2, 3, 4])  # x_0 .. x_4, then zeros
    assert (chunks.obs[first, 5:] == 0).all() and (chunks.actions[first, 4:] == 0).all() and (chunks.rewards[first, 4:] == 0).all()
    trunc = np.flatnonzero(ep == 1)[0]
    np.testing.assert_array_equal(chunks.mask[trunc], [1, 1, 1, 1, 1, 1, 0, 0])
    assert (chunks.cont[trunc] == 1).all()  # a time limit is not a termination
    # the long terminated episode: only a chunk that reaches its last transition has a 0 target, there
    long = ep == 2
    ends = chunks.obs[long, -1, 1] == 20
    assert (chunks.cont[long][ends, -1] == 0).all() and (chunks.cont[long][~ends] == 1).all()
    assert (chunks.mask[long] == 1).all()


def test_sample_is_reproducible_with_the_same_generator() -> None:
    replay = _filled([20, 20, 20])
    a = replay.sample(8, 5, np.random.default_rng(3))
    b = replay.sample(8, 5, np.random.default_rng(3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_sampling_an_empty_buffer_raises() -> None:
    with pytest.raises(ValueError, match="cannot sample chunks of 7 steps from 0 episodes"):
        EpisodeReplay(3, 2).sample(1, 7, np.random.default_rng(0))


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


# ---------------------------------------------------------------- incremental checkpoints (replay_store)
def _same(a: EpisodeReplay, b: EpisodeReplay) -> None:
    assert (len(a), a.total_episodes, a.capacity) == (len(b), b.total_episodes, b.capacity)
    for i in range(len(a)):
        for x, y in zip(a.episode(i), b.episode(i)):
            np.testing.assert_array_equal(x, y)
    assert [a._terminated[i] for i in range(len(a))] == [b._terminated[i] for i in range(len(b))]


def _reloaded(folder, manifest) -> EpisodeReplay:
    """The buffer a fresh process rebuilds from ``manifest`` and the segments in ``folder``."""
    from dcem_agents.training.replay_store import ReplayStore

    replay = EpisodeReplay(3, 2)
    ReplayStore(folder).load(manifest, replay)
    return replay


def test_store_writes_each_episode_once_and_restores_exactly(tmp_path) -> None:
    from dcem_agents.training.replay_store import ReplayStore

    replay = _filled([20, 30])
    store = ReplayStore(tmp_path / "replay")
    first = store.save(replay)
    assert first["segments"] == [[0, 2, "00000000-00000002.pt"]]
    replay.add_episode(*_episode(2, 25), terminated=True)
    second = store.save(replay)
    assert second["segments"] == [[0, 2, "00000000-00000002.pt"], [2, 3, "00000002-00000003.pt"]]
    # the new segment holds the new episode only: the write does not grow with the buffer
    new = torch.load(tmp_path / "replay" / "00000002-00000003.pt", weights_only=True)
    assert new["lengths"].tolist() == [25] and new["terminated"].tolist() == [True]
    assert store.save(replay)["segments"] == second["segments"]  # nothing new: nothing written
    restored = _reloaded(tmp_path / "replay", second)
    _same(replay, restored)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    for x, y in zip(replay.sample(8, 10, rng_a), restored.sample(8, 10, rng_b)):
        np.testing.assert_array_equal(x, y)


def test_store_drops_evicted_segments_after_the_checkpoint(tmp_path) -> None:
    from dcem_agents.training.replay_store import ReplayStore

    replay = _filled([20, 20], capacity=50)
    store = ReplayStore(tmp_path / "replay")
    store.prune(store.save(replay))
    for i in (2, 3):
        replay.add_episode(*_episode(i, 20))  # capacity 50: the oldest episodes go
        manifest = store.save(replay)
        if i == 3:  # episodes 0 and 1 are gone: their segment is no longer listed, but stays until pruned
            listed = {n for *_, n in manifest["segments"]}
            assert "00000000-00000002.pt" not in listed and (tmp_path / "replay" / "00000000-00000002.pt").exists()
        store.prune(manifest)
        assert sorted(p.name for p in (tmp_path / "replay").iterdir()) == sorted(n for *_, n in manifest["segments"])
    assert manifest["first_kept"] == 2 and [s[:2] for s in manifest["segments"]] == [[2, 3], [3, 4]]
    _same(replay, _reloaded(tmp_path / "replay", manifest))


def test_store_survives_a_kill_between_segment_and_checkpoint(tmp_path) -> None:
    """A segment written after the last checkpoint is rewritten (same name) when the resumed run gets there."""
    from dcem_agents.training.replay_store import ReplayStore

    replay = _filled([20, 30])
    store = ReplayStore(tmp_path / "replay")
    saved = store.save(replay)  # the checkpoint on disk holds this manifest
    replay.add_episode(*_episode(2, 25))
    store.save(replay)  # ... then the process dies before the checkpoint with episode 2 is written
    resumed = EpisodeReplay(3, 2)
    store2 = ReplayStore(tmp_path / "replay")
    store2.load(saved, resumed)
    assert len(resumed) == 2
    resumed.add_episode(*_episode(2, 25))
    manifest = store2.save(resumed)
    store2.prune(manifest)
    _same(replay, _reloaded(tmp_path / "replay", manifest))


def test_missing_or_corrupt_segment_and_inline_copy(tmp_path) -> None:
    from dcem_agents.training import CheckpointError, load_checkpoint, save_checkpoint
    from dcem_agents.training.replay_store import ReplayStore, inline_replay

    replay = _filled([20, 30])
    store = ReplayStore(tmp_path / "replay")
    manifest = store.save(replay)
    save_checkpoint(tmp_path / "checkpoint.pt", "planet", {}, {"trainer": {"replay": manifest, "counters": {}}})
    full = inline_replay(load_checkpoint(tmp_path / "checkpoint.pt"), tmp_path / "checkpoint.pt")
    restored = EpisodeReplay(3, 2)
    restored.load_state_dict(full["trainer"]["replay"])
    _same(replay, restored)
    segment = tmp_path / "replay" / manifest["segments"][0][2]
    data = segment.read_bytes()
    for broken in (data[: len(data) // 2], b"not a segment"):  # truncated by a kill, overwritten
        segment.write_bytes(broken)
        with pytest.raises(CheckpointError, match=f"replay segment {segment} cannot be read"):
            ReplayStore(tmp_path / "replay").load(manifest, EpisodeReplay(3, 2))
    torch.save({"obs": torch.zeros(2, 3)}, segment)  # a readable file that is not a replay segment
    with pytest.raises(CheckpointError, match="cannot be read"):
        ReplayStore(tmp_path / "replay").load(manifest, EpisodeReplay(3, 2))
    segment.unlink()
    with pytest.raises(FileNotFoundError, match="keep the replay/ folder next to the checkpoint"):
        ReplayStore(tmp_path / "replay").load(manifest, EpisodeReplay(3, 2))
