"""Sharing on the Hub end to end (issue 5, §1–2): push_to_hub / `hf-binary-bert push` to the fake Hub of
tests/hub_server.py through the real huggingface_hub client, then loading from a fresh cache, pinned revisions,
private repositories, errors, and trust_remote_code loading without the package."""

import json
import os
import re
import tempfile

import pytest
import torch
import transformers
from conftest import DATA, HEADS, head_inputs, head_output, tiny_config
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_binary_bert as hb
from hf_binary_bert import BinaryBertForMaskedLM, BinaryBertForSequenceClassification, cli
from hf_binary_bert.hub import PushToHubError
from hf_binary_bert.remote_code import remote_code_files
from hub_server import ORG, OTHER_TOKEN, USER, WRITE_TOKEN, fake_hub  # noqa: F401
from test_remote_code import run_without_package

TOKENIZER = DATA / "tokenizer" / "bert-base-uncased"
TEXT = ["a fine , funny film .", "dull and far too long"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def classifier(tokenizer, seed: int = 0, **kwargs) -> BinaryBertForSequenceClassification:
    torch.manual_seed(seed)
    model = BinaryBertForSequenceClassification(tiny_config(vocab_size=tokenizer.vocab_size, num_labels=2, **kwargs))
    model.train()(input_ids=torch.randint(1000, 2000, (2, 9)))  # calibrates any activation quantizer
    return model.eval()


def logits(model, tokenizer) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(TEXT, padding=True, return_tensors="pt")).logits


def push_temp_folders() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("hf_binary_bert_push_")}


def test_push_then_load_from_a_fresh_cache(fake_hub, tokenizer, tmp_path):
    model = classifier(tokenizer, weight_scale="learned_offset", scale_granularity="head", activation_bits=1,
                       activation_quantizer="elastic")
    model.config.teacher_name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    repo = f"{USER}/tiny-w1a1"
    commit = model.push_to_hub(repo, token=WRITE_TOKEN, private=True, tokenizer=tokenizer, task="sst2",
                               metrics={"accuracy": 0.79}, license="apache-2.0")
    assert commit.oid == fake_hub.commits(repo)[-1] and fake_hub.is_private(repo)
    files = fake_hub.files(repo)
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json",
            *remote_code_files()} <= set(files)
    assert json.loads(files["config.json"])["packed_weights"] is True
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and card.data.license == "apache-2.0"
    assert card.data.eval_results[0].metric_value == 0.79
    assert f'AutoModelForSequenceClassification.from_pretrained("{repo}")' in card.text

    cache = tmp_path / "fresh-cache"
    loaded = AutoModelForSequenceClassification.from_pretrained(repo, token=WRITE_TOKEN, cache_dir=cache)
    loaded_tokenizer = AutoTokenizer.from_pretrained(repo, token=WRITE_TOKEN, cache_dir=cache)
    assert type(loaded) is BinaryBertForSequenceClassification
    model.save_pretrained(tmp_path / "local")
    saved = BinaryBertForSequenceClassification.from_pretrained(tmp_path / "local")
    torch.testing.assert_close(logits(loaded, loaded_tokenizer), logits(saved, tokenizer), rtol=0, atol=0)
    assert (cache / f"models--{USER}--tiny-w1a1" / "snapshots" / commit.oid / "model.safetensors").is_file()
    # every download from the private repository carried the token (transformers' tokenizer also lists the repo
    # files without it, tolerating the 401: `tokenization_utils_base`, not this package)
    reads = [r for r in fake_hub.requests if f"/{repo}/resolve/" in r.path]
    assert reads and all(r.headers.get("authorization") == f"Bearer {WRITE_TOKEN}" for r in reads)


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_pushes_and_loads_through_its_auto_class(fake_hub, tokenizer, tmp_path, head):
    auto, _, kwargs = HEADS[head]
    torch.manual_seed(0)
    model = getattr(hb, head)(tiny_config(vocab_size=tokenizer.vocab_size, activation_bits=1,
                                          activation_quantizer="elastic", **kwargs))
    encoded = tokenizer(TEXT, padding=True, return_tensors="pt")
    inputs = head_inputs(head, encoded.input_ids, encoded.attention_mask)
    model.train()(**inputs)  # calibrates the activation quantizers
    repo = f"{USER}/{head.lower()}"
    commit = model.eval().push_to_hub(repo, token=WRITE_TOKEN, tokenizer=tokenizer)
    loaded = getattr(transformers, auto).from_pretrained(repo, revision=commit.oid, cache_dir=tmp_path / "cache")
    assert type(loaded) is getattr(hb, head) and loaded.config.packed_weights
    model.save_pretrained(tmp_path / "local")
    saved = getattr(hb, head).from_pretrained(tmp_path / "local").eval()
    with torch.inference_mode():
        torch.testing.assert_close(head_output(loaded.eval()(**inputs)), head_output(saved(**inputs)), rtol=0, atol=0)
    card = ModelCard(fake_hub.files(repo)["README.md"].decode())
    assert f'{auto}.from_pretrained("{repo}")' in card.text
    assert json.loads(fake_hub.files(repo)["config.json"])["auto_map"][auto] == f"modeling_binary_bert.{head}"


