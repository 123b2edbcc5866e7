"""The packed checkpoint format module (`hf_binary_bert/format.py`): the one packing path shared by `freeze` and the
packed checkpoint, header reading through safetensors, and the size report of a Hub repo read without downloading."""

import os

import torch
from conftest import tiny_config
from hub_server import USER, WRITE_TOKEN, fake_hub  # noqa: F401
from safetensors.torch import load_file

import hf_binary_bert as hb
from hf_binary_bert.format import checkpoint_size_report, packed_state_dict, read_safetensors_header


def test_freeze_and_the_packed_checkpoint_hold_the_same_tensors(tmp_path):
    torch.manual_seed(0)
    model = hb.BinaryBertForSequenceClassification(tiny_config(weight_scale="learned_offset", scale_granularity="row"))
    packed = packed_state_dict(model)
    frozen = model.freeze().state_dict()
    binarized = [k for k in packed if k.endswith(".weight_packed")]
    assert len(binarized) == 12  # six Linears per layer, two layers
    for key in binarized:
        prefix = key.removesuffix("weight_packed")
        for leaf in ("weight_packed", "weight_scale", "weight_offset", "bias"):
            assert torch.equal(packed[prefix + leaf], frozen[prefix + leaf]), prefix + leaf


def test_header_through_safe_open_matches_the_tensors(tmp_path):
    model = hb.BinaryBertForMaskedLM(tiny_config(fp_dtype="float16")).freeze()
    model.save_pretrained(tmp_path)
    header, tensors = read_safetensors_header(tmp_path / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert header.keys() == tensors.keys()
    names = {torch.float16: "F16", torch.float32: "F32", torch.uint8: "U8"}
    for name, tensor in tensors.items():
        assert header[name] == {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                                "nbytes": tensor.numel() * tensor.element_size()}, name


def test_size_report_of_a_hub_repo_reads_no_weights(fake_hub, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    model = hb.BinaryBertForSequenceClassification(tiny_config(num_labels=2)).freeze()
    model.save_pretrained(tmp_path / "local")
    repo = f"{USER}/tiny-size"
    model.push_to_hub(repo, token=WRITE_TOKEN)
    fake_hub.requests.clear()
    remote = checkpoint_size_report(repo, token=WRITE_TOKEN)
    assert remote == checkpoint_size_report(tmp_path / "local")
    assert remote["total"] * 1e6 == os.path.getsize(tmp_path / "local" / "model.safetensors")
    # the header is read with ranged requests, never the whole file
    downloads = [r for r in fake_hub.requests if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert downloads and all(r.headers.get("range", "").startswith("bytes=0-") for r in downloads)
    assert not os.path.exists(fake_hub.cache_dir / f"models--{USER}--tiny-size")


def test_from_pretrained_builds_the_model_once_and_validates_it(tmp_path, monkeypatch):
    """The checkpoint is checked against the model transformers builds for loading (no second, meta skeleton)."""
    import hf_binary_bert.modeling_binary_bert as modeling

    hb.BinaryBertForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    built, validated = [], []
    original_binarize, original_validate = modeling.BinaryBertPreTrainedModel._binarize, modeling.validate_checkpoint
    monkeypatch.setattr(modeling.BinaryBertPreTrainedModel, "_binarize",
                        lambda self: built.append(self) or original_binarize(self))
    monkeypatch.setattr(modeling, "validate_checkpoint",
                        lambda model, *a, **k: validated.append(model) or original_validate(model, *a, **k))
    loaded = hb.BinaryBertForMaskedLM.from_pretrained(tmp_path)
    assert built == [loaded] and validated == [loaded]


def test_saving_packed_leaves_the_live_config_alone(tmp_path):
    model = hb.BinaryBertForSequenceClassification(tiny_config())
    config = model.config
    model.save_pretrained(tmp_path)
    assert model.config is config and not config.packed_weights
    assert hb.BinaryBertConfig.from_pretrained(tmp_path).packed_weights


def test_imports_run_one_way():
    """format.py imports nothing of the package; kernels/ nothing of binarization/ (or anything above it)."""
    import ast
    from pathlib import Path

    root = Path(hb.__file__).parent

    def package_imports(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(path.relative_to(root).parent.parts[: len(path.relative_to(root).parent.parts)
                                                                  - (node.level - 1)])
                names.add(".".join(p for p in (base, node.module or "") if p))
        return names

    assert package_imports(root / "format.py") == set()
    for path in (root / "kernels").glob("*.py"):
        outside = {name for name in package_imports(path) if name != "format" and name.split(".")[0] != "kernels"}
        assert not outside, (path.name, outside)
