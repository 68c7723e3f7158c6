#!/usr/bin/env bash
# Run ON THE GPU DEVICE MACHINE (see benchmarks/README.md, "Per-topology specialised head").
# Payload (earlier call in the same machine session, or this one): /tmp/pl/ortpart* (onnxruntime-gpu,
# sm_90 kernels only, as a zstd tar of its site directory) and gRPC/protobuf/highspy wheels; SRC_DIR holds this
# repository's packages and DATA_DIR the topology files. Old (generic graph) and new (specialised) are
# measured side by side in this one call. Writes JSON and logs into $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/work; t0=$(date +%s)
[[ -n "${CACHE_SEED:-}" && -d "$CACHE_SEED" ]] && mkdir -p /tmp/cache && cp -rn "$CACHE_SEED"/* /tmp/cache/
[[ -d /tmp/ortsite/onnxruntime ]] || { mkdir -p /tmp/ortsite && cat /tmp/pl/ortpart* | zstd -d | tar -x -C /tmp/ortsite; } || exit 3
[[ -d /tmp/site/grpc ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/pl/*.whl || exit 5
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r "$SRC_DIR"/tecore "$SRC_DIR"/tellm /tmp/pkg/ &&
  for d in controller inference policy mininet_scenarios contract; do [[ -d "$SRC_DIR/$d" ]] && cp -r "$SRC_DIR/$d" /tmp/pkg/tellm/$d; done
echo "install: $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/ortsite:/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1 TELLM_DATA_DIR=$DATA_DIR TELLM_CACHE_DIR=/tmp/cache
B=$SRC_DIR/benchmarks; cd /tmp/work
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"; } 2>&1 | tee "$OUT/env.txt"
timeout -k 5 ${MODEL_LIMIT:-200} python3 $B/bench_specialised.py --provider cuda --runs 30 --batches 8 32 \
  --topologies Abilene sndlib:geant zoo:GtsCe zoo:Cogentco zoo:Kdl --synthetic-paths zoo:Kdl \
  --out "$OUT/specialised_cuda.json" 2>&1 | grep -v '^\s*$' | cut -c1-900 | tee "$OUT/specialised_cuda.log"
for lab in new old; do X=""; [[ $lab == old ]] && X="--no-specialise"
  timeout -k 5 ${SERVE_LIMIT:-80} python3 $B/bench_inference.py --provider cuda --model $SRC_DIR/inference/models/tellm-te.onnx \
    --paths-strategy shortest --topologies Abilene geant Cogentco --concurrency 1 8 32 --requests 300 --seconds 3 \
    --timeout 60 --max-parallel-runs 1 --serve-args="$X" --out "$OUT/served_cuda_$lab.json" 2>&1 | grep -v '^\s*$' | cut -c1-300 | head -30
done
echo "done in $(( $(date +%s) - t0 )) s"
