#!/bin/bash
# The seed's θ(1−θ) on the weights vs the gated form, at the same (small) budget: MiniLM SST-2, FFN neurons only,
# 40 steps of 16 sentences of 64 tokens, one thread. Collect: python examples/collect_pruning_comparison.py OUT 0.9
# Usage: examples/run_pruning_comparison.sh OUT (run from the repository root; ../shared holds the teacher and data)
set -euo pipefail
out=${1:?output folder}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for form in weight gate; do
  python -m hf_binary_bert.cli prune --model ../shared/teachers/minilm-sst2 --task sst2 \
    --output-dir "$out/$form" --max-steps 40 --batch-size 16 --max-seq-length 64 \
    --max-train-samples 640 --max-eval-samples 256 --learning-rate 1e-4 --group-lasso-weight 1e-3 \
    --binarizing-weight 1e-4 --prune-modules intermediate --epsilon 0.9 --penalty-form "$form" \
    --no-latency --no-progress --logging-steps 10 --seed 0
done
