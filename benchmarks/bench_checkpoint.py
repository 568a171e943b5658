"""Checkpoint cost per collected episode with a large replay (not a test): whole replay vs incremental segments.

    python benchmarks/bench_checkpoint.py [--transitions 1000000] [--episode-length 500] [--obs-dim 24]
                                          [--action-dim 6] [--episodes 5] [--threads 1] [--out results/checkpoint_benchmark.json]

Fills an :class:`~dcem_agents.training.replay.EpisodeReplay` with ``--transitions`` random transitions of walker-walk
sizes (24-D observations, 6-D actions, 500-step episodes at action repeat 2), then, ``--episodes`` times, adds one
episode and writes the resume checkpoint the way a trainer does after every episode, once per path, in the same run:

- ``whole``: the replay inside the checkpoint (:meth:`EpisodeReplay.state_dict`, the path before incremental
  checkpoints);
- ``incremental``: the replay's new episode written as one segment file and a manifest in the checkpoint
  (:class:`~dcem_agents.training.replay_store.ReplayStore`), then the store pruned.

The model and optimizer part of a real checkpoint is the same on both paths and is left out. Reported: seconds per
episode (median and max over the episodes), the checkpoint's size, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dcem_agents.training.checkpoint import save_checkpoint
from dcem_agents.training.replay import EpisodeReplay
from dcem_agents.training.replay_store import ReplayStore


def _episode(rng: np.random.Generator, length: int, obs_dim: int, action_dim: int):
    return (rng.standard_normal((length + 1, obs_dim), dtype=np.float32),
            rng.standard_normal((length, action_dim), dtype=np.float32), rng.standard_normal(length, dtype=np.float32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--episode-length", type=int, default=500)
    p.add_argument("--obs-dim", type=int, default=24)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--episodes", type=int, default=5, help="checkpoints timed per path")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("results/checkpoint_benchmark.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    replay = EpisodeReplay(args.obs_dim, args.action_dim, capacity=args.transitions)
    while replay.num_steps < args.transitions:
        replay.add_episode(*_episode(rng, args.episode_length, args.obs_dim, args.action_dim))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = ReplayStore(Path(tmp) / "replay")
        store.prune(store.save(replay))  # the segments written so far (by earlier episodes)
        times: dict[str, list[float]] = {"whole": [], "incremental": []}
        sizes: dict[str, int] = {}
        for _ in range(args.episodes):
            replay.add_episode(*_episode(rng, args.episode_length, args.obs_dim, args.action_dim))
            for path in ("whole", "incremental"):  # alternated: both see the same machine load
                ckpt = Path(tmp) / f"{path}.pt"
                t0 = time.perf_counter()
                if path == "whole":
                    save_checkpoint(ckpt, "planet", {}, {"trainer": {"replay": replay.state_dict()}})
                else:
                    manifest = store.save(replay)
                    save_checkpoint(ckpt, "planet", {}, {"trainer": {"replay": manifest}})
                    store.prune(manifest)
                times[path].append(time.perf_counter() - t0)
                sizes[path] = ckpt.stat().st_size
        for path, t in times.items():
            rows[path] = {"seconds_per_episode_median": statistics.median(t), "seconds_per_episode_max": max(t),
                          "seconds": t, "checkpoint_bytes": sizes[path]}
    result = {
        "replay_transitions": replay.num_steps, "episode_length": args.episode_length, "obs_dim": args.obs_dim,
        "action_dim": args.action_dim, "episodes_timed": args.episodes, "threads": args.threads,
        "paths": rows,
        "ratio_whole_over_incremental": rows["whole"]["seconds_per_episode_median"]
        / rows["incremental"]["seconds_per_episode_median"],
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "command": "python benchmarks/bench_checkpoint.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                        vars(args).items()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for path, r in rows.items():
        print(f"{path:12s} {r['seconds_per_episode_median']:.4f} s per episode (max {r['seconds_per_episode_max']:.4f}), "
              f"checkpoint {r['checkpoint_bytes'] / 1e6:.1f} MB")
    print(f"whole / incremental: {result['ratio_whole_over_incremental']:.0f}x  -> {args.out}")


if __name__ == "__main__":
    main()
