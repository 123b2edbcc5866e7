"""A corpus of corrupted packed checkpoints: each kind is refused by `from_pretrained` with a `ValueError` that names
the tensor (or the config field) at fault, and nothing loads silently. The clean copy of the same checkpoint loads
and gives the saved model's outputs, so each refusal is caused by its corruption alone."""

import json
import shutil
import struct

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

import hf_binary_bert as hb

LAYER0 = "bert.encoder.layer.0"
QUERY = f"{LAYER0}.attention.self.query"
FFN = f"{LAYER0}.intermediate.dense"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A calibrated packed W1A1 BiT-style classifier (learned α and γ, elastic quantizers: steps and shifts)."""
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, weight_scale="learned_offset", activation_bits=1,
                         activation_quantizer="elastic")
    model = hb.BinaryBertForSequenceClassification(config)
    ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    hb.calibrate(model, [{"input_ids": ids}])
    model.freeze().eval()
    directory = tmp_path_factory.mktemp("clean")
    model.save_pretrained(directory)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return directory, ids, logits


def _tensors(edit):
    def corrupt(directory):
        tensors = load_file(directory / "model.safetensors")
        edit(tensors)
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return corrupt


def _set(name, value):
    def edit(tensors):
        tensors[name] = tensors[name].clone()
        tensors[name].reshape(-1)[0] = value
    return _tensors(edit)


def _config(**changes):
    def corrupt(directory):
        config = json.loads((directory / "config.json").read_text())
        config.update(changes)
        (directory / "config.json").write_text(json.dumps(config))
    return corrupt


def _header(edit):
    """Rewrite the JSON header of model.safetensors (its length prefix follows), the data bytes unchanged."""
    def corrupt(directory):
        path = directory / "model.safetensors"
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        edit(header)
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    return corrupt


def _truncate(directory):
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _garbage_header(directory):
    path = directory / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[:8] + b"\xff\xfe not json" + b" " * (n - 11) + data[8 + n:])


def _overlap(header):
    """Move the data offsets of the second tensor (by position) 4 bytes back: it overlaps the first."""
    entries = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")
    name = entries[1][1]
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin - 4, end - 4]


def _pop(name):
    return _tensors(lambda t: t.pop(name))


def _short_packed(t):
    t[f"{QUERY}.weight_packed"] = t[f"{QUERY}.weight_packed"][:, :-1].contiguous()


def _wrong_dtype_packed(t):
    t[f"{QUERY}.weight_packed"] = t[f"{QUERY}.weight_packed"].float()


def _half_scale(t):
    t[f"{QUERY}.weight_scale"] = t[f"{QUERY}.weight_scale"].half()


def _step_wrong_shape(t):
    t[f"{QUERY}_quantizer.step"] = t[f"{QUERY}_quantizer.step"].reshape(1).repeat(2)


def _extra(t):
    t[f"{LAYER0}.attention.self.extra.weight_packed"] = torch.zeros(4, 4, dtype=torch.uint8)


def _calibrated_flag(t):
    t[f"{QUERY}_quantizer.calibrated"] = torch.tensor(3, dtype=torch.uint8)


# (kind, corruption, pattern of the error message): every pattern names the tensor or the config field
CORRUPTIONS = [
    ("truncated file", _truncate, r"truncated safetensors file"),
    ("garbage header", _garbage_header, r"unreadable safetensors header"),
    ("overlapping data offsets", _header(_overlap), r"tensor '[^']+' \(data offsets \[\d+, \d+\]\) overlaps tensor"),
    ("data offsets not matching the shape",
     _header(lambda h: h[f"{QUERY}.weight_scale"].__setitem__("shape", [7])),
     rf"tensor '{QUERY}\.weight_scale' has data offsets .* do not hold 7 F32"),
    ("missing packed tensor", _pop(f"{QUERY}.weight_packed"), rf"missing tensor '{QUERY}\.weight_packed'"),
    ("short packed tensor", _tensors(_short_packed), rf"'{QUERY}\.weight_packed' has shape \[32, 3\], expected \[32, 4\]"),
    ("wrong-dtype packed tensor", _tensors(_wrong_dtype_packed), rf"'{QUERY}\.weight_packed' has dtype F32, expected U8"),
    ("wrong-dtype scale", _tensors(_half_scale), rf"'{QUERY}\.weight_scale' has dtype F16, expected F32"),
    ("missing scale", _pop(f"{FFN}.weight_scale"), rf"missing tensor '{FFN}\.weight_scale'"),
    ("missing quantizer step", _pop(f"{QUERY}_quantizer.step"), rf"missing tensor '{QUERY}_quantizer\.step'"),
    ("quantizer state of the wrong shape", _tensors(_step_wrong_shape),
     rf"'{QUERY}_quantizer\.step' has shape \[2\], expected \[\]"),
    ("hidden-size mismatch", _config(hidden_size=40, num_attention_heads=4),
     r"tensor 'bert\.[a-z_.0-9]+' has shape \[.*\], expected \[.*\] from the config"),
    ("layer-count mismatch", _config(num_hidden_layers=1), r"unexpected tensor 'bert\.encoder\.layer\.1\."),
    ("unknown scheme", _config(weight_scale="xnor++"), r"BinaryBertConfig\.weight_scale must be one of"),
    ("binarized_modules disagreeing with the tensors",
     _config(binarized_modules=["query", "key", "value", "attention_output", "output"]),
     r"missing tensor 'bert\.encoder\.layer\.[01]\.intermediate\.dense\.weight'"),
    ("extra tensor", _tensors(_extra), r"unexpected tensor 'bert\.encoder\.layer\.0\.attention\.self\.extra\.weight_packed'"),
    ("NaN scale", _set(f"{QUERY}.weight_scale", float("nan")), rf"'{QUERY}\.weight_scale' has 1 non-finite value"),
    ("inf offset", _set(f"{FFN}.weight_offset", float("inf")), rf"'{FFN}\.weight_offset' has 1 non-finite value"),
    ("NaN step", _set(f"{FFN}.input_quantizer.step", float("nan")),
     rf"'{FFN}\.input_quantizer\.step' has 1 non-finite value"),
    ("-inf shift", _set(f"{QUERY}_quantizer.shift", float("-inf")), rf"'{QUERY}_quantizer\.shift' has 1 non-finite"),
    ("NaN bias", _set(f"{QUERY}.bias", float("nan")), rf"'{QUERY}\.bias' has 1 non-finite value"),
    ("calibrated flag not 0/1", _tensors(_calibrated_flag), rf"'{QUERY}_quantizer\.calibrated' \(a flag\) must be 0 or 1"),
]


def test_the_corpus_has_at_least_12_kinds():
    assert len({kind for kind, _, _ in CORRUPTIONS}) >= 12


def test_clean_copy_loads_with_the_saved_outputs(clean, tmp_path):
    directory, ids, logits = clean
    shutil.copytree(directory, tmp_path / "copy")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "copy").eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, logits)


@pytest.mark.parametrize("kind, corrupt, pattern", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corruption_is_refused_naming_the_tensor(clean, tmp_path, kind, corrupt, pattern):
    directory = tmp_path / "corrupt"
    shutil.copytree(clean[0], directory)
    corrupt(directory)
    with pytest.raises(ValueError, match=pattern):
        AutoModelForSequenceClassification.from_pretrained(directory)


def test_negative_scale_is_refused_where_the_scheme_forbids_it(tmp_path):
    """mean_abs stores α = mean|W| ≥ 0: a negative α is corruption. A learned α may be negative (a sign flip)."""
    for scheme, refused in (("mean_abs", True), ("learned", False)):
        directory = tmp_path / scheme
        hb.BinaryBertForSequenceClassification(tiny_config(num_labels=2, weight_scale=scheme)).save_pretrained(directory)
        _set(f"{QUERY}.weight_scale", -0.5)(directory)
        if refused:
            with pytest.raises(ValueError, match=rf"'{QUERY}\.weight_scale' has a negative scale α \(-0\.5\)"):
                AutoModelForSequenceClassification.from_pretrained(directory)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(directory)
            assert model.get_submodule(QUERY).weight_scale.item() == -0.5
