"""Episode replay for world-model training: whole episodes in, fixed-length chunks out (PlaNet's data pipeline).

An episode of ``T`` agent steps is stored as observations ``x_0..x_T`` (T+1, O), actions ``u_0..u_{T-1}`` (T, A) and
rewards ``r_0..r_{T-1}`` (T,), where ``r_t`` is the reward received for taking ``u_t`` in ``x_t`` (Gymnasium's
convention). A chunk of length ``L`` starting at ``s`` holds ``x_s..x_{s+L}``, ``u_s..u_{s+L-1}``, ``r_s..r_{s+L-1}``
from ONE episode: chunks never cross episode boundaries. An episode shorter than ``L`` (one that terminated early)
gives one chunk from its start, padded with zeros after its end and marked by the chunk's ``mask``. Chunks are drawn
uniformly over all (episode, start) pairs with an explicit ``numpy.random.Generator``. Each chunk also carries its
continuation targets ``1 - terminated_t``: 0 at the last transition of an episode that terminated, 1 everywhere else
(a time limit is not a termination). Memory is bounded by ``capacity`` transitions: the oldest episodes are dropped
first.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["Chunks", "EpisodeReplay"]


class Chunks(NamedTuple):
    """A batch of ``B`` sequence chunks of ``L`` steps (batch-major, ``float32``).

    :param obs: observations (B, L+1, O).
    :param actions: actions (B, L, A).
    :param rewards: rewards (B, L).
    :param mask: 1 for real transitions, 0 for padding after a short episode's end (B, L); None for a single episode.
    :param cont: continuation targets ``1 - terminated_t`` (B, L); None for a single episode.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray | None = None
    cont: np.ndarray | None = None


