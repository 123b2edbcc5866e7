"""The fake Hub (tests/hub_server.py) against the real huggingface_hub client and transformers' from_pretrained."""

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub_server import ORG, OTHER_TOKEN, USER, WRITE_TOKEN, FakeHub, fake_hub, use_endpoint  # noqa: F401


def _bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _resolve_requests(hub, filename: str):
    return [r for r in hub.requests if "/resolve/" in r.path and r.path.endswith("/" + filename)]


def test_upload_folder_then_download_each_file(fake_hub, tmp_path):
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    files = {
        "notes.txt": "hello fake hub\n".encode(),
        "sub/settings.json": json.dumps({"a": 1, "b": [1, 2]}).encode(),
        "weights.bin": _bytes(300_000),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)

    import huggingface_hub

    # The module-level helpers are bound to `huggingface_hub.hf_api.api`, whose endpoint use_endpoint patched.
    url = huggingface_hub.create_repo(f"{USER}/up", token=WRITE_TOKEN)
    assert url.repo_id == f"{USER}/up" and url.startswith(fake_hub.endpoint)
    info = HfApi(token=WRITE_TOKEN).upload_folder(repo_id=f"{USER}/up", folder_path=folder)
    assert info.oid == fake_hub.commits(f"{USER}/up")[-1]
    assert {k: v for k, v in fake_hub.files(f"{USER}/up").items() if k != ".gitattributes"} == files

    cache = tmp_path / "fresh_cache"
    for name, content in files.items():
        path = Path(hf_hub_download(f"{USER}/up", name, cache_dir=cache))
        assert path.read_bytes() == content
        assert path.parent.parts[-1 - name.count("/")] == info.oid  # cached under snapshots/<commit sha>/
    assert sorted(HfApi().list_repo_files(f"{USER}/up")) == sorted([".gitattributes", *files])
    assert [s.rfilename for s in HfApi().model_info(f"{USER}/up").siblings] == sorted([".gitattributes", *files])
    # The write calls carried the token, the anonymous reads did not.
    commit = next(r for r in fake_hub.requests if r.method == "POST" and "/commit/" in r.path)
    assert commit.headers["authorization"] == f"Bearer {WRITE_TOKEN}"
    assert all("authorization" not in r.headers for r in _resolve_requests(fake_hub, "notes.txt"))
    assert fake_hub.unhandled == [] and fake_hub.server_errors == []


def test_revision_pinning_and_branches(fake_hub, tmp_path):
    api = HfApi(token=WRITE_TOKEN)
    repo = f"{USER}/pinned"
    api.create_repo(repo)
    first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="model.txt", repo_id=repo).oid
    second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="model.txt", repo_id=repo).oid
    assert first != second and fake_hub.commits(repo)[1:] == [first, second]

    def download(revision, cache="c1"):
        return Path(hf_hub_download(repo, "model.txt", revision=revision, cache_dir=tmp_path / cache)).read_bytes()

    assert download(first) == b"version 1"
    assert download("main") == b"version 2"
    assert download(first[:10], cache="c2") == b"version 1"  # a short sha resolves too

    api.create_branch(repo, branch="dev")
    api.create_branch(repo, branch="dev", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch(repo, branch="dev")
    assert err.value.response.status_code == 409
    third = api.upload_file(path_or_fileobj=b"version 3", path_in_repo="model.txt", repo_id=repo, revision="dev").oid
    assert download("dev") == b"version 3"
    assert download("main") == b"version 2"
    assert fake_hub.files(repo)["model.txt"] == b"version 2"
    assert fake_hub.commits(repo, "dev")[-2:] == [second, third]
    refs = {b.name: b.target_commit for b in api.list_repo_refs(repo).branches}
    assert refs == {"main": second, "dev": third}
    assert [c.commit_id for c in api.list_repo_commits(repo, revision="dev")][:2] == [third, second]
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, revision="no-such-branch")
    assert fake_hub.unhandled == [] and fake_hub.server_errors == []


