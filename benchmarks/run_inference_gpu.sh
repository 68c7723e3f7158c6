#!/usr/bin/env bash
# Run ON THE GPU DEVICE MACHINE from the repository root, in the call that carries the last piece of
# benchmarks/prepare_inference_gpu.sh's payload (copy every other .carry/gpu/p<k>/* to /tmp/pl first).
# Installs onnxruntime-gpu and tellm under /tmp, then runs, writing JSON and logs into $OUT:
#   1. bench_model_ort.py   model-only ORT CUDA time (Abilene, GEANT, Cogentco, Kdl)
#   2. bench_inference.py   end-to-end gRPC latency, Abilene/GEANT/Cogentco, then Kdl (fewer requests)
# Each step has its own time limit, so one that overruns still leaves the others' results.
set -uo pipefail
REPO=$PWD; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/pl /tmp/x /tmp/work
t0=$(date +%s)
if [[ ! -d /tmp/tellmsite/tellm ]]; then
  last=$(ls -d .carry/gpu/p* | tail -1); cp "$last"/* /tmp/pl/
  cat /tmp/pl/piece* | tar -x -C /tmp/x || { echo "payload incomplete: copy every piece first" >&2; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ortsite /tmp/x/onnxruntime_gpu-*.whl || exit 4
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tellmsite /tmp/x/wheels/*.whl || exit 5
fi
echo "install: $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/ortsite:/tmp/tellmsite PYTHONUNBUFFERED=1
export TELLM_DATA_DIR=/tmp/x/data TELLM_CACHE_DIR=/tmp/x/cache
M="$REPO/inference/models/tellm-te.onnx"
# Not from the repo root: `tellm serve` starts as `python -c ...`, and the root's tellm/ folder (no
# inference subpackage, no generated stubs) would shadow the installed package.
cd /tmp/work
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"; } 2>&1 | tee "$OUT/env.txt"
timeout -k 5 130 python3 "$REPO/benchmarks/bench_model_ort.py" --provider cuda --profile --model "$M" \
  --out "$OUT/model_ort_cuda.json" 2>&1 | tee "$OUT/model_log.txt"
timeout -k 5 110 python3 "$REPO/benchmarks/bench_inference.py" --provider cuda --model "$M" \
  --topologies Abilene geant Cogentco --requests 300 --seconds 6 --max-parallel-runs 1 \
  --out "$OUT/inference_gpu.json" 2>&1 | tee "$OUT/inf_log.txt" | grep -v -E '^\s*$' | cut -c1-300 | head -40
timeout -k 5 200 python3 "$REPO/benchmarks/bench_inference.py" --provider cuda --model "$M" \
  --topologies Kdl --requests 48 --seconds 12 --timeout 120 --max-parallel-runs 1 \
  --out "$OUT/inference_gpu_kdl.json" 2>&1 | tee "$OUT/kdl_log.txt" | grep -v -E '^\s*$' | cut -c1-300 | head -40
echo "done in $(( $(date +%s) - t0 )) s"
