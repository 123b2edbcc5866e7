"""Block-structured pruning: penalty numbers against hand-computed references, thresholding, physical removal with
equal outputs, save/load round trips (plain BERT, binarized packed), the trainers' logged components, bad input."""

import copy
import json

import pytest
import torch
from conftest import tiny_bert_config
from distill_helpers import tiny_teacher, toy_dataset
from transformers import BertForSequenceClassification, TrainingArguments

from hf_binary_bert import (
    BinaryBertConfig,
    BinaryBertForSequenceClassification,
    DistillationTrainingArguments,
    calibrate,
)
from hf_binary_bert.pruning import (
    BlockGates,
    BlockPruningConfig,
    BlockPruningDistillationTrainer,
    BlockPruningTrainer,
    block_pruning_penalty,
    checkpoint_sparsity_report,
    group_norms,
    load_pruned_bert,
    proximal_group_lasso_,
    prune_,
    sparsity_report,
    threshold_,
    write_sparsity_report,
)
from hf_binary_bert.pruning.structure import threshold_masks


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread in this module's tests, restored after each: a module-level set_num_threads would change every test
    collected after this file (e.g. the thread count a subprocess comparison assumes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _inputs():
    ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _kill_structures(model):
    """Zero FFN neurons 0–9 of layer 0 (intermediate rows: constant act(b) folded), FFN columns 20–24 of layer 1,
    head 1 of layer 1 (V rows: b_V folded) and head 0 of layer 0 (attention-output columns)."""
    layers = model.base_model.encoder.layer
    with torch.no_grad():
        layers[0].intermediate.dense.weight[:10] = 0
        layers[1].output.dense.weight[:, 20:25] = 0
        layers[1].attention.self.value.weight[8:16] = 0
        layers[0].attention.output.dense.weight[:, 0:8] = 0


def _kill_query_key_dims(layer, dims_per_head, query=()):
    """Zero the key rows of dimensions `dims_per_head[h]` of each head h of `layer` (d = 8), and the query rows and
    query biases of the (head, dimension) pairs in `query`."""
    attention = layer.attention.self
    with torch.no_grad():
        for head, dims in enumerate(dims_per_head):
            for dim in dims:
                attention.key.weight[8 * head + dim] = 0
        for head, dim in query:
            attention.query.weight[8 * head + dim] = 0
            attention.query.bias[8 * head + dim] = 0


# ---------------------------------------------------------------------------------------------------------------
# Config and bad input


@pytest.mark.parametrize("field, value", [("group_lasso_weight", -1.0), ("binarizing_weight", -0.1), ("epsilon", -1e-3),
                                          ("num_blocks", 0), ("direction", "diagonal"), ("modules", ["embeddings"]),
                                          ("penalty_form", "l0"), ("threshold_every", -2),
                                          ("ffn_keep_share", 0.0), ("ffn_keep_share", 1.5),
                                          ("heads_keep_share", -0.25), ("heads_keep_share", True),
                                          ("proximal", 1)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"BlockPruningConfig.{field}"):
        BlockPruningConfig(**{field: value})
    with pytest.raises(ValueError, match="BlockPruningConfig.proximal"):
        BlockPruningConfig(proximal=True, penalty_form="gate")
    for bad in ({"proximal_outside_target": True, "ffn_keep_share": 0.5},  # not proximal
                {"proximal_outside_target": True, "proximal": True}):  # no keep share
        with pytest.raises(ValueError, match="BlockPruningConfig.proximal_outside_target"):
            BlockPruningConfig(**bad)


def test_auto_penalty_form_is_gates_only_when_the_binarising_term_is_on():
    # the default form: per-group gates when λ₂ > 0 (docs/pruning.md, the two forms at the recipe's budget), no gates
    # when the term is off (the plain group lasso on the weights) or with the proximal step (which refuses gates)
    assert BlockPruningConfig().penalty_form == "weight"
    assert BlockPruningConfig(binarizing_weight=1e-4).penalty_form == "gate"
    assert BlockPruningConfig(binarizing_weight=1e-4, proximal=True).penalty_form == "weight"
    assert BlockPruningConfig(binarizing_weight=1e-4, penalty_form="weight").penalty_form == "weight"
    assert BlockPruningConfig(penalty_form="gate").penalty_form == "gate"


def test_blocks_must_divide_the_axis():
    with pytest.raises(ValueError, match="num_blocks=3 must divide in_features"):
        group_norms(torch.ones(4, 8), 3, "row")
    model = BertForSequenceClassification(tiny_bert_config())  # intermediate 37: no K = 2 on its output axis
    with pytest.raises(ValueError, match="num_blocks=2.*intermediate"):
        BlockPruningTrainer(model=model, args=TrainingArguments("/tmp/unused", report_to=[], use_cpu=True),
                            pruning=BlockPruningConfig(num_blocks=2, direction="column"))


def test_bad_layer_sizes_name_the_field():
    with pytest.raises(ValueError, match=r"BinaryBertConfig.layer_num_attention_heads\[1\]"):
        BinaryBertConfig(**{**tiny_bert_config().to_dict(), "layer_num_attention_heads": [4, 5]})
    with pytest.raises(ValueError, match="BinaryBertConfig.layer_intermediate_sizes must be a list of 2"):
        BinaryBertConfig(layer_intermediate_sizes=[3], num_hidden_layers=2)


def test_removing_every_head_is_refused_and_changes_nothing():
    model = tiny_teacher()
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.value.weight.mul_(1e-3)  # every V row far under ε
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="epsilon=0.01 would remove every attention head of layer 1"):
        prune_(model, BlockPruningConfig(epsilon=0.01))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_keep_share_that_keeps_nothing_is_refused_and_changes_nothing():
    model = tiny_teacher()  # 4 heads, 37 FFN neurons per layer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"heads_keep_share=0.1 keeps no head of a layer \(round\(0.1 · 4\) = 0\)"):
        prune_(model, BlockPruningConfig(heads_keep_share=0.1))
    with pytest.raises(ValueError, match="ffn_keep_share=0.01 keeps no FFN neuron of a layer"):
        prune_(model, BlockPruningConfig(ffn_keep_share=0.01))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_packed_model_must_be_unfrozen():
    student = BinaryBertForSequenceClassification.from_teacher(tiny_teacher()).freeze()
    with pytest.raises(ValueError, match="matched no trainable Linear"):
        prune_(student, BlockPruningConfig())


# ---------------------------------------------------------------------------------------------------------------
# Penalty and threshold


def test_group_norms_match_a_loop():
    w = torch.randn(6, 8)
    rows = group_norms(w, 2, "row")  # blocks cut the 8 input columns in 2
    cols = group_norms(w, 3, "column")  # blocks cut the 6 output rows in 3
    assert rows.shape == (2, 6) and cols.shape == (3, 8)
    for j in range(2):
        for p in range(6):
            assert rows[j, p] == pytest.approx(float(w[p, 4 * j:4 * j + 4].norm()), rel=1e-6)
    for j in range(3):
        for q in range(8):
            assert cols[j, q] == pytest.approx(float(w[2 * j:2 * j + 2, q].norm()), rel=1e-6)


def test_penalty_components_against_reference():
    model = tiny_teacher()
    config = BlockPruningConfig(group_lasso_weight=0.3, binarizing_weight=0.7, num_blocks=2, direction="row",
                                modules=["value", "intermediate"], penalty_form="weight")
    components = block_pruning_penalty(model, config)
    lasso, binarizing = 0.0, 0.0
    for layer in model.bert.encoder.layer:
        for module in (layer.attention.self.value, layer.intermediate.dense):
            w = module.weight.detach().double()
            lasso += sum(float(w[p, j * 16:(j + 1) * 16].norm()) for j in range(2) for p in range(w.shape[0]))
            binarizing += float((w * (1 - w)).sum())
    assert set(components) == {"group_lasso", "binarizing"}
    assert components["group_lasso"].item() == pytest.approx(0.3 * lasso, rel=1e-5)
    assert components["binarizing"].item() == pytest.approx(0.7 * binarizing, rel=1e-5)
    proximal = block_pruning_penalty(model, BlockPruningConfig(group_lasso_weight=0.3, num_blocks=2,
                                                                modules=["value", "intermediate"], proximal=True))
    assert proximal["group_lasso"].item() == pytest.approx(0.3 * lasso, rel=1e-5)  # the value, logged ...
    assert not proximal["group_lasso"].requires_grad  # ... but the proximal step applies it, not the gradient
    both = BlockPruningConfig(group_lasso_weight=0.3, num_blocks=2, direction="both", modules=["value"])
    expected = 0.0
    for layer in model.bert.encoder.layer:
        w = layer.attention.self.value.weight.detach().double()
        expected += sum(float(w[p, j * 16:(j + 1) * 16].norm()) for j in range(2) for p in range(32))
        expected += sum(float(w[j * 16:(j + 1) * 16, q].norm()) for j in range(2) for q in range(32))
    components = block_pruning_penalty(model, both)
    assert float(components["group_lasso"]) == pytest.approx(0.3 * expected, rel=1e-5)
    assert "binarizing" not in components


def test_threshold_zeroes_exactly_the_groups_under_epsilon():
    model = tiny_teacher()
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    with torch.no_grad():
        w[3, :16] *= 0.01  # block 0 of row 3 → norm ≪ ε
    norms = group_norms(w.detach(), 2, "row")
    config = BlockPruningConfig(epsilon=float(norms.median()), num_blocks=2, modules=["intermediate"])
    expected = w.detach().clone()
    for j in range(2):
        for p in range(w.shape[0]):
            if norms[j, p] <= config.epsilon:
                expected[p, 16 * j:16 * (j + 1)] = 0
    zeroed = threshold_(model, config)
    assert torch.equal(w.detach(), expected)
    all_zeros = sum(int(layer.intermediate.dense.weight.eq(0).sum()) for layer in model.bert.encoder.layer)
    assert zeroed == all_zeros and all_zeros > int((expected == 0).sum())  # layer 1 is thresholded too


def test_keep_shares_keep_the_top_k_by_norm_and_removal_is_exact():
    model = tiny_teacher().eval()
    layers = model.bert.encoder.layer
    with torch.no_grad():  # FFN neuron 5 of layer 0: large intermediate row, tiny output column (small product)
        layers[0].intermediate.dense.weight[5] *= 50
        layers[0].output.dense.weight[:, 5] *= 1e-3
    x = _inputs()
    expected = {}
    for i, layer in enumerate(layers):  # the reference: scores by a loop, k = round(share · full size)
        inter, out = layer.intermediate.dense.weight.detach(), layer.output.dense.weight.detach()
        scores = [float(inter[p].norm() * out[:, p].norm()) for p in range(37)]
        neurons = sorted(sorted(range(37), key=lambda p: -scores[p])[:round(0.5 * 37)])
        value, ao = layer.attention.self.value.weight.detach(), layer.attention.output.dense.weight.detach()
        heads = [float(value[8 * h:8 * h + 8].norm() * ao[:, 8 * h:8 * h + 8].norm()) for h in range(4)]
        expected[i] = (neurons, sorted(sorted(range(4), key=lambda h: -heads[h])[:3]))
    assert 5 not in expected[0][0]
    reference = copy.deepcopy(model)
    with torch.no_grad():  # what removal must equal: the dropped rows of intermediate / value zeroed, nothing removed
        for i, layer in enumerate(reference.bert.encoder.layer):
            drop = [p for p in range(37) if p not in expected[i][0]]
            layer.intermediate.dense.weight[drop] = 0
            for h in set(range(4)) - set(expected[i][1]):
                layer.attention.self.value.weight[8 * h:8 * h + 8] = 0
    kept_rows = {i: layers[i].intermediate.dense.weight.detach()[expected[i][0]].clone() for i in expected}
    sizes = prune_(model, BlockPruningConfig(epsilon=0.0, modules=["intermediate"], ffn_keep_share=0.5,
                                             heads_keep_share=0.75))
    assert sizes == {"layer_num_attention_heads": [3, 3], "layer_intermediate_sizes": [18, 18],
                     "layer_query_key_head_sizes": [8, 8]}
    for i in expected:
        assert torch.equal(layers[i].intermediate.dense.weight.detach(), kept_rows[i])
    torch.testing.assert_close(model(**x).logits, reference(**x).logits, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Physical removal and round trips


def test_removal_keeps_outputs_and_round_trips_as_plain_bert(tmp_path):
    model = tiny_teacher()
    _kill_structures(model)
    x = _inputs()
    reference = model(**x).logits
    sizes = prune_(model)
    assert sizes == {"layer_num_attention_heads": [3, 3], "layer_intermediate_sizes": [27, 32],
                     "layer_query_key_head_sizes": [8, 8]}
    assert model.bert.encoder.layer[0].intermediate.dense.weight.shape == (27, 32)
    assert model.bert.encoder.layer[1].attention.self.query.weight.shape == (24, 32)
    assert model.config.layer_intermediate_sizes == [27, 32]
    torch.testing.assert_close(model(**x).logits, reference, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["layer_num_attention_heads"] == [3, 3]
    loaded = load_pruned_bert(tmp_path).eval()
    assert isinstance(loaded, BertForSequenceClassification)
    torch.testing.assert_close(loaded(**x).logits, reference, atol=1e-5, rtol=1e-5)


def test_query_key_dimensions_are_removed_exactly_and_round_trip_as_plain_bert(tmp_path):
    """A key row zero (k_d = b_K,d for every key: a constant shift of each score row, which softmax ignores) or a
    query row and bias zero (q_d = 0): the dimension goes from Q and K; d_qk per layer is the most live dimensions
    over its heads, the others padded with dead ones. A query row zero with a non-zero bias stays."""
    from hf_binary_bert.layer_sizes import QueryKeyPrunedSelfAttention

    model = tiny_teacher()
    layers = model.bert.encoder.layer
    _kill_query_key_dims(layers[0], [[1, 2], [0, 1, 2, 3], [6], [6]], query=[(2, 5), (3, 0)])
    with torch.no_grad():
        layers[1].attention.self.query.weight[3] = 0  # bias not zero: dimension 3 of head 0 stays
    x = _inputs()
    reference = model(**x).logits
    key_rows = layers[0].attention.self.key.weight.detach().clone()
    sizes = prune_(model)
    assert sizes == {"layer_num_attention_heads": [4, 4], "layer_intermediate_sizes": [37, 37],
                     "layer_query_key_head_sizes": [6, 8]}
    assert model.config.layer_query_key_head_sizes == [6, 8] and model.config.layer_num_attention_heads is None
    attention = layers[0].attention.self
    assert type(attention) is QueryKeyPrunedSelfAttention and attention.query_key_head_size == 6
    assert attention.query.weight.shape == attention.key.weight.shape == (24, 32)
    assert attention.value.weight.shape == (32, 32) and attention.scaling == 8 ** -0.5
    assert type(layers[1].attention.self) is not QueryKeyPrunedSelfAttention
    # head 0 keeps its 6 live dimensions; head 1 its 4 live ones and 2 dead ones (0, 1), in index order
    assert torch.equal(attention.key.weight[:6], key_rows[[0, 3, 4, 5, 6, 7]])
    assert torch.equal(attention.key.weight[6:12], key_rows[[8, 9, 12, 13, 14, 15]])
    torch.testing.assert_close(model(**x).logits, reference, atol=1e-6, rtol=0)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["layer_query_key_head_sizes"] == [6, 8]
    loaded = load_pruned_bert(tmp_path).eval()
    assert type(loaded.bert.encoder.layer[0].attention.self) is QueryKeyPrunedSelfAttention
    torch.testing.assert_close(loaded(**x).logits, reference, atol=1e-6, rtol=0)
    rows = sparsity_report(model)
    assert [r["query_key_head_size"] for r in rows] == ["6/8", "8/8"]
    # zero rows left (head 1's two padding key rows) count as removed
    assert rows[0]["query_kept"] == 0.75 and rows[0]["key_kept"] == 22 / 32 and rows[0]["value_kept"] == 1.0


def test_query_key_head_sizes_in_the_config_are_checked():
    with pytest.raises(ValueError, match=r"BinaryBertConfig.layer_query_key_head_sizes\[0\] must be an integer in \[1, 8\]"):
        BinaryBertConfig(**{**tiny_bert_config().to_dict(), "layer_query_key_head_sizes": [9, 8]})
    with pytest.raises(ValueError, match=r"layer_query_key_head_sizes must be a list of 2"):
        BinaryBertConfig(**{**tiny_bert_config().to_dict(), "layer_query_key_head_sizes": [4]})


def test_pruned_teacher_to_binarized_packed_student_round_trip(tmp_path):
    teacher = tiny_teacher()
    _kill_structures(teacher)
    prune_(teacher)
    teacher.save_pretrained(tmp_path / "teacher")
    student = BinaryBertForSequenceClassification.from_teacher(str(tmp_path / "teacher"), weight_scale="learned_offset",
                                                               scale_granularity="head").eval()
    assert student.config.layer_num_attention_heads == [3, 3]
    assert student.bert.encoder.layer[0].attention.self.query.num_groups == 3  # one α per kept head
    x = _inputs()
    expected = student(**x).logits
    student.save_pretrained(tmp_path / "student")
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert loaded.config.packed_weights
    assert loaded.bert.encoder.layer[0].intermediate.dense.weight_packed.shape == (27, 4)
    torch.testing.assert_close(loaded(**x).logits, expected, atol=1e-4, rtol=1e-4)
    # the validator knows the kept sizes: a config claiming the full FFN does not describe the file
    config = json.loads((tmp_path / "student/config.json").read_text())
    config["layer_intermediate_sizes"] = None
    (tmp_path / "student/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"Malformed .*layer.0.intermediate.dense.* shape \[27\], expected \[37\]"):
        BinaryBertForSequenceClassification.from_pretrained(tmp_path / "student")


def test_prune_binarized_student_in_training_form(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(
        teacher, weight_scale="learned_offset", scale_granularity="head", activation_bits=1,
        activation_quantizer="elastic", hidden_act="relu")
    _kill_structures(student)
    _kill_query_key_dims(student.bert.encoder.layer[0], [[0], [1, 2], [5], [3]])  # head 0 goes: d_qk 7
    shift = student.bert.encoder.layer[0].attention.self.key_quantizer.shift.detach().clone()  # [4, 1, 8]
    sizes = prune_(student)
    layer = student.bert.encoder.layer[1]
    assert sizes["layer_num_attention_heads"] == [3, 3] and sizes["layer_query_key_head_sizes"] == [7, 8]
    first = student.bert.encoder.layer[0].attention.self
    assert first.query.weight.shape == (21, 32) and first.query.weight_scale.shape == (3,)  # one α per kept head
    assert first.key_quantizer.shift.shape == (3, 1, 7) and first.value_quantizer.shift.shape == (3, 1, 8)
    assert torch.equal(first.key_quantizer.shift[0, 0], shift[1, 0, [0, 1, 3, 4, 5, 6, 7]])  # head 1: dead 1 pads
    assert torch.equal(first.key_quantizer.shift[1, 0], shift[2, 0, [0, 1, 2, 3, 4, 6, 7]])
    assert layer.attention.self.value.weight_scale.shape == (3,)
    assert layer.attention.self.value_quantizer.shift.shape[0] == 3
    assert layer.output.dense.input_quantizer.shift.shape == (32,)
    x = _inputs()
    student.eval()
    calibrate(student, [x])  # eval mode: explicit calibration
    expected = student(**x).logits
    student.save_pretrained(tmp_path)
    loaded = BinaryBertForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**x).logits, expected, atol=1e-4, rtol=1e-4)
    rows = checkpoint_sparsity_report(tmp_path)
    assert [r["heads"] for r in rows] == ["3/4", "3/4"] and rows[1]["ffn_width"] == "32/37"


def test_to_bert_of_a_pruned_student_has_equal_outputs():
    teacher = tiny_teacher()
    _kill_structures(teacher)
    _kill_query_key_dims(teacher.bert.encoder.layer[1], [[0], [], [2, 3], [4]])
    prune_(teacher)
    student = BinaryBertForSequenceClassification.from_teacher(teacher).eval()
    bert = student.to_bert().eval()
    x = _inputs()
    torch.testing.assert_close(bert(**x).logits, student(**x).logits, atol=1e-5, rtol=1e-5)
    assert bert.config.layer_intermediate_sizes == [27, 32] and bert.config.layer_query_key_head_sizes == [8, 7]


def test_sparsity_report_table_and_heat_map(tmp_path):
    model = tiny_teacher()
    _kill_structures(model)
    prune_(model)
    rows = sparsity_report(model)
    assert rows[0]["heads"] == "3/4" and rows[0]["ffn_width"] == "27/37"
    assert rows[0]["intermediate_kept"] == pytest.approx(27 / 37)
    full = 4 * 32 * 32 + 2 * 37 * 32
    assert rows[1]["weights_kept"] == pytest.approx((4 * 24 * 32 + 2 * 32 * 32) / full)
    table = write_sparsity_report(rows, tmp_path)
    assert "| 0 | 3/4 | 8/8 | 27/37 |" in table
    assert (tmp_path / "sparsity.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------------------------
# Trainers


def _args(tmp_path, cls=TrainingArguments, **kwargs):
    return cls(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=1e-3, report_to=[],
               use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, optim="adamw_torch",
               lr_scheduler_type="constant", logging_steps=1, max_steps=3, **kwargs)


def test_fine_tuning_logs_the_penalty_and_prunes_at_the_end(tmp_path):
    model = tiny_teacher().train()
    config = BlockPruningConfig(group_lasso_weight=1e-3, binarizing_weight=1e-3, epsilon=0.05)
    trainer = BlockPruningTrainer(model=model, args=_args(tmp_path), train_dataset=toy_dataset(), pruning=config)
    with torch.no_grad():  # some groups certainly under ε: they must be gone after train()
        model.bert.encoder.layer[0].intermediate.dense.weight[:5] *= 1e-3
    # step 1's penalty on these weights, from the formula: λ₁ Σ over the six encoder Linears of every layer of the
    # L2 norms of their rows (K = 1, row groups), each norm by hand as √(Σ w²)
    linears = [m for layer in model.bert.encoder.layer
               for m in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                         layer.attention.output.dense, layer.intermediate.dense, layer.output.dense)]
    expected = 1e-3 * sum(float(row.double().pow(2).sum().sqrt()) for m in linears for row in m.weight.detach())
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["loss_group_lasso"] == pytest.approx(expected, abs=1e-6) and "loss_binarizing" in log  # 6 decimals
    assert trainer.pruned_sizes["layer_intermediate_sizes"][0] <= 32
    assert model.config.layer_intermediate_sizes == trainer.pruned_sizes["layer_intermediate_sizes"]
    assert model.bert.encoder.layer[0].intermediate.dense.out_features == model.config.layer_intermediate_sizes[0]


def test_proximal_step_shrinks_every_group_norm_by_the_step_and_zeroes_the_small_ones():
    model = tiny_teacher()
    config = BlockPruningConfig(group_lasso_weight=2.0, num_blocks=2, modules=["intermediate"], proximal=True)
    dense = model.bert.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        dense.weight[3, :16] *= 0.01 / float(dense.weight[3, :16].norm())  # group (block 0, row 3): norm 0.01
    before = dense.weight.detach().clone()
    value = model.bert.encoder.layer[0].attention.self.value.weight.detach().clone()
    proximal_group_lasso_(model, config, step_size=0.01)  # η·λ₁ = 0.02
    after = dense.weight.detach()
    assert torch.equal(after[3, :16], torch.zeros(16))  # 0.01 ≤ 0.02: exactly zero
    assert torch.equal(after[3, 16:] != 0, before[3, 16:] != 0)  # the row's other block only shrinks
    for p, j in ((0, 0), (3, 1), (20, 1)):  # the others: the same direction, the norm 0.02 smaller
        old, new = before[p, 16 * j:16 * j + 16].double(), after[p, 16 * j:16 * j + 16].double()
        assert float(new.norm()) == pytest.approx(float(old.norm()) - 0.02, abs=1e-6)
        assert torch.allclose(new / new.norm(), old / old.norm(), atol=1e-6)
    assert torch.equal(model.bert.encoder.layer[0].attention.self.value.weight, value)  # not in `modules`


def test_proximal_step_outside_the_target_shrinks_only_what_the_cut_would_remove(tmp_path):
    model = tiny_teacher().train()
    config = BlockPruningConfig(group_lasso_weight=1e5, modules=["intermediate", "value", "query"], epsilon=0.0,
                                remove=False, proximal=True, proximal_outside_target=True, ffn_keep_share=0.5,
                                heads_keep_share=0.5)
    cut = copy.deepcopy(model)
    threshold_(cut, BlockPruningConfig(epsilon=0.0, modules=["intermediate", "value"], ffn_keep_share=0.5,
                                       heads_keep_share=0.5))  # what the cut keeps (zeroed, not removed)
    kept = {n: p.norm(dim=1) > 0 for n, p in cut.named_parameters()
            if n.endswith(("intermediate.dense.weight", "attention.self.value.weight"))}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # one step by hand: the top k untouched, the other rows 1e-3 shorter (η·λ₁ = 1e-8 · 1e5)
    keep = threshold_masks(model, BlockPruningConfig(**{**config.__dict__, "epsilon": 0.0}))
    proximal_group_lasso_(model, config, step_size=1e-8, keep=keep)
    for name, weight in model.named_parameters():
        if name not in kept:
            assert torch.equal(weight, before[name]), name  # query and the rest: penalised by no one
            continue
        k = kept[name]
        assert 0 < int(k.sum()) < len(k)
        assert torch.equal(weight[k], before[name][k])
        assert torch.allclose(weight[~k].norm(dim=1), before[name][~k].norm(dim=1) - 1e-3, atol=1e-6)
    # in training (Adam at η = 1e-9 moves nothing that matters): 3 such steps, then the end-of-training threshold
    # with the shares, i.e. the cut itself
    args = _args(tmp_path)
    args.learning_rate = 1e-9
    with torch.no_grad():
        for name, weight in model.named_parameters():
            weight.copy_(before[name])
    BlockPruningTrainer(model=model, args=args, train_dataset=toy_dataset(), pruning=config).train()
    for name, weight in model.named_parameters():
        if name in kept:
            assert torch.allclose(weight[kept[name]], before[name][kept[name]], atol=1e-6)
            assert torch.equal(weight[~kept[name]], torch.zeros_like(weight[~kept[name]]))
        elif name.endswith("query.weight"):
            assert torch.allclose(weight, before[name], atol=1e-6)


@pytest.mark.parametrize("proximal", [False, True])
def test_proximal_training_zeroes_small_rows_that_adam_through_the_loss_does_not(tmp_path, proximal):
    model = tiny_teacher().train()
    config = BlockPruningConfig(group_lasso_weight=10.0, modules=["intermediate"], epsilon=0.0, remove=False,
                                proximal=proximal)
    trainer = BlockPruningTrainer(model=model, args=_args(tmp_path), train_dataset=toy_dataset(), pruning=config)
    dense = model.bert.encoder.layer[0].intermediate.dense
    with torch.no_grad():  # rows of norm 5e-3, under one step's η·λ₁ = 1e-3 · 10 (constant learning rate)
        dense.weight[:5] *= 5e-3 / dense.weight[:5].norm(dim=1, keepdim=True)
    norms = dense.weight.detach().norm(dim=1)
    trainer.train()
    new = dense.weight.detach().norm(dim=1)
    assert "loss_group_lasso" in trainer.state.log_history[0]
    if proximal:
        # 3 steps: the small rows are exactly zero (an Adam step moves a row of 32 weights by at most about
        # η·√32 = 6e-3 < η·λ₁, so the next proximal step zeroes it again); the others lost 3·η·λ₁ = 0.03 at most,
        # give or take Adam's 3 steps
        assert torch.equal(new[:5], torch.zeros(5))
        assert bool((new[5:] >= norms[5:] - 0.03 - 0.02).all()) and bool((new[5:] <= norms[5:] - 0.03 + 0.02).all())
    else:  # through the loss, Adam moves each weight by about η per step, whatever λ₁: no row lands on zero
        assert bool((new[:5] > 0).all())


def test_distillation_loss_is_the_sum_of_its_components(tmp_path):
    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset")
    args = _args(tmp_path, DistillationTrainingArguments, task_loss_weight=1.0, hidden_loss_weight=1.0)
    config = BlockPruningConfig(group_lasso_weight=1e-3, binarizing_weight=1e-4, epsilon=0.0, remove=False)
    trainer = BlockPruningDistillationTrainer(teacher_model=teacher, model=student, args=args,
                                              train_dataset=toy_dataset(), pruning=config)
    trainer.train()
    log = trainer.state.log_history[0]
    total = sum(log[f"loss_{k}"] for k in ("task", "prediction", "hidden", "group_lasso", "binarizing"))
    assert log["loss"] == pytest.approx(total, rel=1e-3)


def test_gates_start_neutral_and_fold_exactly():
    model = tiny_teacher()
    x = _inputs()
    reference = model(**x).logits
    config = BlockPruningConfig(penalty_form="gate", num_blocks=2, modules=["query", "value", "attention_output"])
    gates = BlockGates(model, config)
    gates.attach(model)
    torch.testing.assert_close(model(**x).logits, reference)
    with torch.no_grad():
        for g in gates.parameters():
            g.uniform_(0, 1)
    gated = model(**x).logits
    penalty = block_pruning_penalty(model, BlockPruningConfig(penalty_form="gate", binarizing_weight=1.0,
                                                              num_blocks=2, modules=config.modules), gates)
    assert float(penalty["binarizing"]) == pytest.approx(float(sum((g * (1 - g)).sum() for g in gates.parameters())))
    gates.fold_(model)
    assert "forward" not in vars(model.bert.encoder.layer[0].attention.self.query)
    torch.testing.assert_close(model(**x).logits, gated, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not __import__("hf_binary_bert").kernels.available(), reason="compiled kernels not built")
@pytest.mark.parametrize("combo", [
    {"activation_bits": 1, "activation_quantizer": "elastic"},
    {"activation_bits": 1, "attention_type": "bi_attention", "embedding_bits": 1},
    {"activation_bits": 8, "activation_quantizer": "elastic"}])
def test_pruned_packed_student_runs_natively_and_equals_the_eager_path(tmp_path, combo):
    """A binarized student with different head counts, query/key head sizes and FFN widths per layer, saved packed and
    loaded through the Auto class: the native encoder runtime runs it (per-layer shapes) and equals the eager kernel
    path."""
    from transformers import AutoModelForSequenceClassification

    teacher = tiny_teacher()
    _kill_structures(teacher)  # layer 0: 3 heads, 27 neurons
    with torch.no_grad():
        teacher.bert.encoder.layer[1].attention.self.value.weight[16:24] = 0  # with head 1: 2 heads in layer 1
        teacher.bert.encoder.layer[1].intermediate.dense.weight[:30] = 0
        _kill_query_key_dims(teacher.bert.encoder.layer[1], [[0, 1, 2, 3], [], [5], [1, 2]])  # d_qk 6 (head 1 goes)
    assert prune_(teacher) == {"layer_num_attention_heads": [3, 2], "layer_intermediate_sizes": [27, 7],
                               "layer_query_key_head_sizes": [8, 6]}
    student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset",
                                                               scale_granularity="head", **combo)
    student.train()(**_inputs())  # calibrates the activation quantizers
    student.eval().save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BinaryBertForSequenceClassification)
    assert loaded.bert.encoder.layer[1].intermediate.dense.weight_packed.shape[0] == 7
    runtime = loaded.bert.encoder.runtime()
    assert runtime.plan() is not None, runtime.unsupported_reason
    x = _inputs()
    with torch.inference_mode():
        native = loaded(**x).logits
        loaded.set_inference_kernel("eager")
        eager = loaded(**x).logits
    torch.testing.assert_close(native, eager, rtol=0, atol=1e-5)
    rows = checkpoint_sparsity_report(tmp_path)
    assert [(r["heads"], r["ffn_width"]) for r in rows] == [("3/4", "27/37"), ("2/4", "7/37")]
    assert [r["query_key_head_size"] for r in rows] == ["8/8", "6/8"]
