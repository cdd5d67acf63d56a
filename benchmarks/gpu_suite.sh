#!/usr/bin/env bash
# The GPU suite (issue 16) in one command, from the checkout root of a GPU host without registry access:
#   bash benchmarks/gpu_suite.sh                # rows in $OUT (else results/gpu-suite): gpu-suite.csv, .md, .log
#   bash benchmarks/gpu_suite.sh --rehearse     # the CPU rehearsal on the test fixture (tests/test_gpu_suite.py)
# Unpacks the packages benchmarks/device_wheels.sh packed into .whl/site.tar.xz (carry it, and the tokenizer caches
# of `gpu_suite.py --prefit`, .whl/gpu-suite-cache.tar.xz; not when rehearsing: they are built for the GPU host's
# Python 3.12), then runs benchmarks/gpu_suite.py, which fits its models into 540 s counted from here;
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
if [ -z "${rehearse:-}" ] && [ -f .whl/site.tar.xz ]; then
    rm -rf /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp || { echo "gpu_suite.sh: unpacking .whl/site.tar.xz failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${rehearse:-}" ] && command -v nvidia-smi >/dev/null; then  # the driver, which torch does not report
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$out/gpu-suite.log"
fi
left=$((570 - ($(date +%s) - GPU_SUITE_START)))
[ -n "${rehearse:-}" ] && left=3600  # the 10-minute slot's hard stop; a CPU shared with other jobs may need longer
OUT=$out timeout --kill-after=10 "$left" "$python" benchmarks/gpu_suite.py "$@" 2>&1 | tee -a "$out/gpu-suite.log"
