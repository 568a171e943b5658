"""Print the README's planner-benchmark tables from the JSON files of bench_planner.py and bench_ppo.py.

    python benchmarks/planner_table.py [results/planner_benchmark.json] [results/ppo_sample_benchmark.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def planner_table(path: Path) -> str:
    """One markdown row per (environments, runtime): ms per call and per environment, speed-up, peak fraction."""
    r = json.loads(path.read_text())
    lines = [f"Peak of a (1000 × {r['model']['hidden_size']}) @ ({r['model']['hidden_size']} × "
             f"{3 * r['model']['hidden_size']}) product, best in the run: "
             + ", ".join(f"{dev} fp32 {p['fp32']:.0f} / bf16 {p['bf16']:.0f} GFLOP/s"
                         for dev, p in r["peak_gflop_per_s"].items()) + ".", "",
             "| envs | runtime | CEM ms / call | CEM ms / env | CEM speed-up | CEM % of peak | DCEM ms / call | "
             "DCEM ms / env | DCEM speed-up | DCEM % of peak | CEM / DCEM | first call s (CEM / DCEM) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        for rt in row["cem_full_1000"]["runtimes"]:
            c, d = row["cem_full_1000"]["runtimes"][rt], row["dcem_latent_100"]["runtimes"][rt]
            lines.append(
                f"| {row['n_envs']} | {rt} | {c['ms_per_call']:,.0f} | {c['ms_per_env']:,.0f} | "
                f"{c['speedup_vs_reference']:.2f}× | {c['peak_fraction']:.0%} | {d['ms_per_call']:,.0f} | "
                f"{d['ms_per_env']:.0f} | {d['speedup_vs_reference']:.2f}× | {d['peak_fraction']:.0%} | "
                f"{row['time_ratio_cem_over_dcem'][rt]:.1f}× | {c['first_call_s']:.1f} / {d['first_call_s']:.1f} |")
    return "\n".join(lines)


def ppo_table(path: Path) -> str:
    """One markdown row per runtime: seconds per PPO agent step and the speed-up over the reference."""
    r = json.loads(path.read_text())
    lines = ["| runtime | collect (4 envs) s | update (minibatch 128) s | s / PPO agent step | speed-up |",
             "|---|---|---|---|---|"]
    for rt, v in r["runtimes"].items():
        lines.append(f"| {rt} | {v['collect_s']:.2f} | {v['update_s']:.1f} | {v['s_per_agent_step']:.3f} | "
                     f"{v['speedup_vs_reference']:.2f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    planner = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/planner_benchmark.json")
    ppo = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("results/ppo_sample_benchmark.json")
    print(planner_table(planner))
    if ppo.is_file():
        print()
        print(ppo_table(ppo))
