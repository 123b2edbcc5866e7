#!/usr/bin/env bash
# The 9 W1 students (weight_scale × scale_granularity) distilled on SST-2 from the same full-precision teacher, on the
# same budget. Usage: examples/run_w1_sweep.sh TEACHER_DIR OUT_DIR [STEPS] [PARALLEL]
#   TEACHER_DIR: a BERT fine-tuned on SST-2 (e.g. ../shared/teachers/minilm-sst2, all-MiniLM-L6-v2 after one epoch)
#   STEPS: distillation steps at batch 32 (default 400); PARALLEL: runs at a time, one thread each (default 2)
# Then: python examples/collect_sweep.py OUT_DIR
set -euo pipefail
teacher=$1; out=$2; steps=${3:-400}; parallel=${4:-2}
mkdir -p "$out"
run() {
  scheme=$1; granularity=$2
  OMP_NUM_THREADS=1 hf-binary-bert distill --teacher "$teacher" --task sst2 --output-dir "$out/$scheme-$granularity" \
    --weight-scale "$scheme" --scale-granularity "$granularity" --max-steps "$steps" --batch-size 32 \
    --max-seq-length 64 --learning-rate "${LR:-5e-4}" --no-latency --no-progress > "$out/$scheme-$granularity.log" 2>&1
  echo "done $scheme-$granularity"
}
export -f run; export teacher out steps
for s in mean_abs learned learned_offset; do for g in tensor head row; do echo "$s $g"; done; done |
  xargs -P "$parallel" -L 1 bash -c 'run $0 $1'
