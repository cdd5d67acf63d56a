#!/usr/bin/env bash
# Wheels a GPU host without package-registry access needs beside its own PyTorch (Python 3.12, x86-64): RecBole
# 1.2.1 and the two small packages it imports that such images lack, faiss (CPU build: k-means and OPQ), and
# pandas 2.3 (RecBole 1.2.1 breaks on pandas 3) with its tz packages. About 33 MB, into ./.whl (git-ignored).
# Run here, with network access; on the GPU host, from the checkout root (see README, "Benchmarks"):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    recbole==1.2.1 colorlog texttable faiss-cpu==1.15.1 pandas==2.3.3 pytz tzdata
du -sh .whl
