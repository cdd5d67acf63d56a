#!/usr/bin/env bash
# The GPU suite (issue 16) in one command, from the checkout root of a GPU host without registry access:
#   bash benchmarks/gpu_suite.sh                # rows in $OUT (else results/gpu-suite): gpu-suite.csv, .md, .log
#   bash benchmarks/gpu_suite.sh --rehearse     # the CPU rehearsal on the test fixture (tests/test_gpu_suite.py)
# Installs the wheels that benchmarks/device_wheels.sh put in .whl (carry it; not when rehearsing: they are built for
# the GPU host's Python 3.12), then runs benchmarks/gpu_suite.py, which fits its models into 540 s counted from here;
# `timeout` stops it at 570 s whatever happens, inside the lent machine's 600 s per command. Options go to
# gpu_suite.py (see its docstring).
set -uo pipefail
cd "$(dirname "$0")/.."
export GPU_SUITE_START=${GPU_SUITE_START:-$(date +%s)} PYTHONUNBUFFERED=1
out=${OUT:-results/gpu-suite}
python=${PYTHON:-python3}  # the tests name their interpreter
for arg in "$@"; do
    case $arg in
        --out=*) out=${arg#--out=} ;;
        --rehearse) rehearse=1 ;;
    esac
done
mkdir -p "$out"
: >"$out/gpu-suite.log"
if [ -z "${rehearse:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl 2>&1 | tee -a "$out/gpu-suite.log" || { echo "gpu_suite.sh: installing .whl/*.whl failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${rehearse:-}" ] && command -v nvidia-smi >/dev/null; then  # the driver, which torch does not report
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$out/gpu-suite.log"
fi
left=$((570 - ($(date +%s) - GPU_SUITE_START)))
OUT=$out timeout --kill-after=10 "$left" "$python" benchmarks/gpu_suite.py "$@" 2>&1 | tee -a "$out/gpu-suite.log"