def test_private_repository_without_the_token_and_a_missing_one(fake_hub, tokenizer, tmp_path):
    repo = f"{USER}/private"
    classifier(tokenizer).push_to_hub(repo, token=WRITE_TOKEN, private=True)
    with pytest.raises(OSError, match=repo):
        AutoModelForSequenceClassification.from_pretrained(repo, cache_dir=tmp_path / "c1")
    assert any(r.status == 401 and f"/api/models/{repo}" in r.path for r in fake_hub.requests)
    with pytest.raises(OSError, match=repo):  # another user's token
        AutoModelForSequenceClassification.from_pretrained(repo, token=OTHER_TOKEN, cache_dir=tmp_path / "c2")
    with pytest.raises(OSError, match=f"{USER}/no-such-model"):
        AutoModelForSequenceClassification.from_pretrained(f"{USER}/no-such-model", cache_dir=tmp_path / "c3")
    assert any(r.status == 404 or r.status == 401 for r in fake_hub.requests if "no-such-model" in r.path)


def test_revision_pinning_and_branches(fake_hub, tokenizer, tmp_path):
    repo = f"{ORG}/pinned"
    first, second = classifier(tokenizer, seed=1), classifier(tokenizer, seed=2)
    v1 = first.push_to_hub(repo, token=WRITE_TOKEN, tokenizer=tokenizer).oid
    v2 = second.push_to_hub(repo, token=WRITE_TOKEN).oid
    assert v1 != v2
    load = lambda **kw: AutoModelForSequenceClassification.from_pretrained(repo, cache_dir=tmp_path / "c", **kw)
    torch.testing.assert_close(logits(load(revision=v1), tokenizer), logits(first, tokenizer))
    torch.testing.assert_close(logits(load(), tokenizer), logits(second, tokenizer))
    # a push to a branch creates it and leaves main alone
    third = classifier(tokenizer, seed=3)
    dev = third.push_to_hub(repo, token=WRITE_TOKEN, revision="dev", commit_message="try a third seed")
    assert fake_hub.commits(repo, branch="dev")[-1] == dev.oid and fake_hub.commits(repo)[-1] == v2
    torch.testing.assert_close(logits(load(revision="dev"), tokenizer), logits(third, tokenizer))


