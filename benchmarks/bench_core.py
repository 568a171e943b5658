"""Benchmark of the core layers (not a test): LML forward+backward and one DCEM solve, on CPU and on CUDA if present.

    python benchmarks/bench_core.py [--repeats 20] [--out results/core_benchmark.json]

LML: a batch of 1000 rows of n = 1000 scores, k = 100, forward + backward.
DCEM: one problem (batch 1), 1000 samples, dim 24, 100 elites, 10 iterations, on a 24-D Rastrigin function shifted by a
learnable parameter; timed without gradient (a plan) and with backward into that parameter (a training step).
Reports the median and the interquartile range of the wall time per call in milliseconds; CUDA timings synchronize
before reading the clock.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from _timing import time_ms

from dcem_agents import dcem, lml, rastrigin


def bench_device(device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1000, 1000, device=device, generator=gen, requires_grad=True)
    g = torch.randn(1000, 1000, device=device, generator=gen)

    def lml_fwd_bwd() -> None:
        x.grad = None
        lml(x, 100, check_finite=False).backward(g)

    shift = torch.zeros(24, device=device, requires_grad=True)

    def solve() -> torch.Tensor:
        return dcem(lambda s: rastrigin(s - shift), 24, n_samples=1000, n_elites=100, n_iters=10, lower=-5.12,
                    upper=5.12, generator=gen, device=device)

    def dcem_plan() -> None:
        with torch.no_grad():
            solve()

    def dcem_fwd_bwd() -> None:
        shift.grad = None
        solve().sum().backward()

    return {
        "lml_fwd_bwd_batch1000_n1000_k100": time_ms(lml_fwd_bwd, device, repeats),
        "dcem_no_grad_batch1_n1000_dim24_iters10": time_ms(dcem_plan, device, repeats),
        "dcem_fwd_bwd_batch1_n1000_dim24_iters10": time_ms(dcem_fwd_bwd, device, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "timings": {},
    }
    for device in devices:
        result["timings"][device.type] = bench_device(device, args.repeats)
        for name, t in result["timings"][device.type].items():
            print(f"{device.type:5s} {name:45s} {t['median_ms']:9.2f} ms  (IQR {t['q25_ms']:.2f}-{t['q75_ms']:.2f})")
    if not torch.cuda.is_available():
        print("cuda  not available on this machine: no GPU timings")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
