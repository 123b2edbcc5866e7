#!/bin/bash
# One seed of issue 16's SST-2 students as a measurement page, assembled from the CLI's own output files
# (stages.md, comparison.md/json, distill_results.json) and results_1_1_1.py's results.md; nothing typed by hand.
#
#   bash examples/collect_sst2_single_seed.sh runs/r111 W1A1 > docs/measurements/sst2-1000steps-seed42.md
#
# RUN_ROOT is the `results_1_1_1.py --out` folder; for each NAME (W1A1, W1A8) it reads RUN_ROOT/sst2/NAME-seed42/,
# the command in RUN_ROOT/sst2/NAME-seed42.cmd and `/usr/bin/time -v`'s report in RUN_ROOT/sst2/NAME-seed42.time.
set -e
root=$1; shift
echo "# SST-2 dev at issue 16's budget: 1000 steps, 64 tokens, batch 32, seed 42"
echo
echo "One seed (42) per student, not the 3-seed table of \`examples/results_1_1_1.py\`. Teacher: \`../shared/teachers/minilm-sst2\`."
echo "CPU: $(lscpu | grep 'Model name' | sed 's/.*: *//') ($(nproc) cores shared with other jobs, so wall times"
echo "are of a contended machine), 1 torch thread (\`OMP_NUM_THREADS=1\`), \`nice\`d, torch $(python -c 'import torch; print(torch.__version__)')."
for name in "$@"; do
  run=$root/sst2/$name-seed42
  echo
  echo "## $name"
  echo
  echo "Command (run from the repository root; the command that \`results_1_1_1.py --dry-run\` prints, plus \`--save-steps 50\`"
  echo "for resumable checkpoints, which does not change the training):"
  echo
  echo '```'
  grep -h "^python -m hf_binary_bert.cli distill" "$run.cmd"
  echo '```'
  echo
  echo "Wall time $(grep 'Elapsed (wall clock)' "$run.time" | sed 's/.*: //') (h:mm:ss or m:ss), CPU time $(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.0f s", u+s}' "$run.time"),"
  echo "peak RSS $(awk -F': ' '/Maximum resident/{printf "%.0f MiB", $2 / 1024}' "$run.time") (\`/usr/bin/time -v\`),"
  echo "training $(python -c "import json; r = json.load(open('$run/distill_results.json')); print(round(sum(s['train_seconds'] for s in r.get('stages', [r]))))") s wall in the trainer (the stages' \`train_seconds\` in distill_results.json; evaluations and loading not included)."
  python - "$run/comparison.json" "$name" <<'PY'
import json, sys
teacher, student = json.load(open(sys.argv[1]))
share = student["accuracy"] / teacher["accuracy"]
goal = {"W1A1": 0.90, "W1A8": 0.98}[sys.argv[2]]
print(f"\n**Dev accuracy {student['accuracy']:.4f}, {100 * share:.1f} % of the teacher's {teacher['accuracy']:.4f}; "
      f"goal ≥ {100 * goal:.0f} %: {'met' if share >= goal else 'not met'}** (one seed).")
PY
  if [ -f "$run/stages.md" ]; then
    echo
    echo "Stages (the CLI's \`stages.md\`; each stage scored against the original teacher on the 872 dev sentences):"
    echo
    cat "$run/stages.md"
  fi
  echo
  echo "Teacher against the saved student (the CLI's \`comparison.md\`: the packed checkpoint loaded back, bitwise kernels):"
  echo
  cat "$run/comparison.md"
done
echo
echo "\`python examples/results_1_1_1.py --out $root --tasks sst2 --seeds 42 --students $* --teacher sst2=../shared/teachers/minilm-sst2\`"
echo "(run after the students: it finds them done and only writes the table) gives \`results.md\` (one seed, so no"
echo "standard deviation):"
echo
cat "$root/results.md"
echo
echo "Assembled by \`bash examples/collect_sst2_single_seed.sh $root $*\`."
