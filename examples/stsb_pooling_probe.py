"""Is a regression student limited by its head or by its encoder? Ridge probes on frozen last hidden states (issue 16).

For each model (the teacher and saved students, any head; only the encoder `bert` is used), the last hidden states
of the first N training pairs and of the held-out pairs are pooled four ways: the first token (`[CLS]`, what BERT's
pooler reads), the mean over the real tokens, per-segment means u, v (sentence 1 / sentence 2 by `token_type_ids`)
as SBERT's features [u, v, |u − v|, u·v, cos(u, v)], and cos(u, v) alone (no fitting). A ridge regression
(scikit-learn `RidgeCV`, α from 10⁻³ to 10³) is fitted to the gold scores on the training pairs and its Pearson
correlation on the held-out pairs printed, with cos(u, v)'s own. If the probes score about what the model's head
scores, the encoder's features, not the head, limit it. Eval mode (no dropout), 1 thread, one markdown row per model.

    python examples/stsb_pooling_probe.py --teacher TEACHER --data-dir SPLIT [--pairs 1500] [NAME=MODEL_DIR ...]
"""
import argparse

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import RidgeCV
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_binary_bert.modeling_binary_bert import mean_pool
from hf_binary_bert.recipes import load_task_data


def pooled_features(model, data, split, n: int, batch_size: int = 64):
    """Per pair: {"cls", "mean", "segments", "cos"} features of the model's last hidden states, and the gold scores."""
    out = {"cls": [], "mean": [], "segments": [], "cos": []}
    scores = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            rows = [split[i] for i in range(start, min(n, start + batch_size))]
            batch = data.collator([{k: r[k] for k in ("input_ids", "attention_mask", "token_type_ids")} for r in rows])
            hidden = model.bert(**batch).last_hidden_state
            real, second = batch["attention_mask"] != 0, batch["token_type_ids"] != 0
            u, v = mean_pool(hidden, real & ~second), mean_pool(hidden, real & second)
            cos = torch.nn.functional.cosine_similarity(u, v).unsqueeze(-1)
            out["cls"].append(hidden[:, 0])
            out["mean"].append(mean_pool(hidden, real))
            out["segments"].append(torch.cat([u, v, (u - v).abs(), u * v, cos], -1))
            out["cos"].append(cos)
            scores.append(torch.tensor([float(r["labels"]) for r in rows]))
    return {k: torch.cat(v).numpy() for k, v in out.items()}, torch.cat(scores).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="the STS-B teacher (its tokenizer is used; probed first)")
    parser.add_argument("--data-dir", required=True,
                        help="the split (train.tsv, dev.tsv) as results_1_1_1.py writes it")
    parser.add_argument("--pairs", type=int, default=1500, help="training pairs the ridge regressions are fitted on")
    parser.add_argument("models", nargs="*", metavar="NAME=MODEL_DIR", help="saved students to probe")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    data = load_task_data("stsb", tokenizer, data_dir=args.data_dir, max_seq_length=128)
    models = [("teacher", args.teacher), *(m.split("=", 1) for m in args.models)]
    print(f"Held-out Pearson of ridge probes fitted on {args.pairs} training pairs ({len(data.eval)} held-out pairs)\n")
    print("| model | [CLS] | mean | segments [u, v, \\|u − v\\|, u·v, cos] | cos(u, v) alone |")
    print("|---|---|---|---|---|")
    for name, path in models:
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        train, train_scores = pooled_features(model, data, data.train, args.pairs)
        held, held_scores = pooled_features(model, data, data.eval, len(data.eval))
        cells = []
        for key in ("cls", "mean", "segments"):
            ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(train[key], train_scores)
            cells.append(f"{pearsonr(ridge.predict(held[key]), held_scores)[0]:.3f}")
        cells.append(f"{pearsonr(held['cos'][:, 0], held_scores)[0]:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
