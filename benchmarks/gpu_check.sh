#!/usr/bin/env bash
# GPU check, under 8 minutes on one H100 / H200: the CUDA tests, then the benchmark in bfloat16 and in
# float16 on the GPU. Each benchmark run writes benchmarks/results/cuda-DTYPE.json and its table into
# docs/benchmarks.md (between the "results: cuda-DTYPE" markers), naming the card.
#
#   bash benchmarks/gpu_check.sh            # from anywhere; runs in the repository root
#   QUICK=1 bash benchmarks/gpu_check.sh    # smoke test: the small grid, no docs
#
# What the CUDA tests check (tests marked `cuda`): every block on CUDA in every dtype against the
# float64 reference, under autocast, and that the fused temporal attention runs on the flash /
# memory-efficient scaled-dot-product kernels (the math kernel disabled), forward and backward.
set -euo pipefail
cd "$(dirname "$0")/.."

python - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch")
print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

# 1. the CUDA tests (about a minute; each step has a timeout so that the whole stays under 8 minutes)
timeout 120 python -m pytest -q -m cuda -p no:cacheprovider tests/test_fusion.py tests/test_blocked_attention.py

# 2. the benchmark: THUMOS size (16 x 750 x 1024) + long videos, bf16 then fp16 (about 2 minutes each)
long=(--long-times 8192 32768 65536 --long-plain-max 32768)
if [[ "${QUICK:-0}" == "1" ]]; then
    extra=(--quick)
else
    extra=("${long[@]}")
fi
for dtype in bfloat16 float16; do
    timeout 170 python benchmarks/attention.py --device cuda --dtype "$dtype" "${extra[@]}"
done
echo "gpu_check: done"
