#!/bin/bash
# The GPU numbers of issue 14 item 7 in one run, on a machine with CUDA: the GPU-marked tests, then
# W2-W4 and the scaling step up to 108,000 atoms for every family on the device, each family next to
# the peer harnesses that match it (the peers choose their own device).
#   bash benchmarks/gpu.sh [OUT_DIR]     (default gpu_bench; writes gpu_tests.txt, gpu.jsonl, gpu.md)
set -euo pipefail
out=${1:-gpu_bench}
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gnnpot gpu.sh: no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_name.txt"
python -m pytest -m gpu -q tests | tee "$out/gpu_tests.txt"
python -m benchmarks --device cuda --models schnet,painn,dimenet,nequip,mace --sizes small,paper \
  --workloads W2,W3,W4 --scaling --scaling-repeats 3,6,14,20,30 --peers mace,nequip \
  --out "$out/gpu.jsonl" --markdown "$out/gpu.md"
