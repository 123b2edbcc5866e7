"""The student's share of the teacher's SQuAD EM and F1, from the `comparison.json` that
`hf-binary-bert distill --task squad` writes, set against BiT's 1-1-1 BERT-base (F1 74.9 against the full-precision
88.5 on the official split; Liu et al., NeurIPS 2022). The share says little unless the teacher has learnt the task.

    python examples/squad_retention.py runs/squad-bit-w1a1/comparison.json
"""

import json
import sys

BIT_F1, BERT_BASE_F1 = 74.9, 88.5


def main(path: str) -> None:
    with open(path) as f:
        rows = {row["model"]: row for row in json.load(f)}
    teacher, student = rows["teacher"], rows["student"]
    f1_share = student["f1"] / teacher["f1"]
    em_share = student["exact_match"] / teacher["exact_match"]
    bit_share = BIT_F1 / BERT_BASE_F1
    print("| | teacher | student | student / teacher |")
    print("|---|---|---|---|")
    print(f"| EM | {teacher['exact_match']:.2f} | {student['exact_match']:.2f} | {100 * em_share:.1f} % |")
    print(f"| F1 | {teacher['f1']:.2f} | {student['f1']:.2f} | {100 * f1_share:.1f} % |")
    print()
    print(f"BiT 1-1-1 keeps {BIT_F1} / {BERT_BASE_F1} = {100 * bit_share:.1f} % of the F1; this student keeps "
          f"{100 * f1_share:.1f} %: goal {'met' if f1_share >= bit_share else 'not met'}.")


if __name__ == "__main__":
    main(sys.argv[1])
