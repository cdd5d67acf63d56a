#!/usr/bin/env bash
# Wheels a GPU host without package-registry access needs beside its own PyTorch (Python 3.12, x86-64): RecBole
# 1.2.1 and the two small packages it imports that such images lack, faiss (CPU build: k-means and OPQ), and
# pandas 2.3 (RecBole 1.2.1 breaks on pandas 3) with its tz packages. 34.2 MB, into ./.whl (git-ignored); with the
# tracked tree (31.8 MB) just under the lent machine's 64 MiB carry limit. Not faiss-gpu (the `gpu` extra): its
# wheel alone is 135 MB, and it links CUDA 12's runtime and cuBLAS, which the lent image (CUDA 13) does not hold;
# there the tokenizers' faiss steps take the CPU index (tokenization/faiss_index.py).
# Run here, with network access; on the GPU host, from the checkout root, benchmarks/gpu_suite.sh installs them
# (README, "Benchmarks"), or by hand:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    recbole==1.2.1 colorlog texttable faiss-cpu==1.15.1 pandas==2.3.3 pytz tzdata
du -sh .whl
