#!/usr/bin/env bash
# Idempotent set-up for a fresh clone: Debian's Fashion-MNIST, a virtual environment in .venv with
# torch 2.13.0 (the CPU build on this machine's disk; a looser pin would download a CUDA build of several GB),
# and the package itself (editable, which compiles the C kernels) with its test dependencies.
# A second run only re-installs the package when its build inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

# 1. Data: Fashion-MNIST as gzipped IDX files (Debian package dataset-fashion-mnist).
DATA=/usr/share/datasets/fashion-mnist
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
    echo "[setup] installing Debian package dataset-fashion-mnist"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
            echo "[setup] warning: not root and no sudo; install dataset-fashion-mnist yourself or pass --data-dir" >&2
            SUDO=skip
        fi
    fi
    if [ "$SUDO" != "skip" ]; then
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
    fi
fi

# 2. The environment.
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
if ! "$VPY" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('torch').startswith('2.13.0') else 1)" 2>/dev/null; then
    echo "[setup] installing torch==2.13.0 (CPU build)"
    "$VPY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi

# 3. The package, re-installed only when its build inputs change.
STAMP_SRC=$(cat pyproject.toml setup.py src/groupnorm/kernels/_build.py $(find src/groupnorm/kernels -name '*.c' -o -name '*.h' -o -name '*.cpp' | sort) 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f .setup-stamp ] || [ "$(cat .setup-stamp)" != "$STAMP_SRC" ] || ! "$VPY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('groupnorm') else 1)" 2>/dev/null; then
    echo "[setup] installing groupnorm (editable, compiling kernels) and test dependencies"
    "$VPY" -m pip install -q --disable-pip-version-check "torch==2.13.0" setuptools wheel
    "$VPY" -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
    echo "$STAMP_SRC" > .setup-stamp
fi
# 4. Triton, for the GPU kernels' tests: its interpreter (TRITON_INTERPRET=1) runs them on CPU tensors. 3.7.1 is
#    what torch 2.13's CUDA build pins (3.6's interpreter cannot run a loop with a runtime bound).
if ! "$VPY" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('triton') == '3.7.1' else 1)" 2>/dev/null; then
    echo "[setup] installing triton==3.7.1 (the GPU kernels' tests run in its interpreter)"
    "$VPY" -m pip install -q --disable-pip-version-check "triton==3.7.1"
fi
echo "[setup] ready: $("$VPY" -c 'import importlib.metadata as m; print("groupnorm", m.version("groupnorm"), "torch", m.version("torch"))')"
# the kernels are an optional extension: a compile error is only a pip warning, so say it here
"$VPY" -c 'from groupnorm import kernels as k; e = k.load_error(); e and print("[setup] warning: compiled kernels unavailable, plain PyTorch path only:", e)' || true
