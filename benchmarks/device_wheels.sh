#!/usr/bin/env bash
# Wheels a GPU host without package-registry access needs beside its own PyTorch (Python 3.12, x86-64): RecBole
# 1.2.1 and the two small packages it imports that such images lack, faiss (CPU build: k-means and OPQ), and
# pandas 2.3 (RecBole 1.2.1 breaks on pandas 3) with its tz packages: 34.2 MB into ./.whl (git-ignored). Then the
# same packages installed for that host into one folder and packed as .whl/site.tar.xz (18.4 MB: xz packs the
# shared libraries far tighter than the wheels' zip), which is what benchmarks/gpu_suite.sh unpacks: with the
# tracked tree (31.9 MB) well inside the lent machine's 64 MiB carry limit, where .whl's wheels would not leave room
# for the suite's prefitted caches. Not faiss-gpu (the `gpu` extra): its wheel alone is 135 MB, and it links CUDA 12's
# runtime and cuBLAS, which the lent image (CUDA 13) does not hold; there the tokenizers' faiss steps take the CPU
# index (tokenization/faiss_index.py).
# Run here, with network access. On the GPU host, from the checkout root, gpu_suite.sh unpacks site.tar.xz; for other
# commands (README, "Benchmarks"), carry .whl/site.tar.xz and prefix them with
#   tar -xJf .whl/site.tar.xz -C /tmp && export PYTHONPATH=/tmp/site:$PWD &&
set -euo pipefail
cd "$(dirname "$0")/.."
platforms=(--only-binary=:all: --python-version 3.12 --implementation cp
           --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download --no-deps "${platforms[@]}" -d .whl \
    recbole==1.2.1 colorlog texttable faiss-cpu==1.15.1 pandas==2.3.3 pytz tzdata
stage=$(mktemp -d)
python3 -m pip install -q --no-deps --no-index --no-compile "${platforms[@]}" --target "$stage/site" .whl/*.whl
tar -C "$stage" -cf - site | xz -6 -T0 >.whl/site.tar.xz
rm -rf "$stage"
du -sh .whl/*.whl .whl/site.tar.xz
