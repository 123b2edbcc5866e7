#!/bin/bash
# NAME SRC [EXTRA...]: the 3-stage W1A1 recipe, 10 steps per stage on the 320 longest STS-B pairs, RSS traced
NAME=$1; SRC=$2; shift 2
cd $SRC
export OMP_NUM_THREADS=1 PYTHONPATH=$SRC
/usr/bin/time -v /work/main/.venv/bin/python /work/runs/s62/mem/rss_trace.py /work/runs/s62/mem/$NAME.jsonl -- hf_binary_bert.cli distill --teacher ${TEACHER:-/work/runs/s62/teacher-quick} --task stsb --data-dir /work/runs/s62/data/STS-B-long --output-dir /work/runs/s62/mem/out-$NAME --seed 42 --no-progress --no-latency --weight-scale learned_offset --scale-granularity head --embedding-bits 1 --activation-quantizer elastic --batch-size 32 --learning-rate 5e-4 --max-seq-length 128 --activation-bits 1 --multi-step W1A4,W1A2,W1A1 --steps-per-stage 10 10 10 --max-eval-samples 64 --save-steps 5 --save-total-limit 1 "$@" > /work/runs/s62/mem/$NAME.log 2>&1
grep -E "Maximum resident|Elapsed|Exit status" /work/runs/s62/mem/$NAME.log; tail -1 /work/runs/s62/mem/$NAME.jsonl | cut -c1-400
