# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance with
# the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Mean reciprocal rank (MRR), an `evaluate` metric module: `evaluate.load("path/to/hf_binary_bert/metrics/mrr")`.

Self-contained (numpy, datasets, evaluate only) so that `evaluate` can copy and import it on its own.
"""

import datasets
import numpy as np

import evaluate


_DESCRIPTION = """
Mean reciprocal rank (MRR) of the correct candidate among scored candidates. For one example with candidate scores
s_1..s_K and correct candidate c,

    rank = 1 + #{k : s_k > s_c}        (candidates with a strictly larger score; ties count in favour of c)

and MRR is the mean of 1 / rank over the examples. It lies in (0, 1]; 1 means the correct candidate is always ranked
first. For masked-language-model evaluation, the candidates are the vocabulary and the scores the logits at a masked
position.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): for each example, the scores of its candidates (any length >= 1;
        higher = more likely).
    references (`list` of `int`): for each example, the index of the correct candidate in its score list.

Returns:
    mrr (`float`): mean reciprocal rank, in (0, 1].

Raises:
    ValueError: a reference index is outside its example's candidate list.

Examples:
    >>> mrr = evaluate.load("hf_binary_bert/metrics/mrr")
    >>> mrr.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], references=[1, 2, 0])
    {'mrr': 0.611111111111111}
"""

_CITATION = """
@inproceedings{voorhees1999trec,
  title={The {TREC}-8 Question Answering Track Report},
  author={Voorhees, Ellen M.},
  booktitle={Proceedings of the Eighth Text REtrieval Conference (TREC-8)},
  pages={77--82},
  year={1999}
}
"""


def reciprocal_ranks(scores, true_scores):
    """1 / rank of the true candidate in each row, rank = 1 + #{k : scores[k] > true score} (ties count in its
    favour): scores [n, K] and true_scores [n, 1], numpy arrays or torch tensors → [n] (float). The one definition
    of the rank, also used by `hf_binary_bert.metrics.mlm_position_stats`."""
    return 1.0 / (1 + (scores > true_scores).sum(-1))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Mrr(evaluate.Metric):
    """Mean reciprocal rank of the correct candidate."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int32"),
                }
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Mean_reciprocal_rank"],
        )

    def _compute(self, predictions, references):
        ranks = []
        for i, (scores, correct) in enumerate(zip(predictions, references)):
            scores = np.asarray(scores, dtype=np.float32)
            if not 0 <= correct < len(scores):
                raise ValueError(f"references[{i}] = {correct} is not an index into its {len(scores)} candidates.")
            ranks.append(float(reciprocal_ranks(scores[None], scores[None, correct : correct + 1])[0]))
        return {"mrr": float(np.mean(ranks)) if ranks else float("nan")}
