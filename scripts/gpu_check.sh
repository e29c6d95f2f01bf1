#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA build of torch and Triton already installed (no network needed),
# install this tree without fetching anything, run the Triton kernels' tests on cuda, the harness's smoke
# preset on --device cuda (fp32, then --amp bf16), then `groupnorm bench --device cuda`. Output goes to the
# terminal and to $OUT (default gpu-check-out/): test log, smoke runs, bench JSON and table. Ends within about
# 8 minutes (each step has a time limit, the bench the time left; a step that fails is reported and the others
# still run; the exit status is that of the first failure).
#   PYTHON=python3 bash scripts/gpu_check.sh          # the interpreter whose torch and Triton to use
#   GPU_CHECK_SHAPES="8,256,56,56;1,320,64,64"         # the bench's shapes (default below)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
STATUS=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, remember the first failure
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0))s"
    if [ "$rc" != 0 ] && [ "$STATUS" = 0 ]; then STATUS=$rc; fi
}

# 0. What this machine has.
"$PY" - <<'PY' | tee "$OUT/versions.txt"
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
try:
    import triton
    print("triton", triton.__version__)
except ImportError as exc:
    print("triton: not importable:", exc)
PY
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: no CUDA device visible to torch; nothing to check" >&2; exit 1; }

# 1. Install the tree: no build isolation, no dependencies, no index (the C++ CPU kernels compile if a compiler
#    is there; without one the package still installs).
step install 150 "$PY" -m pip install --no-build-isolation --no-deps --no-index -q -e .

# 2. The Triton kernels' tests, on cuda (the conftest picks cuda when torch sees a GPU; no interpreter).
if "$PY" -c "import pytest" 2>/dev/null; then
    step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/kernels/triton
else
    echo "gpu_check: pytest is not installed for $PY: the tests did not run" >&2; STATUS=1
fi

# 3. The harness's CUDA path: the smoke preset on the sample data in the tree, fp32 then bf16 autocast.
SAMPLE=tests/data/fashion-mnist-sample
step smoke-cuda 60 "$PY" -m groupnorm reproduce --experiment all --preset smoke --data-dir "$SAMPLE" \
    --device cuda --out "$OUT/smoke-cuda" --jobs 1 --no-progress
step smoke-cuda-bf16 60 "$PY" -m groupnorm reproduce --experiment all --preset smoke --data-dir "$SAMPLE" \
    --device cuda --amp bf16 --out "$OUT/smoke-cuda-bf16" --jobs 1 --no-progress

# 4. The benchmark: ResNet and UNet shapes and a 64 MB input, fp32 and bf16, both layouts, in the time left
#    of 8 minutes (it prints each case as it finishes and rewrites the JSON after each).
SHAPES=${GPU_CHECK_SHAPES:-"8,256,56,56;1,320,128,128;16,256,64,64"}
LEFT=$((470 - SECONDS)); [ "$LEFT" -lt 60 ] && LEFT=60
step bench "$LEFT" "$PY" -m groupnorm bench --device cuda --shapes "$SHAPES" --dtypes fp32,bf16 \
    --layouts contiguous,channels_last --json "$OUT/bench-gpu.json"

echo "gpu_check: done in ${SECONDS}s, exit status $STATUS; logs in $OUT/"
exit "$STATUS"
