"""Tests of hf_binary_bert.metrics against hand-computed values, scipy, and brute-force loops."""

import math

import evaluate
import numpy as np
import pytest
import torch
from scipy import stats
from transformers import EvalPrediction

from hf_binary_bert.data import GLUE_TASKS
from hf_binary_bert.metrics import (
    MRR_METRIC_PATH,
    classification_compute_metrics,
    glue_metrics,
    mlm_compute_metrics,
    mlm_metrics,
    mlm_position_stats,
)

# Binary example: TP = 2, FN = 1, TN = 2, FP = 1.
REFERENCES = [1, 1, 1, 0, 0, 0]
PREDICTIONS = [1, 1, 0, 0, 0, 1]
ACCURACY = 4 / 6
F1 = 2 / 3  # precision 2/3, recall 2/3
MCC = (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3)  # (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 1/3


# ------------------------------------------------------------------------------------------------------ GLUE


def test_glue_metrics_by_hand():
    assert glue_metrics("sst2", PREDICTIONS, REFERENCES) == pytest.approx({"accuracy": ACCURACY})
    assert glue_metrics("MRPC", PREDICTIONS, REFERENCES) == pytest.approx({"accuracy": ACCURACY, "f1": F1})
    assert glue_metrics("qqp", np.array(PREDICTIONS), np.array(REFERENCES))["f1"] == pytest.approx(F1)
    assert glue_metrics(GLUE_TASKS["cola"], PREDICTIONS, REFERENCES) == pytest.approx({"matthews_correlation": MCC})
    assert glue_metrics("mnli", [0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx({"accuracy": 0.75})
    # plain Python floats (JSON-serializable), not numpy scalars (np.float64 is a float subclass: `type`, not isinstance)
    assert all(type(v) is float for v in glue_metrics("mrpc", PREDICTIONS, REFERENCES).values())


def test_glue_metrics_stsb():
    # Ranks [1, 2, 3, 4] vs [1, 3, 2, 4]: Spearman = 1 − 6·Σd² / (n(n²−1)) = 1 − 6·2/60 = 0.8.
    assert glue_metrics("sts-b", [1.0, 2.0, 3.0, 4.0], [0.5, 3.0, 2.0, 4.5])["spearmanr"] == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    references = rng.uniform(0, 5, size=50)
    predictions = references + rng.normal(0, 1, size=50)
    result = glue_metrics("stsb", predictions, references)
    assert set(result) == {"pearson", "spearmanr"}
    assert result["pearson"] == pytest.approx(stats.pearsonr(predictions, references)[0])
    assert result["pearson"] == pytest.approx(np.corrcoef(predictions, references)[0, 1])
    assert result["spearmanr"] == pytest.approx(stats.spearmanr(predictions, references)[0])


def test_glue_metrics_errors():
    with pytest.raises(ValueError, match="squad"):
        glue_metrics("squad", [0], [0])
    with pytest.raises(ValueError, match="argmax"):
        glue_metrics("sst2", np.zeros((3, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="equal length"):
        glue_metrics("sst2", [0, 1], [0, 1, 1])


def test_classification_compute_metrics():
    logits = np.zeros((6, 2), dtype=np.float32)
    logits[np.arange(6), PREDICTIONS] = 1.0
    compute = classification_compute_metrics("MRPC")
    assert compute(EvalPrediction(predictions=logits, label_ids=np.array(REFERENCES))) == pytest.approx(
        {"accuracy": ACCURACY, "f1": F1}
    )
    # Models returning a tuple: the logits come first.
    assert compute(EvalPrediction(predictions=(logits, np.ones(3)), label_ids=np.array(REFERENCES)))["f1"] == (
        pytest.approx(F1)
    )
    scores = np.array([[1.0], [2.0], [3.0], [4.0]])
    result = classification_compute_metrics("stsb")(EvalPrediction(scores, np.array([0.5, 3.0, 2.0, 4.5])))
    assert result["spearmanr"] == pytest.approx(0.8)


# ------------------------------------------------------------------------------------------------------ masked LM


def brute_force_mlm(logits, labels):
    """Loop over masked positions: CE from the softmax definition, argmax and rank by sorting the vocabulary."""
    ces, correct, reciprocal_ranks = [], [], []
    for b in range(labels.shape[0]):
        for s in range(labels.shape[1]):
            y = int(labels[b, s])
            if y == -100:
                continue
            row = [float(x) for x in logits[b, s]]
            ces.append(math.log(sum(math.exp(x) for x in row)) - row[y])
            best = max(range(len(row)), key=lambda v: (row[v], -v))  # first maximal index
            correct.append(float(best == y))
            ordered = sorted(row, reverse=True)
            rank = ordered.index(row[y]) + 1  # 1 + number of strictly larger scores
            reciprocal_ranks.append(1.0 / rank)
    ce = sum(ces) / len(ces)
    return {
        "cross_entropy": ce,
        "accuracy": sum(correct) / len(correct),
        "mrr": sum(reciprocal_ranks) / len(reciprocal_ranks),
        "perplexity": math.exp(ce),
    }


@pytest.fixture
def mlm_example():
    generator = torch.Generator().manual_seed(0)
    # Small integer logits: many ties, including ties with the true token and at the top.
    logits = torch.randint(-3, 4, (3, 7, 13), generator=generator).float()
    labels = torch.randint(0, 13, (3, 7), generator=generator)
    labels[torch.rand(3, 7, generator=generator) < 0.5] = -100
    labels[0, 0] = 5
    logits[0, 0] = 0.0  # all tied: rank 1, argmax is token 0, not 5
    return logits, labels


def test_mlm_metrics_match_brute_force(mlm_example):
    logits, labels = mlm_example
    assert (labels != -100).sum() >= 5
    expected = brute_force_mlm(logits, labels)
    assert mlm_metrics(logits, labels) == pytest.approx(expected, rel=1e-5)
    assert mlm_metrics(logits.half(), labels) == pytest.approx(expected, rel=1e-5)  # exact in float16


def test_mlm_position_stats(mlm_example):
    logits, labels = mlm_example
    position = mlm_position_stats(logits, labels)
    assert position.shape == (3, 7, 3) and position.dtype == torch.float32
    assert torch.isnan(position[labels == -100]).all()
    assert not torch.isnan(position[labels != -100]).any()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    torch.testing.assert_close(position[..., 0][labels != -100], ce[labels != -100])
    assert position[0, 0].tolist() == pytest.approx([math.log(13), 0.0, 1.0])  # tie: rank 1 but not argmax
    # Model outputs as a tuple: logits first.
    torch.testing.assert_close(mlm_position_stats((logits, None), labels), position, equal_nan=True)
    with pytest.raises(ValueError, match="labels"):
        mlm_position_stats(logits, labels[:, :5])


def test_mlm_compute_metrics_skips_nan_and_trainer_padding(mlm_example):
    logits, labels = mlm_example
    position = mlm_position_stats(logits, labels).numpy()
    # The Trainer pads batches of different lengths with -100 when it concatenates them.
    padded = np.concatenate([position, np.full((3, 4, 3), -100.0, dtype=np.float32)], axis=1)
    result = mlm_compute_metrics(EvalPrediction(predictions=padded, label_ids=None))
    assert result == pytest.approx(mlm_metrics(logits, labels), rel=1e-6)
    assert set(result) == {"cross_entropy", "accuracy", "mrr", "perplexity"}
    empty = mlm_metrics(logits, torch.full_like(labels, -100))
    assert all(math.isnan(v) for v in empty.values())


def test_mlm_metrics_in_trainer_evaluate(tmp_path):
    """preprocess_logits_for_metrics + compute_metrics in a real evaluation loop equal mlm_metrics on the outputs."""
    from transformers import BertConfig, BertForMaskedLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = BertForMaskedLM(config).eval()
    input_ids = torch.randint(5, 50, (5, 12))
    labels = torch.where(torch.rand(5, 12) < 0.3, input_ids, torch.full_like(input_ids, -100))
    dataset = [{"input_ids": i, "labels": lab} for i, lab in zip(input_ids, labels)]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True, disable_tqdm=True
    )
    trainer = Trainer(
        model=model,
        args=args,
        eval_dataset=dataset,
        preprocess_logits_for_metrics=lambda logits, labels: mlm_position_stats(logits, labels),
        compute_metrics=mlm_compute_metrics,
    )
    result = trainer.evaluate()
    with torch.no_grad():
        expected = mlm_metrics(model(input_ids=input_ids).logits, labels)
    for key in ("cross_entropy", "accuracy", "mrr", "perplexity"):
        assert result[f"eval_{key}"] == pytest.approx(expected[key], rel=1e-4)
    # (eval_loss differs slightly: the Trainer averages per-batch mean losses, not over masked tokens.)


# ------------------------------------------------------------------------------------------------------ MRR module


@pytest.fixture(scope="module")
def mrr_module():
    return evaluate.load(MRR_METRIC_PATH)


def test_mrr_module_by_hand(mrr_module):
    # Ranks 1, 3, 2 (the tie at 0.2 does not count against the true candidate).
    result = mrr_module.compute(
        predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], references=[1, 2, 0]
    )
    assert result == pytest.approx({"mrr": (1 + 1 / 3 + 1 / 2) / 3})
    assert mrr_module.compute(predictions=[[1.0, 1.0, 1.0]], references=[2]) == {"mrr": 1.0}
    with pytest.raises(ValueError, match="references\\[0\\]"):
        mrr_module.compute(predictions=[[0.1, 0.2]], references=[2])


def test_mrr_module_matches_mlm_stats(mrr_module, mlm_example):
    logits, labels = mlm_example
    scored = labels != -100
    result = mrr_module.compute(predictions=logits[scored].tolist(), references=labels[scored].tolist())
    assert result["mrr"] == pytest.approx(mlm_metrics(logits, labels)["mrr"])