def test_private_repo_needs_the_owner_token(fake_hub, tmp_path):
    api = HfApi(token=WRITE_TOKEN)
    repo = f"{USER}/secret"
    api.create_repo(repo, private=True)
    api.upload_file(path_or_fileobj=b"classified", path_in_repo="data.txt", repo_id=repo)
    assert fake_hub.is_private(repo)

    with pytest.raises(RepositoryNotFoundError) as err:  # anonymous (no token on this machine either)
        hf_hub_download(repo, "data.txt", cache_dir=tmp_path / "anon")
    assert err.value.response.status_code == 401
    assert "authenticated" in str(err.value)
    with pytest.raises(RepositoryNotFoundError) as err:  # someone else's token
        hf_hub_download(repo, "data.txt", cache_dir=tmp_path / "bob", token=OTHER_TOKEN)
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(repo)

    path = hf_hub_download(repo, "data.txt", cache_dir=tmp_path / "owner", token=WRITE_TOKEN)
    assert Path(path).read_bytes() == b"classified"
    assert HfApi(token=WRITE_TOKEN).model_info(repo).private is True
    owner_calls = _resolve_requests(fake_hub, "data.txt")[-2:]  # HEAD then GET
    assert [r.method for r in owner_calls] == ["HEAD", "GET"]
    assert all(r.headers["authorization"] == f"Bearer {WRITE_TOKEN}" for r in owner_calls)
    assert "authorization" not in _resolve_requests(fake_hub, "data.txt")[0].headers  # the anonymous attempt
    assert fake_hub.unhandled == [] and fake_hub.server_errors == []


def test_auth_errors_on_create_repo(fake_hub):
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_not_a_real_token").create_repo(f"{USER}/nope")
    assert err.value.response.status_code == 401
    assert not isinstance(err.value, RepositoryNotFoundError)
    assert "Invalid credentials" in str(err.value)
    with pytest.raises(HfHubHTTPError) as err:  # a token is required
        HfApi().create_repo(f"{USER}/nope")
    assert err.value.response.status_code == 401
    assert not any(r.path == "/api/models/alice/nope" for r in fake_hub.requests)

    api = HfApi(token=WRITE_TOKEN)
    assert api.whoami()["name"] == USER
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_not_a_real_token").whoami()
    assert err.value.response.status_code == 401
    for namespace in ("bob", "no-such-org"):  # someone else's namespace, a namespace that does not exist
        with pytest.raises(HfHubHTTPError) as err:
            api.create_repo(f"{namespace}/x")
        assert err.value.response.status_code == 403
    assert api.create_repo(f"{ORG}/shared").repo_id == f"{ORG}/shared"  # alice is a member of the org
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(f"{ORG}/shared")
    assert err.value.response.status_code == 409
    api.create_repo(f"{ORG}/shared", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:  # bob cannot write to alice's public repo
        HfApi(token=OTHER_TOKEN).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=f"{ORG}/shared")
    assert err.value.response.status_code == 403
    assert fake_hub.unhandled == [] and fake_hub.server_errors == []


