#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes), for whoever has a CUDA machine:
#   bash benchmarks/gpu_check.sh [COPY_TO_DIR]
# 1. pytest -m gpu (CUDA-graph capture and replay of both controllers, lean rollout and counter noise on CUDA);
# 2. the planner benchmark on CUDA (results/planner_benchmark_cuda.json) and the core benchmark (results/core_benchmark_cuda.json);
# 3. a 2-minute phase-1 training smoke on CUDA (Pendulum-v1, a 200-unit model, CEM 1000 x 10; results/train_smoke_cuda.json).
# Missing Python packages can come as wheels in .whl/ (see the README's benchmark section); they go to /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import gymnasium, stable_baselines3" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
status=0
step() { echo "=== $1"; shift; "$@" || { echo "FAILED ($?): $*"; status=1; }; }
step "pytest -m gpu" timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
step "planner benchmark (CUDA)" timeout 150 python3 benchmarks/bench_planner.py --devices cuda --runtimes reference fp32 bf16 \
  --batches 1 8 32 --repeats 20 --out results/planner_benchmark_cuda.json
step "core benchmark" timeout 60 python3 benchmarks/bench_core.py --repeats 10 --out results/core_benchmark_cuda.json
run_dir=$(mktemp -d)
start=$(date +%s)
step "training smoke (CUDA)" timeout 150 python3 train.py --config configs/planet/debug.yaml --run-dir "$run_dir/run" \
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
if [ $# -ge 1 ]; then mkdir -p "$1"; cp results/*_cuda.json "$1"/ 2>/dev/null; fi
exit $status
