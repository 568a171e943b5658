"""Hostile and broken inputs: checkpoints never run code, older numpy-replay checkpoints still load."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dcem_agents.training import CheckpointError, load_checkpoint, save_checkpoint
from dcem_agents.training.checkpoint import CHECKPOINT_FORMAT
from dcem_agents.training.replay import EpisodeReplay

sys.path.insert(0, str(Path(__file__).parent))
from _scripts import run_script  # noqa: E402


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
