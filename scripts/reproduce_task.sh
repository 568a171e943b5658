#!/usr/bin/env bash
# One task end to end: phase 1 (PlaNet, full-space CEM) -> phase 2 (latent DCEM) -> phase 3 (PPO through DCEM), the SAC
# reference at the same environment steps, and the 100-episode comparison report.
#
#   bash scripts/reproduce_task.sh TASK [RUNS_DIR] [-- EVALUATE_ARGS ...]     e.g.  bash scripts/reproduce_task.sh walker_walk
#
# EVALUATE_ARGS go to the report's evaluate.py command after the standard entries: another row on the same episodes,
# e.g.  -- --entry "checkpoints/dcem_walker_walk.pt:dcem(temperature=0.1)@latent DCEM, planning at temperature 0.1".
#
# TASK names the presets: configs/planet/TASK_cpu.yaml (else configs/planet/TASK.yaml), configs/dcem/TASK.yaml,
# configs/ppo/TASK.yaml, configs/baselines/sac_TASK.yaml (else configs/baselines/TASK.yaml). A task without phase-2 and
# phase-3 presets (the Gymnasium MuJoCo tasks, e.g. gym_hopper) runs phase 1 and SAC, and compares those two. Each step has a fixed run
# folder under RUNS_DIR (default ~/dcem-runs/TASK): planet/, dcem/, ppo/, sac/. The same command therefore resumes
# wherever a kill stopped it: a step marked done (its folder holds DONE) is skipped, an unfinished one continues from
# its checkpoint. Phase 2 starts from the phase-1 run's own checkpoint (it needs the replay), phase 3 from phase 2's.
# Each finished step is published (--publish: results/, checkpoints/ as its preset names them). The report evaluates
# the shipped checkpoints when the presets publish them (so that the README's command reproduces it), else the run
# folders, and writes results/TASK_comparison.{json,md,png} (and the training curves).
#
# Environment: PYTHON (default python), THREADS (torch threads per step, default 1), EPISODES (report episodes,
# default 100), SEED (first report episode's seed, default 4000000), REPORT_OUT (default results/TASK_comparison).
set -euo pipefail
usage() {
  echo "usage: bash scripts/reproduce_task.sh TASK [RUNS_DIR] [-- EVALUATE_ARGS ...]   (TASK: walker_walk, cheetah_run, cartpole_swingup, ...)" >&2
  exit 2
}
if [ $# -lt 1 ] || [ "$1" = "--" ]; then usage; fi
task=$1; shift
runs=$HOME/dcem-runs/$task
if [ $# -gt 0 ] && [ "$1" != "--" ]; then runs=$1; shift; fi
if [ $# -gt 0 ]; then [ "$1" = "--" ] || usage; shift; fi
extra=("$@")  # appended to the report's evaluate.py command, e.g. another --entry
cd "$(dirname "$0")/.."
first() { for f in "$@"; do if [ -f "$f" ]; then echo "$f"; return 0; fi; done; return 1; }
planet_cfg=$(first "configs/planet/${task}_cpu.yaml" "configs/planet/$task.yaml") || { echo "no phase-1 preset for $task" >&2; exit 2; }
dcem_cfg=$(first "configs/dcem/$task.yaml") || dcem_cfg=""
ppo_cfg=$(first "configs/ppo/$task.yaml") || ppo_cfg=""
if [ -n "$dcem_cfg" ] && [ -z "$ppo_cfg" ]; then echo "configs/dcem/$task.yaml has no phase-3 preset configs/ppo/$task.yaml" >&2; exit 2; fi
if [ -z "$dcem_cfg" ]; then echo "=== $task: no configs/dcem/$task.yaml: phase 1 and SAC only"; fi
sac_cfg=$(first "configs/baselines/sac_$task.yaml" "configs/baselines/$task.yaml") || { echo "no SAC preset for $task" >&2; exit 2; }
threads=${THREADS:-1}
py=${PYTHON:-python}
mkdir -p "$runs"

step() {  # step NAME PRESET [--set ...]: run (or resume) one training step in RUNS_DIR/NAME, publish it, mark it done
  local name=$1 preset=$2; shift 2
  local dir="$runs/$name"
  if [ -f "$dir/DONE" ]; then echo "=== $name: done ($dir)"; return 0; fi
  echo "=== $name: $preset -> $dir ($(date +%T))"
  "$py" train.py --config "$preset" --run-dir "$dir" --set num_threads="$threads" "$@" --publish
  date -u +%FT%TZ > "$dir/DONE"
}

# Phase 2's budget counts from the start of phase 1: phase 1's real steps (it stops early once an evaluation reaches
# its stop_return) plus the phase-2 steps the presets plan (the dcem preset's total minus the planet preset's).
phase2_budget() { "$py" - "$planet_cfg" "$dcem_cfg" "$runs/planet/summary.json" <<'PY'
import json, sys, yaml
p1, p2 = ((yaml.safe_load(open(f)) or {}).get("train", {}).get("total_env_steps") for f in sys.argv[1:3])
done = json.load(open(sys.argv[3]))["env_steps"]
print(done + p2 - p1 if isinstance(p1, int) and isinstance(p2, int) else "")
PY
}

step planet "$planet_cfg"
if [ -n "$dcem_cfg" ]; then
  budget=$(phase2_budget)
  step dcem "$dcem_cfg" --set phase1_checkpoint="$runs/planet/checkpoint.pt" ${budget:+--set train.total_env_steps=$budget}
  step ppo "$ppo_cfg" --set phase2_checkpoint="$runs/dcem/checkpoint.pt"
fi
step sac "$sac_cfg"

# the shipped files the presets published, else the run folders
export_of() { "$py" - "$1" "$2" <<'PY'
import sys, yaml
print((yaml.safe_load(open(sys.argv[1])) or {}).get(sys.argv[2]) or "")
PY
}
pick() { if [ -n "$1" ] && [ -f "$1" ]; then echo "$1"; else echo "$2"; fi; }
planet_ckpt=$(pick "$(export_of "$planet_cfg" export_checkpoint)" "$runs/planet/checkpoint.pt")
sac_zip=$(pick "$(export_of "$sac_cfg" export_zip)" "$runs/sac/model.zip")
entries=(--entry "$planet_ckpt:cem@full-space CEM")
if [ -n "$dcem_cfg" ]; then
  dcem_ckpt=$(pick "$(export_of "$dcem_cfg" export_checkpoint)" "$runs/dcem/checkpoint.pt")
  ppo_ckpt=$(pick "$(export_of "$ppo_cfg" export_checkpoint)" "$runs/ppo/checkpoint.pt")
  entries+=(--entry "$dcem_ckpt:dcem@latent DCEM" --entry "$dcem_ckpt:latent-cem@latent hard CEM"
            --entry "$ppo_ckpt:ppo@latent DCEM + PPO")
fi
entries+=(--entry "$sac_zip@SAC")
out=${REPORT_OUT:-results/${task}_comparison}
echo "=== report -> $out ($(date +%T))"
"$py" evaluate.py --threads "$threads" --episodes "${EPISODES:-100}" --seed "${SEED:-4000000}" --out "$out" "${entries[@]}" \
  ${extra[@]+"${extra[@]}"}
echo "=== $task: every step done ($(date +%T))"
