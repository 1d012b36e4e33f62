#!/usr/bin/env bash
# GPU validation kit of the Triton kernels: one command on a machine with one CUDA GPU and no internet.
#
#   benchmarks/gpu_validate.sh [--budget S] [--out DIR]   on the GPU machine: installs the wheels carried in .whl/
#                                                         and fastrq (from this tree) into a private folder, then
#                                                         runs benchmarks/gpu_validate.py (results: one folder,
#                                                         results.json + report.md + log.txt)
#   benchmarks/gpu_validate.sh --fetch-wheels             here, with internet: fills .whl/ (git-ignored) with the
#                                                         wheels a bare CUDA image lacks (CPython 3.12, manylinux)
#   benchmarks/gpu_validate.sh --dry-run [--out DIR]      on the CPU: the same script under TRITON_INTERPRET=1 with
#                                                         tiny shapes (what CI runs)
#
# The device tool's limits: one command ≤ 10 min, ≤ 8 files back: with --out "$OUT" the run writes 3 files there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# vector-quantize-pytorch (the peer of the timing section) and what it needs beyond torch / numpy / sympy / einops,
# which the GPU image has; pinned to the versions the CPU suite runs with
WHEELS="vector-quantize-pytorch==1.32.0 einx==0.4.3 torch-einops-utils==0.2.0 loguru==0.7.3 frozendict==2.5.1"

case "${1:-}" in
  --fetch-wheels)
    mkdir -p .whl
    platforms=""
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
               manylinux1_x86_64 any; do
      platforms="$platforms --platform $tag"
    done
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      $platforms -d .whl $WHEELS
    ls -l .whl
    exit 0
    ;;
  --dry-run)
    shift
    export TRITON_INTERPRET=1
    exec "$PYTHON" benchmarks/gpu_validate.py --dry-run "$@"
    ;;
esac

SITE=${FASTRQ_SITE:-/tmp/fastrq-site}
rm -rf "$SITE"
mkdir -p "$SITE"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
else
  echo "no .whl/ folder: vector-quantize-pytorch will be missing unless the image has it" >&2
fi
# fastrq itself from this tree, laid out as setup.py installs it (kernels/ and models/ become fastrq.kernels and
# fastrq.models): a plain copy, so no build backend is needed on a machine without network
cp -r fastrq "$SITE/fastrq"
cp -r kernels "$SITE/fastrq/kernels"
cp -r models "$SITE/fastrq/models"
find "$SITE/fastrq" -name __pycache__ -prune -exec rm -rf {} +
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/fastrq-triton-cache}
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
OUT_DIR=""
rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT_DIR="$2"; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
OUT_DIR=${OUT_DIR:-benchmarks/results/gpu_$(date +%F)}
mkdir -p "$OUT_DIR"
OUT_ABS=$(cd "$OUT_DIR" && pwd)
# run from benchmarks/ so that the installed fastrq (not the source folder at the root) is the one imported
set +e
(cd benchmarks && "$PYTHON" gpu_validate.py --out "$OUT_ABS" "${rest[@]}") 2>&1 | tee "$OUT_ABS/log.txt"
exit "${PIPESTATUS[0]}"
