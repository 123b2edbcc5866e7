#!/bin/bash
# NAME : the 3-stage W1A1 recipe, 10 steps per stage on the 320 longest STS-B pairs, RSS traced
cd /work/runs/s61/src
export OMP_NUM_THREADS=1 PYTHONPATH=${SRC:-/work/runs/s61/src}
/usr/bin/time -v /work/main/.venv/bin/python /work/runs/s61/mem/rss_trace.py /work/runs/s61/mem/$1.jsonl -- hf_binary_bert.cli distill --teacher /work/runs/s58/teacher-stsb --task stsb --data-dir /work/runs/s61/data/STS-B-long --output-dir /work/runs/s61/mem/out-$1 --seed 42 --no-progress --no-latency --weight-scale learned_offset --scale-granularity head --embedding-bits 1 --activation-quantizer elastic --batch-size 32 --learning-rate 5e-4 --max-seq-length 128 --activation-bits 1 --multi-step W1A4,W1A2,W1A1 --steps-per-stage 10 10 10 --max-eval-samples 64 --save-steps 5 --save-total-limit 1 $EXTRA > /work/runs/s61/mem/$1.log 2>&1
grep -E "Maximum resident" /work/runs/s61/mem/$1.log; tail -1 /work/runs/s61/mem/$1.jsonl | cut -c1-600
