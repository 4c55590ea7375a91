#!/usr/bin/env bash
# Build what the GPU run needs, on any Linux x86-64 machine with a CUDA 13.0 toolchain (nvcc on
# PATH, CUDA_HOME set; without a GPU, link against a libcuda stub on LIBRARY_PATH — see
# docs/model-runtime.md "Devices"). Writes stripped, xz-packed binaries to target/gpu/:
#   model_bench   the model benchmark/parity example (workers/model/examples/model_bench.rs)
#   fusionstream  the worker, for the product checks on the GPU
# Then copy the repository with target/gpu/ to the GPU machine and run benches/gpu/run.sh there.
# `--cpu` builds the same two without CUDA, for a dry run of run.sh on any machine
# (DEVICE=cpu DTYPE=f32 QUICK=1 benches/gpu/run.sh).
# Usage: benches/gpu/build.sh [--cpu]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--cpu" ]; then
  features=()
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
else
  command -v nvcc >/dev/null || { echo "nvcc not on PATH: set up the CUDA 13.0 toolchain first" >&2; exit 1; }
  features=(--features cuda)
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$HOME/.cache/fusionstream/target-cuda}"
fi
cargo build --release --locked "${features[@]}" -p fusionstream-model --example model_bench
cargo build --release --locked "${features[@]}" -p fusionstream --bin fusionstream
# Stripped and xz-packed: what travels to the GPU machine stays small (run.sh unpacks).
rm -rf target/gpu
mkdir -p target/gpu
for b in examples/model_bench fusionstream; do
  name=$(basename "$b")
  strip -o "target/gpu/$name" "$CARGO_TARGET_DIR/release/$b"
  xz -T0 -6 "target/gpu/$name"
done
ls -l target/gpu
