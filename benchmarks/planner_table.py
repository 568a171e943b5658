"""Print the README's planner-benchmark tables from the JSON files of bench_planner.py and bench_ppo.py.

    python benchmarks/planner_table.py [results/planner_benchmark.json] [results/ppo_sample_benchmark.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _ms(x: float) -> str:
    """Milliseconds with a decimal below 100 ms (GPU rows), whole above (CPU rows)."""
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def planner_table(path: Path) -> str:
    """One markdown row per (environments, runtime): ms per call and per environment, speed-up, peak fraction."""
    r = json.loads(path.read_text())
    hid = r["model"]["hidden_size"]
    rows = r.get("peak_rows", {})
    lines = [f"Peak of a (rows × {hid}) @ ({hid} × {3 * hid}) product, best in the run: "
             + ", ".join(f"{dev} ({rows.get(dev, 1000):,} rows) fp32 {p['fp32']:.0f} / bf16 {p['bf16']:.0f} GFLOP/s"
                         for dev, p in r["peak_gflop_per_s"].items()) + ".", "",
             "| envs | runtime | CEM ms / call | CEM ms / env | CEM speed-up | CEM % of peak | DCEM ms / call | "
             "DCEM ms / env | DCEM speed-up | DCEM % of peak | CEM / DCEM | first call s (CEM / DCEM) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        for rt in row["cem_full_1000"]["runtimes"]:
            c, d = row["cem_full_1000"]["runtimes"][rt], row["dcem_latent_100"]["runtimes"][rt]
            lines.append(
                f"| {row['n_envs']} | {rt} | {_ms(c['ms_per_call'])} | {_ms(c['ms_per_env'])} | "
                f"{c['speedup_vs_reference']:.2f}× | {c['peak_fraction']:.0%} | {_ms(d['ms_per_call'])} | "
                f"{_ms(d['ms_per_env'])} | {d['speedup_vs_reference']:.2f}× | {d['peak_fraction']:.0%} | "
                f"{row['time_ratio_cem_over_dcem'][rt]:.1f}× | {c['first_call_s']:.1f} / {d['first_call_s']:.1f} |")
    return "\n".join(lines)


def ppo_table(path: Path) -> str:
    """One markdown row per runtime: seconds per PPO agent step and the speed-up over the reference."""
    r = json.loads(path.read_text())
    lines = ["| runtime | collect (4 envs) s | update (minibatch 128) s | s / PPO agent step | speed-up |",
             "|---|---|---|---|---|"]
    for rt, v in r["runtimes"].items():
        speedup = v.get("speedup_vs_reference", v.get("speedup_vs_first"))  # the first row is the reference
        lines.append(f"| {rt} | {v['collect_s']:.3f} | {v['update_s']:.2f} | {v['s_per_agent_step']:.4f} | "
                     f"{speedup:.2f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    planner = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/planner_benchmark.json")
    ppo = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("results/ppo_sample_benchmark.json")
    print(planner_table(planner))
    if ppo.is_file():
        print()
        print(ppo_table(ppo))
