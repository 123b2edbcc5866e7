"""Loading a saved checkpoint with `trust_remote_code=True` in a Python where `hf_binary_bert` cannot be imported
(issue 5, §2): the flat copy of the modeling code that `save_pretrained` writes, and the config's `auto_map`."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import HEADS, head_inputs, head_output, tiny_config
from hub_server import isolate_modules_cache
from safetensors.torch import save_file
from transformers.dynamic_module_utils import check_imports, get_relative_import_files

import hf_binary_bert as hb
from hf_binary_bert import BinaryBertForSequenceClassification, BinaryBertModel
from hf_binary_bert.remote_code import AUTO_MAP, remote_code_files

# Run first in every child process: `import hf_binary_bert` (and any submodule) fails as if it were not installed.
HIDE_PACKAGE = textwrap.dedent("""
    import importlib.abc, sys

    class _Hidden(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_binary_bert" or name.startswith("hf_binary_bert."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, _Hidden())
    try:
        import hf_binary_bert
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("hf_binary_bert is still importable")
""")


def run_without_package(script: str, tmp_path, env: dict | None = None, args: tuple[str, ...] = ()) -> str:
    """Run `script` (with command line arguments `args`) in a fresh Python with the package hidden, from an empty
    folder (so the repository is not on sys.path) and with its own transformers module cache; returns stdout, fails
    the test with stderr."""
    workdir = tmp_path / "child"
    workdir.mkdir(exist_ok=True)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": "", **(env or {})}
    result = subprocess.run([sys.executable, "-c", HIDE_PACKAGE + textwrap.dedent(script), *args], cwd=workdir,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_the_copy_is_two_files_complete_for_the_dynamic_module_loader(tmp_path):
    files = remote_code_files()
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    assert set(files) == {"modeling_binary_bert.py", "configuration_binary_bert.py"}  # transformers' convention
    # transformers fetches exactly the files its regex finds, recursively: the configuration, nothing else
    needed = {os.path.basename(f) for entry in files for f in get_relative_import_files(str(tmp_path / entry))}
    assert needed == {"configuration_binary_bert.py"}
    for name, source in files.items():
        assert not re.search(r"^\s*(from|import)\s+hf_binary_bert", source, flags=re.MULTILINE), name
        check_imports(str(tmp_path / name))  # only torch / transformers / huggingface_hub / the standard library
    # every module the models import is in the copy, verbatim; tooling that needs the package (datasets, the card
    # template) is not
    modeling = files["modeling_binary_bert.py"]
    for module in ("format", "binarization.linear", "kernels.ops", "runtime", "modeling_binary_bert"):
        assert f"    {module!r}: (" in modeling, module
    assert "    'layer_sizes': (" in files["configuration_binary_bert.py"]
    for module in ("hub", "model_card", "data", "cli", "recipes"):
        assert f"    {module!r}: (" not in modeling, module


def test_saved_config_has_an_auto_map_for_every_head(tmp_path):
    BinaryBertModel(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert set(AUTO_MAP) == {"AutoConfig", "AutoModel", *(auto for auto, _, _ in HEADS.values())}
    for reference in AUTO_MAP.values():
        module, cls = reference.split(".")
        assert f"class {cls}(" in (tmp_path / f"{module}.py").read_text()


# The child's part of test_trust_remote_code_loads_without_the_package: every case in one Python (each a fresh
# interpreter took ≈ 12 s of the suite), each in its own try so that one failure does not hide the others' results.
LOAD_AND_COMPARE = """
    import json, sys, traceback
    import torch
    from safetensors.torch import load_file
    import transformers
    from transformers import AutoConfig, AutoModel

    cases = json.loads(sys.argv[1])
    torch.set_num_threads(cases[0]["threads"])  # as the parent computed the references (float GEMMs round by split)

    def check(i, auto, cls, path, ref, resaved):
        reference = load_file(ref)
        model = getattr(transformers, auto).from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == cls, type(model).__name__
        assert AutoConfig.from_pretrained(path, trust_remote_code=True).model_type == "binary_bert"
        with torch.inference_mode():
            out = model(reference["ids"])
            out = torch.stack([out.start_logits, out.end_logits], -1) if "start_logits" in out else out.logits
        print(f"case {i} max_abs_diff", (out - reference["logits"]).abs().max().item())
        model.save_pretrained(resaved)  # a re-save carries the same code
        again = AutoModel.from_pretrained(resaved, trust_remote_code=True)
        print(f"case {i} resaved", type(again).__name__)
        try:
            model.push_to_hub("someone/x")
        except ImportError as err:
            print(f"case {i} push:", err)

    for case in cases:
        try:
            check(case["i"], case["auto"], case["cls"], case["path"], case["ref"], case["resaved"])
        except Exception:
            print(f"case {case['i']} error:", json.dumps(traceback.format_exc()))
"""


_BIT = {"activation_bits": 1, "activation_quantizer": "elastic", "weight_scale": "learned_offset"}
REMOTE_CASES = [
    ("BinaryBertForMaskedLM", dict(weight_scale="learned", scale_granularity="row")),
    ("BinaryBertForSequenceClassification",
     dict(weight_scale="learned_offset", scale_granularity="head", activation_bits=1, activation_quantizer="elastic",
          embedding_bits=1, num_labels=3)),
    ("BinaryBertForSequenceClassification", dict(activation_bits=1, attention_type="bi_attention", num_labels=2)),
    # pruned: per-layer heads and query/key head sizes (QueryKeyPrunedSelfAttention in the copy)
    ("BinaryBertForSequenceClassification",
     dict(activation_bits=1, activation_quantizer="elastic", attention_type="bi_attention", num_labels=2,
          layer_num_attention_heads=[3, 4], layer_query_key_head_sizes=[5, 2], layer_intermediate_sizes=[20, 37])),
    *[(head, {**_BIT, **kwargs}) for head, (_, _, kwargs) in HEADS.items()
      if head not in ("BinaryBertForMaskedLM", "BinaryBertForSequenceClassification")],
]


@pytest.fixture(scope="module")
def remote_loads(tmp_path_factory):
    """Every REMOTE_CASES model saved (calibrated, random init) with its logits from the compiled kernels here, layer
    by layer ("eager"; the native runtime rounds LayerNorm / GELU / softmax its own way; the copy runs their reference
    twins, bit for bit equal), then loaded by one child Python without the package. Returns (folder, the child's
    stdout)."""
    root = tmp_path_factory.mktemp("remote")
    input_ids = torch.randint(1, 99, (3, 11), generator=torch.Generator().manual_seed(0))
    cases = []
    for i, (name, kwargs) in enumerate(REMOTE_CASES):
        auto, head = HEADS[name][0], getattr(hb, name)
        ids = head_inputs(name, input_ids)["input_ids"]
        torch.manual_seed(0)
        model = head(tiny_config(**kwargs))
        model.train()(ids)  # calibrates the activation quantizers
        model.eval().save_pretrained(root / f"model{i}")
        with torch.inference_mode():
            logits = head_output(head.from_pretrained(root / f"model{i}").set_inference_kernel("eager")(ids))
        save_file({"ids": ids, "logits": logits}, root / f"reference{i}.safetensors")
        cases.append({"i": i, "auto": auto, "cls": name, "path": str(root / f"model{i}"),
                      "ref": str(root / f"reference{i}.safetensors"), "resaved": str(root / f"resaved{i}"),
                      "threads": torch.get_num_threads()})
    return root, run_without_package(LOAD_AND_COMPARE, root, args=(json.dumps(cases),))


@pytest.mark.parametrize("case", range(len(REMOTE_CASES)),
                         ids=[f"{name}-{i}" for i, (name, _) in enumerate(REMOTE_CASES)])
def test_trust_remote_code_loads_without_the_package(remote_loads, case):
    root, out = remote_loads
    error = re.search(rf"^case {case} error: (.*)$", out, flags=re.MULTILINE)
    assert error is None, json.loads(error.group(1))
    assert float(re.search(rf"^case {case} max_abs_diff (\S+)", out, flags=re.MULTILINE).group(1)) == 0.0
    assert f"case {case} resaved BinaryBertModel" in out
    assert f"case {case} push: hf_binary_bert.hub is part of the hf_binary_bert package" in out
    model, resaved = root / f"model{case}", root / f"resaved{case}"
    assert sorted(os.listdir(resaved)) == sorted(os.listdir(model))
    assert sorted(n for n in os.listdir(model) if n.endswith(".py")) == [
        "configuration_binary_bert.py", "modeling_binary_bert.py"]
    for name in remote_code_files():  # the copy re-saves itself unchanged
        assert (resaved / name).read_text() == (model / name).read_text()


def test_remote_copy_and_package_live_in_one_process(tmp_path, input_ids, monkeypatch, request):
    """The copy imported next to the package registers its ops under its own namespace (no clash), and runs the
    same numbers; with the package installed, the Auto classes pick the package's classes."""
    from transformers import AutoModelForSequenceClassification
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    import hf_binary_bert.kernels.ops as package_ops
    from hf_binary_bert.attention import register_attention_functions

    # importing the copy registers its attention functions under the same global names: the package's again after
    # this test, or later tests in this process would run the copy's Bi-Attention (which does not know the package's
    # quantizer class, so never takes the bitwise kernel: test_runtime's Bi-Attention comparison then fails)
    request.addfinalizer(register_attention_functions)
    isolate_modules_cache(monkeypatch, tmp_path / "modules")
    model = BinaryBertForSequenceClassification(tiny_config(activation_bits=1)).eval()
    model.save_pretrained(tmp_path / "model")
    remote_class = get_class_from_dynamic_module(AUTO_MAP["AutoModelForSequenceClassification"], str(tmp_path / "model"))
    assert remote_class is not BinaryBertForSequenceClassification
    remote = remote_class.from_pretrained(tmp_path / "model").eval()
    remote_ops = sys.modules[remote_class.__module__.rsplit(".", 1)[0] + ".kernels.ops"]
    assert package_ops.NAMESPACE == "hf_binary_bert" and remote_ops.NAMESPACE.startswith("hf_binary_bert_")
    with torch.inference_mode():
        expected = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "model").set_inference_kernel(
            "eager")(input_ids).logits
        torch.testing.assert_close(remote(input_ids).logits, expected, rtol=0, atol=0)
    for trust in (None, True):
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model", trust_remote_code=trust)
        assert type(loaded) is BinaryBertForSequenceClassification