class EpisodeReplay:
    """A bounded FIFO store of complete episodes, sampled as chunks that stay inside one episode.

    :param obs_dim: observation size ``O``.
    :param action_dim: action size ``A``.
    :param capacity: most transitions kept; when exceeded the oldest episodes are evicted (the newest is always kept).
    """

    def __init__(self, obs_dim: int, action_dim: int, capacity: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.obs_dim, self.action_dim, self.capacity = obs_dim, action_dim, capacity
        self._obs: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self._terminated: list[bool] = []
        self.total_episodes = 0  # ever added, including evicted ones

    def __len__(self) -> int:
        """Number of stored episodes."""
        return len(self._rewards)

    @property
    def num_steps(self) -> int:
        """Number of stored transitions."""
        return sum(len(r) for r in self._rewards)

    def add_episode(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: bool = False) -> None:
        """Store one episode: ``obs`` (T+1, O), ``actions`` (T, A), ``rewards`` (T,) with T >= 1."""
        obs = np.asarray(obs, np.float32).reshape(len(obs), -1)
        actions = np.asarray(actions, np.float32).reshape(len(actions), -1)
        rewards = np.asarray(rewards, np.float32).reshape(-1)
        t = len(rewards)
        if t < 1 or obs.shape != (t + 1, self.obs_dim) or actions.shape != (t, self.action_dim):
            raise ValueError(
                f"episode shapes must be obs (T+1, {self.obs_dim}), actions (T, {self.action_dim}), rewards (T,) with "
                f"T >= 1; got {obs.shape}, {actions.shape}, {rewards.shape}"
            )
        self._obs.append(obs.copy())
        self._actions.append(actions.copy())
        self._rewards.append(rewards.copy())
        self._terminated.append(bool(terminated))
        self.total_episodes += 1
        while len(self) > 1 and self.num_steps > self.capacity:
            for store in (self._obs, self._actions, self._rewards, self._terminated):
                store.pop(0)

    def episode(self, index: int) -> Chunks:
        """The stored episode ``index`` (0 = oldest kept) as unbatched arrays (T+1, O), (T, A), (T,)."""
        return Chunks(self._obs[index], self._actions[index], self._rewards[index])

    def sample(self, batch_size: int, length: int, rng: np.random.Generator) -> Chunks:
        """``batch_size`` chunks of ``length`` steps, uniform over all (episode, start) pairs; an episode shorter
        than ``length`` has one start (0) and is padded (see the module docstring).

        :raises ValueError: the buffer is empty or ``length < 1``.
        """
        if length < 1 or not self._rewards:
            raise ValueError(f"cannot sample chunks of {length} steps from {len(self)} episodes")
        lengths = np.array([len(r) for r in self._rewards], dtype=np.int64)
        starts_per_episode = np.maximum(lengths - length + 1, 1)
        total = int(starts_per_episode.sum())
        flat = rng.integers(0, total, size=batch_size)
        bounds = np.cumsum(starts_per_episode)
        episodes = np.searchsorted(bounds, flat, side="right")
        starts = flat - (bounds[episodes] - starts_per_episode[episodes])
        obs = np.zeros((batch_size, length + 1, self.obs_dim), np.float32)
        actions = np.zeros((batch_size, length, self.action_dim), np.float32)
        rewards = np.zeros((batch_size, length), np.float32)
        mask = np.zeros((batch_size, length), np.float32)
        cont = np.ones((batch_size, length), np.float32)
        for i, (e, s) in enumerate(zip(episodes, starts)):
            n = min(length, lengths[e] - s)  # real transitions in this chunk
            obs[i, : n + 1] = self._obs[e][s : s + n + 1]
            actions[i, :n] = self._actions[e][s : s + n]
            rewards[i, :n] = self._rewards[e][s : s + n]
            mask[i, :n] = 1.0
            if self._terminated[e] and s + n == lengths[e]:
                cont[i, n - 1] = 0.0  # the episode's last transition ended it
        return Chunks(obs, actions, rewards, mask, cont)

    def subset(self, start: int, stop: int) -> EpisodeReplay:
        """A new buffer holding stored episodes ``start .. stop - 1`` (0 = oldest kept), sharing their arrays."""
        part = EpisodeReplay(self.obs_dim, self.action_dim, capacity=2**62)
        part._obs, part._actions = self._obs[start:stop], self._actions[start:stop]
        part._rewards, part._terminated = self._rewards[start:stop], self._terminated[start:stop]
        part.total_episodes = len(part._rewards)
        return part

    def restore(self, parts: list[EpisodeReplay], total_episodes: int, capacity: int) -> None:
        """Become the concatenation of ``parts`` (oldest first), with ``total_episodes`` ever added and ``capacity``."""
        self._obs = [a for p in parts for a in p._obs]
        self._actions = [a for p in parts for a in p._actions]
        self._rewards = [a for p in parts for a in p._rewards]
        self._terminated = [t for p in parts for t in p._terminated]
        self.total_episodes, self.capacity = total_episodes, capacity

    def obs_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (O,) of every stored observation (for input normalization)."""
        if not self._obs:
            raise ValueError("the replay buffer is empty")
        allobs = np.concatenate(self._obs)
        return allobs.mean(0), allobs.std(0)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the buffer exactly: episodes concatenated, with their lengths."""
        return {
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "capacity": self.capacity,
            "total_episodes": self.total_episodes,
            # tensors, not numpy arrays: checkpoints load with torch.load(weights_only=True)
            "lengths": torch.as_tensor(np.array([len(r) for r in self._rewards], dtype=np.int64)),
            "terminated": torch.as_tensor(np.array(self._terminated, dtype=bool)),
            "obs": torch.from_numpy(np.concatenate(self._obs) if self._obs else np.zeros((0, self.obs_dim), np.float32)),
            "actions": torch.from_numpy(np.concatenate(self._actions) if self._actions
                                        else np.zeros((0, self.action_dim), np.float32)),
            "rewards": torch.from_numpy(np.concatenate(self._rewards) if self._rewards else np.zeros((0,), np.float32)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (dimensions must match)."""
        if (state["obs_dim"], state["action_dim"]) != (self.obs_dim, self.action_dim):
            raise ValueError(
                f"replay state has obs/action dims {(state['obs_dim'], state['action_dim'])}, "
                f"expected {(self.obs_dim, self.action_dim)}"
            )
        self.capacity = int(state["capacity"])
        self.total_episodes = int(state["total_episodes"])
        state = {k: v.numpy() if torch.is_tensor(v) else v for k, v in state.items()}  # tensors, or older numpy
        lengths = np.asarray(state["lengths"], dtype=np.int64)
        steps = np.concatenate([[0], np.cumsum(lengths)])
        self._obs = [np.asarray(state["obs"][steps[i] + i : steps[i + 1] + i + 1]) for i in range(len(lengths))]
        self._actions = [np.asarray(state["actions"][steps[i] : steps[i + 1]]) for i in range(len(lengths))]
        self._rewards = [np.asarray(state["rewards"][steps[i] : steps[i + 1]]) for i in range(len(lengths))]
        self._terminated = [bool(t) for t in state["terminated"]]
