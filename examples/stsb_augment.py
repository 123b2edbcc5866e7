"""Write a GLUE-format task folder whose train.tsv holds every training pair and N perturbed copies of it — data
augmentation for distillation on a small task (issue 16: STS-B W1A1 stays near the mean).

BiBERT and BiT distil the small GLUE tasks on TinyBERT's augmented data (Jiao et al. 2020: each word replaced, with
probability 0.4, by one of its 15 nearest neighbours from BERT's masked-LM predictions or GloVe). Neither a masked-LM
head for the MiniLM teacher nor GloVe is available here (offline), so this is the plain version of the idea: each word
of sentence1 / sentence2 is replaced, with probability `--probability`, by a word drawn from the training split's
own word frequencies (seeded). The copies keep the original score, which distillation does not read (the default
losses are the teacher's prediction and hidden states, computed on the perturbed pair itself); dev.tsv is copied
unchanged, so the evaluation is the same as without augmentation.

`--swap` adds every training pair once more with sentence1 and sentence2 exchanged: STS-B's score is symmetric, so the
swapped pair stays in the task's distribution (no word changes), and the teacher labels it itself. Measured on the
W1A8 student (docs/results.md, stops 59–60): no gain over the original pairs at the same number of steps.

    python examples/stsb_augment.py --data-dir runs/stsb/split --out runs/stsb/split-aug4 --copies 4
    python examples/stsb_augment.py --data-dir runs/stsb/split --out runs/stsb/split-swap --copies 0 --swap
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import random
import shutil
import sys


def _perturb(sentence: str, rng: random.Random, words: list[str], weights: list[int], probability: float) -> str:
    tokens = sentence.split()
    return " ".join(rng.choices(words, weights)[0] if rng.random() < probability else t for t in tokens)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a GLUE STS-B folder (train.tsv, dev.tsv)")
    parser.add_argument("--out", required=True, help="folder to write (must not exist)")
    parser.add_argument("--copies", type=int, default=4, help="perturbed copies per training pair")
    parser.add_argument("--probability", type=float, default=0.3, help="chance that a word is replaced")
    parser.add_argument("--swap", action="store_true", help="also add every pair with its two sentences exchanged")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if os.path.exists(args.out):
        sys.exit(f"--out: {args.out} exists; choose a new folder")
    if args.copies < 0 or (args.copies == 0 and not args.swap) or not 0 < args.probability <= 1:
        sys.exit("--copies must be ≥ 1 (≥ 0 with --swap) and --probability in (0, 1]")
    with open(os.path.join(args.data_dir, "train.tsv"), newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    first, second = header.index("sentence1"), header.index("sentence2")
    counts = collections.Counter(w for r in rows for w in (r[first] + " " + r[second]).split())
    words, weights = list(counts), list(counts.values())
    rng = random.Random(args.seed)
    out_rows = list(rows)
    for copy in range(args.copies):
        for r in rows:
            new = list(r)
            new[first] = _perturb(r[first], rng, words, weights, args.probability)
            new[second] = _perturb(r[second], rng, words, weights, args.probability)
            out_rows.append(new)
    if args.swap:
        for r in rows:
            new = list(r)
            new[first], new[second] = r[second], r[first]
            out_rows.append(new)
    os.makedirs(args.out)
    with open(os.path.join(args.out, "train.tsv"), "w") as f:  # fields as read: no tabs, no quoting added
        f.writelines("\t".join(r) + "\n" for r in [header, *out_rows])
    shutil.copy(os.path.join(args.data_dir, "dev.tsv"), os.path.join(args.out, "dev.tsv"))
    swapped = f" + {len(rows)} swapped" if args.swap else ""
    print(f"{args.out}: {len(out_rows)} training pairs ({len(rows)} + {args.copies} × {len(rows)} perturbed, "
          f"p = {args.probability}{swapped}), dev.tsv copied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