def test_missing_repo_file_and_revision(fake_hub, tmp_path):
    repo = f"{USER}/present"
    fake_hub.create_repo(repo, files={"config.json": "{}"})
    cache = tmp_path / "cache"

    with pytest.raises(RepositoryNotFoundError) as err:
        hf_hub_download(f"{USER}/absent", "config.json", cache_dir=cache, token=WRITE_TOKEN)
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError) as err:  # anonymous: 401, like the real Hub
        hf_hub_download(f"{USER}/absent", "config.json", cache_dir=cache)
    assert err.value.response.status_code == 401
    with pytest.raises(RemoteEntryNotFoundError) as err:
        hf_hub_download(repo, "missing.bin", cache_dir=cache)
    assert isinstance(err.value, EntryNotFoundError) and err.value.response.status_code == 404
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "config.json", revision="v9", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(repo, revision="0" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        list(HfApi().list_repo_tree(repo, path_in_repo="no_such_folder"))
    api = HfApi()
    assert api.file_exists(repo, "config.json") and not api.file_exists(repo, "missing.bin")
    assert api.repo_exists(repo) and not api.repo_exists(f"{USER}/absent")
    assert fake_hub.unhandled == [] and fake_hub.server_errors == []


def _tiny_bert_folder(folder: Path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    model = BertModel(config).eval()
    model.save_pretrained(folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(94)]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    return model


def test_transformers_from_pretrained_end_to_end(fake_hub, tmp_path):
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertModel

    model = _tiny_bert_folder(tmp_path / "bert")
    repo = f"{USER}/tiny-bert"
    api = HfApi(token=WRITE_TOKEN)
    api.create_repo(repo)
    sha = api.upload_folder(repo_id=repo, folder_path=tmp_path / "bert").oid

    loaded = BertModel.from_pretrained(repo, cache_dir=tmp_path / "c1").eval()
    reference = model.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in reference.items())
    config = AutoConfig.from_pretrained(repo, revision=sha, cache_dir=tmp_path / "c2")
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (99, 32, 37)
    tokenizer = AutoTokenizer.from_pretrained(repo, cache_dir=tmp_path / "c3")
    assert tokenizer.convert_tokens_to_ids("tok3") == 8

    # Missing optional files (adapter_config.json, model.safetensors.index.json, chat templates, ...) are 404
    # EntryNotFound: expected. No call to an endpoint the fake does not know, no server error.
    assert fake_hub.unhandled == [] and fake_hub.server_errors == []
    assert all(r.error_code == "EntryNotFound" for r in fake_hub.requests if r.status == 404)
    assert any(r.path.endswith("/model.safetensors") and r.method == "GET" for r in fake_hub.requests)


def test_trust_remote_code_downloads_the_module(fake_hub, tmp_path):
    from transformers import AutoConfig

    code = textwrap.dedent(
        """
        from transformers import PretrainedConfig

        class FakeHubConfig(PretrainedConfig):
            model_type = "fake-hub-test"

            def __init__(self, answer=0, **kwargs):
                self.answer = answer
                super().__init__(**kwargs)
        """
    )
    auto_map = {"AutoConfig": "configuration_fake.FakeHubConfig"}
    config = {"model_type": "fake-hub-test", "answer": 42, "auto_map": auto_map}
    repo = f"{USER}/remote-code"
    fake_hub.create_repo(repo, files={"configuration_fake.py": code, "config.json": json.dumps(config)})

    loaded = AutoConfig.from_pretrained(repo, trust_remote_code=True, cache_dir=tmp_path / "c")
    assert type(loaded).__name__ == "FakeHubConfig" and loaded.answer == 42
    assert Path(sys.modules[type(loaded).__module__].__file__).is_relative_to(tmp_path)  # isolated modules cache
    assert any(r.path.endswith("/configuration_fake.py") for r in fake_hub.requests)
    assert fake_hub.unhandled == [] and fake_hub.server_errors == []


def test_lfs_uploads(monkeypatch, tmp_path):
    with FakeHub(tokens={WRITE_TOKEN: USER}, lfs_threshold=100_000) as hub:
        use_endpoint(monkeypatch, hub.endpoint, tmp_path / "home")
        api = HfApi(token=WRITE_TOKEN)
        repo = f"{USER}/lfs"
        api.create_repo(repo)
        big, small = _bytes(250_000, seed=1), b"small file"
        api.upload_file(path_or_fileobj=big, path_in_repo="big.bin", repo_id=repo)
        api.upload_file(path_or_fileobj=small, path_in_repo="small.txt", repo_id=repo)
        assert any(r.path.endswith(".git/info/lfs/objects/batch") for r in hub.requests)
        commit_bodies = [r for r in hub.requests if r.method == "PUT" and r.path.startswith("/__fake_lfs/")]
        assert len(commit_bodies) == 1

        path = Path(hf_hub_download(repo, "big.bin", cache_dir=tmp_path / "c"))
        assert path.read_bytes() == big
        import hashlib

        assert path.resolve().name == hashlib.sha256(big).hexdigest()  # the blob is named after the LFS sha256
        tree = {f.path: f for f in api.list_repo_tree(repo)}
        assert tree["big.bin"].lfs.sha256 == hashlib.sha256(big).hexdigest() and tree["small.txt"].lfs is None
        assert hub.unhandled == [] and hub.server_errors == []


def test_use_endpoint_replaces_import_time_copies(fake_hub, tmp_path):
    import huggingface_hub
    import transformers.utils.hub as tf_hub
    from huggingface_hub import constants
    from transformers import AutoConfig

    fake_hub.create_repo(f"{USER}/cfg", files={"config.json": json.dumps({"model_type": "bert", "hidden_size": 8})})
    with pytest.MonkeyPatch.context() as mp:
        # A transformers `HfApi` singleton built before the endpoint was patched (e.g. by an earlier test).
        mp.setattr(tf_hub, "_hf_api", HfApi(endpoint="http://stale.invalid"))
        use_endpoint(mp, fake_hub.endpoint, tmp_path / "home2")
        assert tf_hub.hf_api().endpoint == fake_hub.endpoint
        assert huggingface_hub.hf_api.api.endpoint == fake_hub.endpoint
        assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(fake_hub.endpoint + "/")
        assert AutoConfig.from_pretrained(f"{USER}/cfg").hidden_size == 8  # resolve_revision goes through hf_api()
    assert tf_hub._hf_api is None  # restored to the fixture's state


def test_subprocess_uses_hf_endpoint(fake_hub, tmp_path):
    fake_hub.create_repo(f"{USER}/sub", private=True, files={"hello.txt": "from a subprocess"})
    script = (
        "import sys; from huggingface_hub import hf_hub_download;"
        "print(open(hf_hub_download('alice/sub', 'hello.txt', token=sys.argv[1])).read())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, WRITE_TOKEN], capture_output=True, text=True, env=os.environ, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "from a subprocess"
    assert any(p.name.startswith("models--alice--sub") for p in fake_hub.cache_dir.iterdir())
