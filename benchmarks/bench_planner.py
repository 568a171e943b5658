"""Planner benchmark (not a test): full-space CEM against latent DCEM on one world model, CPU and CUDA.

    python benchmarks/bench_planner.py [--obs-dim 5] [--action-dim 1] [--repeats 10] [--out results/planner_benchmark.json]

For batches of 1, 8 and 32 environments it times one planning call (no gradient, as at collection time) of

- full-space CEM: 1,000 samples × 10 iterations × horizon 12, 100 elites (PlaNet's planner, the paper's expert);
- latent DCEM: 100 samples × 10 iterations × horizon 12, 10 elites, τ = 1, 2-D latent space, decoder 2 × 128;

on the world model of ``--checkpoint`` (or a random one of ``--size``, GRU and layers 200 by default, with the
cartpole-swingup observation/action sizes) and reports ms per call, calls per second, the time ratio, and the achieved GFLOP/s (floating-point
operations of one call counted by ``torch.utils.flop_counter``). Timing: median of ``--repeats`` calls after warm-up;
CUDA synchronizes before reading the clock. Weights are random: the cost of a call does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from _timing import time_ms

from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent import LatentCEMSettings
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import CEMController
from dcem_agents.training import load_checkpoint


def _flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def load_model(checkpoint: Path | None, obs_dim: int, action_dim: int, size: int) -> tuple[RSSM, int]:
    """The world model of a ``planet`` or ``dcem`` checkpoint and its planning horizon; or a random model (horizon 12)."""
    if checkpoint is None:
        torch.manual_seed(0)
        return RSSM(obs_dim, action_dim, hidden_size=size, layer_size=size), 12
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("experiment") not in ("planet", "dcem"):
        raise SystemExit(f"{checkpoint}: not a planet or dcem checkpoint (experiment {ckpt.get('experiment')!r})")
    phase1 = ckpt["phase1_config"] if ckpt["experiment"] == "dcem" else ckpt["config"]
    horizon = ckpt["config"]["decoder"]["horizon"] if ckpt["experiment"] == "dcem" else phase1["planner"]["horizon"]
    sizes = phase1["model"]
    state = ckpt["trainer"]["model"]
    model = RSSM(state["obs_loc"].numel(), state["embed.0.weight"].shape[1] - state["obs_loc"].numel(),
                 sizes["hidden_size"], sizes["layer_size"], sizes["min_std"])
    model.load_state_dict(state)
    return model.eval(), horizon


def bench(model: RSSM, horizon: int, device: torch.device, batches: list[int], repeats: int) -> list[dict]:
    """Time one planning call of both controllers for every batch size (ms, calls/s, GFLOP, GFLOP/s, the ratio)."""
    model = model.to(device)
    obs_dim, action_dim = model.obs_dim, model.action_dim
    low, high = -torch.ones(action_dim), torch.ones(action_dim)
    decoder = LatentActionDecoder(2, horizon, action_dim, -1.0, 1.0, hidden_sizes=(128, 128)).to(device)
    controllers = {
        "cem_full_1000": CEMController(model, low, high, horizon=horizon, n_samples=1000, n_elites=100, n_iters=10),
        "dcem_latent_100": LatentDCEMController(model, decoder, LatentCEMSettings(100, 10, 10, 1.0)),
    }
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for b in batches:
        belief = model.initial(torch.randn(b, obs_dim, device=device))
        row: dict = {"device": device.type, "n_envs": b}
        for name, ctrl in controllers.items():
            def call() -> None:
                ctrl.reset(b)
                ctrl.act(belief, gen)
            seconds = time_ms(call, device, repeats, warmup=2)["median_ms"] / 1e3
            flops = _flops(call)
            row[name] = {"ms_per_call": seconds * 1e3, "calls_per_s": 1.0 / seconds, "gflop_per_call": flops / 1e9,
                         "gflop_per_s": flops / seconds / 1e9}
        row["time_ratio_cem_over_dcem"] = row["cem_full_1000"]["ms_per_call"] / row["dcem_latent_100"]["ms_per_call"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs-dim", type=int, default=5, help="observation size (cartpole-swingup: 5)")
    parser.add_argument("--action-dim", type=int, default=1, help="action size (cartpole-swingup: 1)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="planet or dcem checkpoint whose model to time")
    parser.add_argument("--size", type=int, default=200, help="GRU and layer width of the random model (no checkpoint)")
    parser.add_argument("--horizon", type=int, default=None, help="planning horizon (default: the checkpoint's, else 12)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    model, horizon = load_model(args.checkpoint, args.obs_dim, args.action_dim, args.size)
    horizon = args.horizon or horizon
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    result = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "horizon": horizon,
        "controllers": {"cem_full_1000": "CEM over the H-step action sequence: 1000 samples, 100 elites, 10 iterations",
                        "dcem_latent_100": "DCEM over a 2-D latent decoded by a 128x128 ELU MLP: 100 samples, "
                                           "10 elites, 10 iterations, tau 1"},
        "model": {"obs_dim": model.obs_dim, "action_dim": model.action_dim, "hidden_size": model.hidden_size,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "rows": [],
    }
    print(f"{'device':6s} {'envs':>4s} {'CEM 1000 ms':>12s} {'DCEM 100 ms':>12s} {'ratio':>6s} {'CEM GFLOP/s':>12s} {'DCEM GFLOP/s':>13s}")
    for name in devices:
        for row in bench(model, horizon, torch.device(name), args.batches, args.repeats):
            result["rows"].append(row)
            c, d = row["cem_full_1000"], row["dcem_latent_100"]
            print(f"{row['device']:6s} {row['n_envs']:4d} {c['ms_per_call']:12.1f} {d['ms_per_call']:12.1f} "
                  f"{row['time_ratio_cem_over_dcem']:6.1f} {c['gflop_per_s']:12.1f} {d['gflop_per_s']:13.1f}")
    if not torch.cuda.is_available():
        print("cuda: not available on this machine, no GPU rows")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
