#!/usr/bin/env bash
# Masked LM: give all-MiniLM-L6-v2 an MLM head (fine-tune on WikiText-2 valid + tiny-shakespeare), then distil a W1
# student from it and compare both on WikiText-2 test (cross-entropy, accuracy, MRR on the masked positions, size,
# latency). 128-token blocks, 15 % dynamic masking; the test blocks are masked once with a fixed seed.
# Usage (from the repository root): examples/run_mlm.sh [OUT_DIR] [TEACHER_STEPS] [STUDENT_STEPS]
set -euo pipefail
out=${1:-runs/mlm}; teacher_steps=${2:-150}; student_steps=${3:-150}
train="data/text/wikitext-2/valid.txt data/text/tiny-shakespeare/input.txt"
evalf="data/text/wikitext-2/test.txt"
hf-binary-bert finetune --model minilm --task mlm --train-files $train --eval-files $evalf --max-eval-samples 256 \
  --max-steps "$teacher_steps" --batch-size 16 --learning-rate 2e-4 --output-dir "$out/teacher" --no-progress
hf-binary-bert distill --teacher "$out/teacher" --task mlm --train-files $train --eval-files $evalf \
  --max-eval-samples 256 --max-steps "$student_steps" --batch-size 16 --learning-rate 5e-4 \
  --weight-scale learned_offset --scale-granularity head --fp-dtype float16 --output-dir "$out/student" --no-progress
