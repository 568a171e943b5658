"""Planner benchmark (not a test): full-space CEM and latent DCEM under each planner runtime, with the machine's own
ceiling and the reference path timed in the same run.

    python benchmarks/bench_planner.py [--threads 1] [--size 200] [--checkpoint PATH] [--batches 1 8 32]
                                       [--runtimes reference fp32 bf16] [--repeats 5] [--out results/planner_benchmark.json]
    python benchmarks/bench_planner.py --operators-only --batches 1 --out results/planner_operators.json

For batches of 1, 8 and 32 environments it times one gradient-free planning call (as at collection time) of

- full-space CEM: 1,000 samples × 10 iterations × horizon 12, 100 elites (PlaNet's planner, the paper's expert);
- latent DCEM: 100 samples × 10 iterations × horizon 12, 10 elites, τ = 1, 2-D latent space, decoder 2 × 128;

on the world model of ``--checkpoint`` (or a random one of ``--size``, GRU and layers 200 by default, with the
cartpole-swingup observation/action sizes), once per planner runtime (:data:`~dcem_agents.planning.runtime.RUNTIME_PRESETS`:
``reference`` is eager fp32 through ``RSSM.imagine``, the path of every result before the lean rollout).

It reports the operators one call dispatches (eager, views excluded: the kernels a GPU launches per call, for the
reference and the lean rollout), ms per call, ms per environment, the speed-up over ``reference`` in the same row, the achieved GFLOP/s (the
call's floating-point operations counted once on the reference path by ``torch.utils.flop_counter``, so every runtime
is credited with the same useful work) and the fraction of the **measured peak**: a matrix product of the rollout's own
shape (``rows × hidden`` by ``hidden × 3·hidden``, the GRU gates of one step) timed in this run for fp32 and bf16,
several times (before, between and after the rows), the best of them taken as the machine's reachable peak. ``rows`` is
1,000 (one environment's samples) on a CPU and ``1,000 × max(--batches)`` on CUDA, where fewer rows are launch-bound.
Timing: median of ``--repeats`` calls after warm-up; CUDA synchronizes before reading the clock. Weights are random
unless a checkpoint is given: the cost of a call does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _timing import time_ms

from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent import LatentCEMSettings
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import CEMController
from dcem_agents.planning.runtime import RUNTIME_PRESETS, count_operators
from dcem_agents.training import load_checkpoint

PLANNERS = {"cem_full_1000": "CEM over the H-step action sequence: 1000 samples, 100 elites, 10 iterations",
            "dcem_latent_100": "DCEM over a 2-D latent decoded by a 128x128 ELU MLP: 100 samples, 10 elites, "
                               "10 iterations, tau 1"}


def _flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def load_model(checkpoint: Path | None, obs_dim: int, action_dim: int, size: int) -> tuple[RSSM, int]:
    """The world model of a ``planet`` or ``dcem`` checkpoint and its planning horizon; or a random model (horizon 12)."""
    if checkpoint is None:
        torch.manual_seed(0)
        return RSSM(obs_dim, action_dim, hidden_size=size, layer_size=size).eval(), 12
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


def measure_peak(rows: int, hidden: int, device: torch.device, repeats: int) -> dict[str, float]:
    """GFLOP/s of ``(rows × hidden) @ (hidden × 3·hidden)`` (one step's GRU gates) in fp32 and bf16, on ``device``."""
    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(rows, hidden, device=device, dtype=dtype)
        w = torch.randn(3 * hidden, hidden, device=device, dtype=dtype)
        b = torch.randn(3 * hidden, device=device, dtype=dtype)
        reps = max(repeats, 20)
        ms = time_ms(lambda: [F.linear(a, w, b) for _ in range(10)], device, reps, warmup=3)["median_ms"] / 10
        peak[name] = 2 * rows * hidden * 3 * hidden / (ms / 1e3) / 1e9
    return peak


def _controllers(model: RSSM, horizon: int, runtime_name: str) -> dict:
    device = next(model.parameters()).device
    runtime = RUNTIME_PRESETS[runtime_name]
    low, high = -torch.ones(model.action_dim), torch.ones(model.action_dim)
    torch.manual_seed(1)
    decoder = LatentActionDecoder(2, horizon, model.action_dim, -1.0, 1.0, hidden_sizes=(128, 128)).to(device)
    return {
        "cem_full_1000": CEMController(model, low, high, horizon=horizon, n_samples=1000, n_elites=100, n_iters=10,
                                       runtime=runtime),
        "dcem_latent_100": LatentDCEMController(model, decoder, LatentCEMSettings(100, 10, 10, 1.0), runtime),
    }


def operator_rows(model: RSSM, horizon: int, batches: list[int]) -> list[dict]:
    """Operators one planning call dispatches (eager, views excluded), reference and lean rollout, per number of
    environments. On a CPU the lean rollout runs its rows in chunks of 1,024 (each chunk its own operators); a GPU runs
    them in one pass, so the 1-environment figures are the GPU's kernel launches per call."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for b in batches:
        belief = model.initial(torch.randn(b, model.obs_dim))
        row: dict = {"n_envs": b}
        for label, rt in (("reference", "reference"), ("lean", "fp32-eager")):
            for name, ctrl in _controllers(model, horizon, rt).items():
                ctrl.reset(b)
                row.setdefault(name, {})[label] = count_operators(lambda: ctrl.act(belief, gen))
        rows.append(row)
    return rows


def bench(model: RSSM, horizon: int, device: torch.device, batches: list[int], runtimes: list[str], repeats: int,
          peak: dict[str, float]) -> list[dict]:
    """One row per number of environments: every planner under every runtime (see the module docstring)."""
    model = model.to(device)
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for b in batches:
        belief = model.initial(torch.randn(b, model.obs_dim, device=device))
        row: dict = {"device": device.type, "n_envs": b}
        for rt in runtimes:
            controllers = _controllers(model, horizon, rt)
            precision = RUNTIME_PRESETS[rt].precision
            for name, ctrl in controllers.items():
                def call() -> None:
                    ctrl.reset(b)
                    ctrl.act(belief, gen)
                t0 = time.perf_counter()
                call()  # first call: compilation, graph capture
                first_s = time.perf_counter() - t0
                seconds = time_ms(call, device, repeats, warmup=0)["median_ms"] / 1e3  # the first call warmed up
                entry = row.setdefault(name, {"runtimes": {}})
                if "gflop_per_call" not in entry:
                    ref_ctrl = _controllers(model, horizon, "reference")[name]
                    ref_ctrl.reset(b)
                    entry["gflop_per_call"] = _flops(lambda: ref_ctrl.act(belief, gen)) / 1e9
                gflop_s = entry["gflop_per_call"] / seconds
                entry["runtimes"][rt] = {"ms_per_call": seconds * 1e3, "ms_per_env": seconds * 1e3 / b,
                                         "first_call_s": first_s, "gflop_per_s": gflop_s,
                                         "peak_fraction": gflop_s / peak[precision], "precision": precision}
        for name in PLANNERS:
            rts = row[name]["runtimes"]
            if "reference" in rts:
                for r in rts.values():
                    r["speedup_vs_reference"] = rts["reference"]["ms_per_call"] / r["ms_per_call"]
        row["time_ratio_cem_over_dcem"] = {rt: row["cem_full_1000"]["runtimes"][rt]["ms_per_call"]
                                           / row["dcem_latent_100"]["runtimes"][rt]["ms_per_call"] for rt in runtimes}
        if device.type == "cpu":  # operators per call (eager): the kernels a GPU launches per call
            for name, counts in operator_rows(model, horizon, [b])[0].items():
                if name in PLANNERS:
                    row[name]["operators_per_call"] = counts
        rows.append(row)
        for rt in runtimes:
            c, d = row["cem_full_1000"]["runtimes"][rt], row["dcem_latent_100"]["runtimes"][rt]
            print(f"{device.type:5s} {b:4d} {rt:13s} {c['ms_per_call']:9.1f} {c.get('speedup_vs_reference', 0):5.2f}x "
                  f"{c['peak_fraction']:5.0%} {d['ms_per_call']:9.1f} {d.get('speedup_vs_reference', 0):5.2f}x "
                  f"{d['peak_fraction']:5.0%} {row['time_ratio_cem_over_dcem'][rt]:6.1f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs-dim", type=int, default=5, help="observation size (cartpole-swingup: 5)")
    parser.add_argument("--action-dim", type=int, default=1, help="action size (cartpole-swingup: 1)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="planet or dcem checkpoint whose model to time")
    parser.add_argument("--size", type=int, default=200, help="GRU and layer width of the random model (no checkpoint)")
    parser.add_argument("--horizon", type=int, default=None, help="planning horizon (default: the checkpoint's, else 12)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--runtimes", nargs="+", default=["reference", "fp32", "bf16"], choices=sorted(RUNTIME_PRESETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--operators-only", action="store_true",
                        help="only count the operators per call (deterministic, no timing), on the CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, horizon = load_model(args.checkpoint, args.obs_dim, args.action_dim, args.size)
    horizon = args.horizon or horizon
    if args.operators_only:
        result = {"torch": torch.__version__, "horizon": horizon, "controllers": PLANNERS,
                  "rows": operator_rows(model, horizon, args.batches)}
        for row in result["rows"]:
            print(row)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
        return
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    result = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "horizon": horizon,
        "controllers": PLANNERS,
        "runtimes": {rt: vars(RUNTIME_PRESETS[rt]) for rt in args.runtimes},
        "model": {"obs_dim": model.obs_dim, "action_dim": model.action_dim, "hidden_size": model.hidden_size,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "peak_gflop_per_s": {},
        "rows": [],
    }
    try:
        result["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for name in devices:
        device = torch.device(name)
        # the reachable peak: the best of several measurements spread over the run (a shared machine's speed drifts).
        # A CPU reaches its peak on one environment's 1,000 rows; a GPU only on the most rows the run plans for (at
        # 1,000 rows it is launch-bound, and the rollout's larger batches would exceed that "peak").
        peak_rows = 1000 * (max(args.batches) if device.type == "cuda" else 1)
        peaks = [measure_peak(peak_rows, model.hidden_size, device, args.repeats) for _ in range(3)]
        peak = {k: max(p[k] for p in peaks) for k in ("fp32", "bf16")}
        print(f"{device.type}: measured peak of a ({peak_rows} x {model.hidden_size}) @ ({model.hidden_size} x "
              f"{3 * model.hidden_size}) product: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
        print(f"{'dev':5s} {'envs':>4s} {'runtime':13s} {'CEM ms':>9s} {'speed':>6s} {'peak':>5s} {'DCEM ms':>9s} "
              f"{'speed':>6s} {'peak':>5s} {'CEM/DCEM':>8s}")
        rows = []
        for b in args.batches:
            rows += bench(model, horizon, device, [b], args.runtimes, args.repeats, peak)
            peaks.append(measure_peak(peak_rows, model.hidden_size, device, args.repeats))
        final = {k: max(p[k] for p in peaks) for k in ("fp32", "bf16")}
        for row in rows:  # peak fractions against the best peak seen in the whole run
            for planner in PLANNERS:
                for r in row[planner]["runtimes"].values():
                    r["peak_fraction"] = r["gflop_per_s"] / final[r["precision"]]
        result["peak_gflop_per_s"][device.type] = final
        result.setdefault("peak_rows", {})[device.type] = peak_rows
        result["peak_measurements"] = {device.type: peaks}
        print(f"{device.type}: best peak over the run: fp32 {final['fp32']:.0f} GFLOP/s, bf16 {final['bf16']:.0f} "
              f"GFLOP/s (the JSON's peak fractions use these)")
        result["rows"] += rows
    if not torch.cuda.is_available():
        print("cuda: not available on this machine, no GPU rows")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
