#!/usr/bin/env bash
# The GPU check, in one go (about 5 minutes on an H200), for whoever has a CUDA machine:
#   bash benchmarks/gpu_check.sh [COPY_TO_DIR]
# 1. pytest -m gpu (CUDA-graph capture and replay of both controllers and of the PPO policy's collection, lean
#    rollout, counter noise, LML and CEM on CUDA);
# 2. the PPO-sample benchmark on CUDA (results/ppo_sample_benchmark_cuda.json, the shipped cartpole-swingup preset);
# 3. the planner benchmark on CUDA (results/planner_benchmark_cuda.json): reference (eager RSSM.imagine), the lean step
#    without graphs (fp32-eager), with CUDA graphs (fp32, bf16) and with the rollout compiled as well (fp32-compile,
#    bf16-compile); the core benchmark (results/core_benchmark_cuda.json);
# 4. a 1-minute phase-1 training smoke on CUDA (Pendulum-v1, a 200-unit model, CEM 1000 x 10; results/train_smoke_cuda.json).
# Each step has its own time limit; a failed step is reported and the next one runs. Missing Python packages can come
# as wheels in .whl/ (see the README's benchmark section); they go to /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import gymnasium, stable_baselines3" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
copy() { if [ -n "${DEST:-}" ]; then mkdir -p "$DEST"; cp results/*_cuda.json "$DEST"/ 2>/dev/null; fi; }
DEST="${1:-}"
status=0
step() { echo "=== $1 ($(date +%T))"; shift; "$@" || { echo "FAILED ($?): $*"; status=1; }; copy; }
step "pytest -m gpu" timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_cem.py tests/test_lml.py
step "PPO-sample benchmark (CUDA)" timeout 90 python3 benchmarks/bench_ppo.py --device cuda --runtimes reference fp32 \
  --repeats 5 --out results/ppo_sample_benchmark_cuda.json
step "planner benchmark (CUDA)" timeout 300 python3 benchmarks/bench_planner.py --devices cuda \
  --runtimes reference fp32-eager fp32 bf16 fp32-compile bf16-compile --batches 1 8 32 --repeats 20 \
  --out results/planner_benchmark_cuda.json
step "core benchmark" timeout 45 python3 benchmarks/bench_core.py --repeats 10 --out results/core_benchmark_cuda.json
run_dir=$(mktemp -d)
start=$(date +%s)
step "training smoke (CUDA)" timeout 120 python3 train.py --config configs/planet/debug.yaml --run-dir "$run_dir/run" \
  --set device=cuda --set env_id=Pendulum-v1 --set action_repeat=2 --set model.hidden_size=200 --set model.layer_size=200 \
  --set planner.horizon=12 --set planner.n_samples=1000 --set planner.n_elites=100 --set planner.n_iters=10 \
  --set train.total_env_steps=2000 --set train.eval_every=1000 --set train.batch_size=16 --set train.chunk_length=20 \
  --set train.updates_per_episode=10 --set final_eval_episodes=2
python3 - "$run_dir/run" "$(( $(date +%s) - start ))" <<'PY'
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
out = {"wall_s": int(sys.argv[2]), "finished": summary is not None, "summary": summary,
       "command": "benchmarks/gpu_check.sh: train.py --config configs/planet/debug.yaml on CUDA (see the script)"}
pathlib.Path("results/train_smoke_cuda.json").write_text(json.dumps(out, indent=2, default=str))
print(json.dumps({k: v for k, v in out.items() if k != "summary"}))
PY
copy
echo "=== done ($(date +%T)), status $status"
exit $status
