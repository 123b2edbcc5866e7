#!/usr/bin/env bash
# The W1A{32,8,4,2,1} × {plain, BiBERT, BiT} (× learned α/γ) table of docs/results.md, one `hf-binary-bert distill`
# per cell, every cell with the same teacher, data, seed list and number of optimizer steps (a multi-step BiT row
# splits its steps evenly over its stages).
#
# usage: examples/run_full_binarization.sh TASK TEACHER OUT STEPS "SEEDS" "ROWS" "COLUMNS" [extra distill flags...]
#   e.g. examples/run_full_binarization.sh sst2 ../shared/teachers/minilm-sst2 runs/full 150 "42" \
#          "plain plain_ag bibert bibert_ag bit bit_ag" "1 2 4 8" --max-seq-length 64
# Rows: plain (sign activations, softmax, mean|W| per tensor), bibert (Bi-Attention + DMD, mean|W| per row),
# bit (elastic activations, binarized softmax, multi-step W1A4 → … → W1A<b>, mean|W| per row); the `_ag` variants
# use the blog's learned α/γ per head instead. Every row with activation bits < 32 binarizes the word embeddings
# (1-1-b). Column 32 is W1A32 (1-32-32 with fp16 embeddings), where the three rows coincide.
set -euo pipefail
task=$1 teacher=$2 out=$3 steps=$4 seeds=$5 rows=$6 columns=$7
shift 7
lr=${LR:-5e-4}
mkdir -p "$out"
for seed in $seeds; do
  for bits in $columns; do
    for row in $rows; do
      dir="$out/$row/W1A$bits/seed$seed"
      [ -f "$dir/comparison.json" ] && continue
      flags=()
      case $row in
        *_ag) flags+=(--weight-scale learned_offset --scale-granularity head) ;;
        *) flags+=(--weight-scale mean_abs --scale-granularity "$([ "${row%_ag}" = plain ] && echo tensor || echo row)") ;;
      esac
      n=$steps
      if [ "$bits" != 32 ]; then
        flags+=(--activation-bits "$bits" --embedding-bits 1)
        case ${row%_ag} in
          plain) ;;
          bibert) flags+=(--attention-type bi_attention --dmd-loss-weight 1) ;;
          bit)
            flags+=(--activation-quantizer elastic)
            schedule=""
            for b in 4 2 1; do
              if [ "$b" -gt "$bits" ]; then schedule+="W1A$b,"; fi
            done
            schedule+="W1A$bits"
            stages=$(echo "$schedule" | tr ',' '\n' | wc -l)
            n=$(( steps / stages ))
            [ "$stages" -gt 1 ] && flags+=(--multi-step "$schedule")
            ;;
        esac
      elif [ "${row%_ag}" != plain ]; then
        continue  # W1A32: BiBERT / BiT need quantized activations; the plain rows are the W1A32 cells
      fi
      mkdir -p "$(dirname "$dir")"
      echo "== $task $row W1A$bits seed $seed: ${flags[*]} ($n steps per stage)"
      budget=(--max-steps "$n")  # with --multi-step, --max-steps is the total: give each stage its n steps
      [[ " ${flags[*]} " == *" --multi-step "* ]] && budget=(--steps-per-stage "$n")
      hf-binary-bert distill --teacher "$teacher" --task "$task" --output-dir "$dir" "${budget[@]}" \
        --learning-rate "$lr" --seed "$seed" --no-latency --no-progress --logging-steps 25 "${flags[@]}" "$@" \
        > "$dir.log" 2>&1 || { echo "FAILED: see $dir.log"; tail -5 "$dir.log"; }
    done
  done
done