def test_push_errors_are_one_clear_error_and_leave_nothing(fake_hub, tokenizer, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    model = classifier(tokenizer)
    before = push_temp_folders()
    with pytest.raises(PushToHubError, match=r"'alice/x'.*HTTP 401.*authentication failed"):
        model.push_to_hub(f"{USER}/x", token="hf_not_a_token", tokenizer=tokenizer)
    with pytest.raises(PushToHubError, match=r"HTTP 403.*may not write"):  # bob may not write in alice's namespace
        model.push_to_hub(f"{USER}/x", token=OTHER_TOKEN)
    with pytest.raises(PushToHubError, match=r"'no-such-org/x'.*HTTP 403.*missing repository"):
        model.push_to_hub("no-such-org/x", token=WRITE_TOKEN)
    assert push_temp_folders() == before and os.listdir(tmp_path / "work") == []
    assert not [r for r in fake_hub.requests if "/commit/" in r.path]  # nothing was uploaded either


def test_save_pretrained_push_to_hub_uploads_the_folder(fake_hub, tokenizer, tmp_path):
    model = classifier(tokenizer)
    model.save_pretrained(tmp_path / "m", push_to_hub=True, repo_id=f"{USER}/saved", token=WRITE_TOKEN)
    assert sorted(fake_hub.files(f"{USER}/saved")) == sorted([".gitattributes", *os.listdir(tmp_path / "m")])


def test_cli_push_from_a_distill_folder(fake_hub, tokenizer, tmp_path, capsys):
    folder = tmp_path / "student"
    model = BinaryBertForMaskedLM(tiny_config(vocab_size=tokenizer.vocab_size))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "distill_results.json").write_text(json.dumps({"task": "sst2", "metrics": {}}))
    (folder / "comparison.json").write_text(json.dumps([
        {"model": "teacher", "accuracy": 0.899, "size_mb": 45.4, "latency_ms_b1": 9.0, "latency_ms_b8": 40.0},
        {"model": "student", "accuracy": 0.789, "size_mb": 3.9, "latency_ms_b1": 4.5, "latency_ms_b8": 20.0}]))
    repo = f"{USER}/cli-student"
    code = cli.main(["push", str(folder), repo, "--token", WRITE_TOKEN, "--private", "--license", "mit",
                     "--base-model", "sentence-transformers/all-MiniLM-L6-v2"])
    assert code == 0, capsys.readouterr().err
    assert re.search(rf"pushed .* to {repo}: .* \(revision {fake_hub.commits(repo)[-1]}\)", capsys.readouterr().out)
    files = fake_hub.files(repo)
    assert not {"comparison.json", "distill_results.json"} & set(files)  # the model's files, not the run's
    card = ModelCard(files["README.md"].decode())
    assert card.data.pipeline_tag == "fill-mask" and card.data.license == "mit" and fake_hub.is_private(repo)
    assert [(r.dataset_config, r.metric_value) for r in card.data.eval_results] == [("sst2", 0.789)]
    assert "| 1 | 4.5 | 9.0 | 2.00× |" in card.text and "| SST2 | Accuracy | 0.7890 | 0.8990 |" in card.text

    requests = len(fake_hub.requests)  # --dry-run writes exactly the pushed files and talks to no Hub
    assert cli.main(["push", str(folder), repo, "--dry-run", str(tmp_path / "dry"), "--license", "mit",
                     "--base-model", "sentence-transformers/all-MiniLM-L6-v2"]) == 0
    dry = {p.name: p.read_bytes() for p in (tmp_path / "dry").iterdir()}
    assert set(dry) == set(files) - {".gitattributes"} and dry["README.md"] == files["README.md"]
    assert len(fake_hub.requests) == requests
    assert cli.main(["push", str(folder), repo, "--dry-run", str(tmp_path / "dry")]) == cli.EXIT_USAGE
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["push", str(folder), repo, "--task", "imdb", "--dry-run", str(tmp_path / "dry2")]) == cli.EXIT_USAGE
    assert "--task: " in capsys.readouterr().err
    # masked-LM metrics without a dataset: in the card's table, not in model-index
    assert cli.main(["push", str(folder), repo, "--task", "mlm", "--dry-run", str(tmp_path / "dry3")]) == 0
    card = ModelCard.load(tmp_path / "dry3" / "README.md")
    assert card.data.eval_results is None and "| masked LM | Accuracy | 0.7890 | 0.8990 |" in card.text

    (folder / "distill_results.json").unlink()  # the task is unknown: metrics stay out of the card, with a note
    assert cli.main(["push", str(folder), f"{repo}-2", "--token", WRITE_TOKEN]) == 0
    assert "pass --task" in capsys.readouterr().err
    card = ModelCard(fake_hub.files(f"{repo}-2")["README.md"].decode())
    assert card.data.eval_results is None and "| 8 | 20.0 | 40.0 | 2.00× |" in card.text

    assert cli.main(["push", str(folder), repo, "--token", "hf_not_a_token"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()  # progress bars of the load and save, then the error
    assert err[-1].startswith("hf-binary-bert: error: Could not push") and "HTTP 401" in err[-1]
    assert not [line for line in err if "Traceback" in line]
    assert cli.main(["push", str(tmp_path / "nothing"), repo]) == cli.EXIT_USAGE
    assert "no config.json" in capsys.readouterr().err


def test_trust_remote_code_from_the_hub_without_the_package(fake_hub, tokenizer, tmp_path):
    model = classifier(tokenizer, activation_bits=1, attention_type="bi_attention")
    repo = f"{USER}/remote"
    oid = model.push_to_hub(repo, token=WRITE_TOKEN, private=True, tokenizer=tokenizer).oid
    # layer by layer on the kernels, which the copy's reference twins equal bit for bit (not the native runtime)
    expected = logits(BinaryBertForSequenceClassification.from_pretrained(repo, token=WRITE_TOKEN)
                      .set_inference_kernel("eager"), tokenizer)
    save_file({"logits": expected}, tmp_path / "expected.safetensors")
    out = run_without_package(f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        repo, token = {repo!r}, {WRITE_TOKEN!r}
        model = AutoModelForSequenceClassification.from_pretrained(repo, token=token, revision={oid!r},
                                                                   trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(repo, token=token, trust_remote_code=True)
        with torch.inference_mode():
            out = model(**tokenizer({TEXT!r}, padding=True, return_tensors="pt")).logits
        print(type(model).__module__)
        print("max_abs_diff", (out - load_file({str(tmp_path / "expected.safetensors")!r})["logits"]).abs().max().item())
    """, tmp_path)
    assert "[y/N]" not in out  # transformers did not have to ask
    assert re.search(r"^transformers_modules\.\S+\.modeling_binary_bert$", out, flags=re.M) and float(re.search(r"max_abs_diff (\S+)", out).group(1)) == 0.0
    fetched = {r.path.rsplit("/", 1)[-1] for r in fake_hub.requests if r.method == "GET" and r.path.endswith(".py")}
    assert fetched == set(remote_code_files())


def test_distillation_trainer_pushes_the_packed_student_with_its_card(fake_hub, tmp_path):
    from distill_helpers import tiny_teacher, toy_dataset

    from hf_binary_bert import DistillationTrainer, DistillationTrainingArguments

    teacher = tiny_teacher()
    student = BinaryBertForSequenceClassification.from_teacher(teacher, weight_scale="learned_offset")
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8, report_to=[], use_cpu=True,
        disable_tqdm=True, save_strategy="no", hub_model_id=f"{USER}/trained", hub_token=WRITE_TOKEN,
        hidden_loss_weight=1.0)
    trainer = DistillationTrainer(teacher_model=teacher, model=student, args=args, train_dataset=toy_dataset(),
                                  eval_dataset=toy_dataset(8), compute_metrics=lambda p: {
                                      "accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())})
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    trainer.push_to_hub(task="sst2", license="apache-2.0")
    files = fake_hub.files(f"{USER}/trained")
    assert json.loads(files["config.json"])["packed_weights"] is True  # the packed student, not the training form
    assert set(remote_code_files()) <= set(files)
    card = ModelCard(files["README.md"].decode())
    assert "hf_binary_bert" in card.data.tags and card.data.license == "apache-2.0"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("accuracy", round(accuracy, 4))]
