#!/usr/bin/env bash
# Build bench/wheelhouse for bench/gpu_bench.sh, on a machine that can reach PyPI.
#
#   bash bench/make_wheelhouse.sh 3.11                      # the default package set, with dependencies
#   bash bench/make_wheelhouse.sh 3.11 datasets shap        # only what the GPU machine lacks
#
# The first argument is the GPU machine's Python version (wheels are ABI-specific). torch is never
# downloaded (the GPU machine has its CUDA build). The device tool carries at most 64 MiB with the
# tree, and the full default set (pyarrow, scipy, llvmlite, opencv ...) is ~200 MB, so list only
# the packages gpu_bench.sh reports as missing there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:?usage: make_wheelhouse.sh PYTHON_VERSION [PACKAGES...]}
shift
PACKAGES=${*:-"datasets evaluate shap tifffile opencv-python-headless scikit-learn"}
mkdir -p bench/wheelhouse
printf '*\n' > bench/wheelhouse/.gitignore  # never committed; the device tool carries it (carry=["bench/wheelhouse"])
python3 -m pip download --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest bench/wheelhouse $PACKAGES
rm -f bench/wheelhouse/torch-*.whl bench/wheelhouse/nvidia_*.whl bench/wheelhouse/triton-*.whl
du -sh bench/wheelhouse
size_mb=$(du -sm bench/wheelhouse | cut -f1)
if [ "$size_mb" -gt 60 ]; then
    echo "warning: ${size_mb} MB is more than the device tool carries (64 MiB); keep only the missing packages." >&2
fi
