#!/usr/bin/env bash
# CPU benchmark (make bench): full training steps (forward, backward, AdamW) of the ~110M
# parameter `bench-100m` shape, random weights and tokens. Reports tokens/s and GFLOP/s, and,
# as a reference measured in the same run, the GFLOP/s of the plain matmul kernel on one
# layer-sized product, so the figure reads as a fraction of what the kernel itself reaches.
# Environment: BENCH_BATCH (4), BENCH_SEQ (256), BENCH_STEPS (2), BENCH_THREADS (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s train
args=(--init bench-100m --bench --micro-batch "${BENCH_BATCH:-4}" --seq "${BENCH_SEQ:-256}" --steps "${BENCH_STEPS:-2}")
[ -n "${BENCH_THREADS:-}" ] && args+=(--threads "$BENCH_THREADS")
echo "cores: $(nproc); $(cc --version | head -1)"
./train "${args[@]}"
