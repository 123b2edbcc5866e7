"""A fake of the Hugging Face Hub HTTP API, for tests (a test double, not a Hub implementation).

`FakeHub` runs a `ThreadingHTTPServer` on 127.0.0.1 (random free port) that answers the requests the *real*
`huggingface_hub` client (2.x) and `transformers.from_pretrained` make, closely enough for them to work end to end
without the internet: create a repo, upload files, create branches and tags, download files into the cache pinned to
a commit, list files, and get the same errors (`RepositoryNotFoundError`, `RevisionNotFoundError`,
`RemoteEntryNotFoundError`, HTTP 401/403/409) that the real Hub produces.

Scope (what it is *not*):

- model repos only (`/api/models/...`); datasets and spaces answer 404, creating one answers 400;
- state lives in memory (a full file snapshot per commit), nothing is persisted;
- files are uploaded inline: the preupload endpoint answers `"uploadMode": "regular"` for every file unless
  `lfs_threshold` is set, in which case larger files go through a minimal git-LFS "basic" transfer
  (batch endpoint + PUT to this server). Xet storage is not implemented and the server never sends `X-Xet-*`
  headers, so downloads are plain HTTP. Regular uploads work with `hf_xet` installed or not; LFS uploads need
  Xet disabled (`use_endpoint` sets `HF_HUB_DISABLE_XET`), else the client asks for a xet-write-token (404);
- no pull requests (`create_pr=True` answers 400), no gated repos, no pagination (one page, no `Link` header),
  no model cards / search / discussions / inference. Anything it does not know answers 404 with a JSON error
  and is recorded in `FakeHub.unhandled`, so tests can assert that the client made no unexpected call.

Auth model, as on the real Hub: tokens map to users (`FakeHub(tokens={"hf_x": "alice"})`), sent as
`Authorization: Bearer <token>`. A token that is not registered gets 401 "Invalid credentials in Authorization
header" on *any* request. Reading a private repo (or a missing one) answers 401 when anonymous and 404 when
authenticated, both with `X-Error-Code: RepoNotFound` (the code `hf_raise_for_status` maps to
`RepositoryNotFoundError`). Writing needs a token whose user is the repo's namespace or a member of that
organisation (`orgs=`); creating a repo under a namespace you cannot write to (including one that does not exist)
answers 403.

Use it through the `fake_hub` fixture below (re-export it from `conftest.py`), or `with FakeHub(...) as hub:` plus
`use_endpoint(monkeypatch, hub.endpoint, tmp_path)`, which points huggingface_hub and transformers at the server.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

# Default identities of the `fake_hub` fixture.
USER = "alice"
WRITE_TOKEN = "hf_fake_token_alice"
OTHER_USER = "bob"
OTHER_TOKEN = "hf_fake_token_bob"
ORG = "acme"  # an organisation `alice` belongs to

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"

# What the real Hub puts in a new repo's first commit (abridged).
GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    b"*tfevents* filter=lfs diff=lfs merge=lfs -text\n"
)

# Answer of /api/agent-harnesses (fetched once per process to build the user-agent when telemetry is on).
_EMPTY_AGENT_REGISTRY = {"standardEnvVars": [], "harnesses": {}}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------------------------------- state


@dataclass(eq=False)
class _File:
    content: bytes
    lfs: bool = False

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @cached_property
    def pointer(self) -> bytes:  # the git-LFS pointer file stored in git for an LFS file
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {len(self.content)}\n".encode()

    @cached_property
    def blob_id(self) -> str:  # git oid, as the Hub reports it (of the pointer for LFS files)
        return _git_blob_oid(self.pointer if self.lfs else self.content)

    @property
    def etag(self) -> str:  # the Hub's ETag: git oid for regular files, sha256 for LFS files
        return self.sha256 if self.lfs else self.blob_id


@dataclass(eq=False)
class _Commit:
    oid: str
    parent: str | None
    files: dict[str, _File]
    title: str
    message: str
    author: str
    date: str


@dataclass(eq=False)
class _Repo:
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


class HubError(Exception):
    """An HTTP error answer: JSON body `{"error": message}`, plus `X-Error-Code` when `code` is set."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})
        self.body = {"error": message, **body}


class RecordedRequest(tuple):
    """One request received: a `(method, path, headers)` tuple (path without the query string, as sent, i.e.
    percent-encoded; header names lower-cased), with extra attributes `query` (dict of lists), `status` and
    `error_code` (the `X-Error-Code` answered, if any) filled in once answered."""

    def __new__(cls, method: str, path: str, headers: dict[str, str], query: dict[str, list[str]]):
        self = super().__new__(cls, (method, path, headers))
        self.query, self.status, self.error_code = query, None, None
        return self

    method = property(lambda self: self[0])
    path = property(lambda self: self[1])
    headers = property(lambda self: self[2])

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}{f' {self.error_code}' if self.error_code else ''}>"


# --------------------------------------------------------------------------------------------------- server


class FakeHub:
    """In-memory fake Hub on `http://127.0.0.1:<port>`. Context manager, or `start()` / `stop()`.

    Args:
        tokens: token -> user name. Each user is a namespace one can create repos in.
        orgs: organisation -> member user names; members can create repos in / write to the organisation.
        lfs_threshold: files of at least this many bytes are uploaded through git-LFS instead of inline
            (`None`, the default: every file is "regular").

    Attributes:
        endpoint: `"http://127.0.0.1:<port>"` once started.
        requests: every request received, as `RecordedRequest` `(method, path, headers)` tuples.
        unhandled: the subset of `requests` that matched no endpoint (answered 404 without `X-Error-Code`).
        server_errors: tracebacks of exceptions raised while handling a request (answered 500); should stay empty.
        cache_dir: the test's fresh hub cache, when made by the `fake_hub` fixture.
    """

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        *,
        orgs: dict[str, list[str]] | None = None,
        lfs_threshold: int | None = None,
    ):
        self.tokens = dict(tokens or {})
        self.orgs = {org: set(members) for org, members in (orgs or {}).items()}
        self.lfs_threshold = lfs_threshold
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.server_errors: list[str] = []
        self.endpoint: str | None = None
        self.cache_dir: Path | None = None  # set by the `fake_hub` fixture: the hub cache of the test
        self._repos: dict[str, _Repo] = {}
        self._lfs_objects: dict[str, bytes] = {}  # sha256 -> content, uploaded through the LFS "basic" transfer
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The full file map of `repo_id` at `revision` (branch, tag or commit sha)."""
        with self._lock:
            repo = self._repo_or_raise(repo_id)
            return {path: f.content for path, f in self._commit_at(repo, revision).files.items()}

    def commits(self, repo_id: str, branch: str = "main") -> list[str]:
        """Commit shas reachable from `branch` (or tag / sha), oldest first (the initial commit included)."""
        with self._lock:
            repo = self._repo_or_raise(repo_id)
            commit, history = self._commit_at(repo, branch), []
            while commit is not None:
                history.append(commit.oid)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return history[::-1]

    def is_private(self, repo_id: str) -> bool:
        with self._lock:
            return self._repo_or_raise(repo_id).private

    def create_repo(self, repo_id: str, *, private: bool = False, files: dict[str, bytes | str] | None = None) -> str:
        """Create `repo_id` directly (no HTTP, no auth check), optionally with a second commit adding `files`.
        Returns the head commit of `main`."""
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"{repo_id} already exists")
            self._new_repo(repo_id, private=private, author=repo_id.split("/")[0])
        return self.commit(repo_id, files) if files else self.commits(repo_id)[-1]

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes | str] | None = None,
        *,
        delete: tuple[str, ...] | list[str] = (),
        branch: str = "main",
        message: str = "Commit from test",
    ) -> str:
        """Commit directly to `branch` (no HTTP): add/replace `files`, remove `delete`. Returns the new sha."""
        with self._lock:
            repo = self._repo_or_raise(repo_id)
            new_files = dict(self._commit_at(repo, branch).files)
            for path in delete:
                new_files.pop(path)
            for path, content in (files or {}).items():
                content = content.encode() if isinstance(content, str) else content
                new_files[path] = _File(content, lfs=self._is_lfs_size(len(content)))
            return self._add_commit(repo, branch, new_files, message, "", repo.namespace).oid

    # ------------------------------------------------------------------ internals (call with the lock held)

    def _is_lfs_size(self, size: int) -> bool:
        return self.lfs_threshold is not None and size >= self.lfs_threshold and size > 0

    def _repo_or_raise(self, repo_id: str) -> _Repo:
        if repo_id not in self._repos:
            raise KeyError(f"no repo {repo_id!r} on the fake Hub")
        return self._repos[repo_id]

    def _new_oid(self, *parts: str) -> str:
        return hashlib.sha1("\0".join((*parts, str(next(self._counter)), _now())).encode()).hexdigest()

    def _new_repo(self, repo_id: str, *, private: bool, author: str) -> _Repo:
        repo = _Repo(repo_id=repo_id, private=private, created_at=_now())
        self._repos[repo_id] = repo
        self._add_commit(repo, "main", {".gitattributes": _File(GITATTRIBUTES)}, "initial commit", "", author)
        return repo

    def _add_commit(self, repo: _Repo, branch: str, files: dict, title: str, message: str, author: str) -> _Commit:
        parent = repo.branches.get(branch)
        commit = _Commit(
            oid=self._new_oid(repo.repo_id, parent or "", title),
            parent=parent,
            files=files,
            title=title,
            message=message,
            author=author,
            date=_now(),
        )
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def _resolve(self, repo: _Repo, revision: str) -> str:
        """Branch, tag, full sha or unique sha prefix (>= 7 hex) -> commit sha; else 404 RevisionNotFound."""
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.tags:
            return repo.tags[revision]
        if revision in repo.commits:
            return revision
        if len(revision) >= 7 and all(c in "0123456789abcdef" for c in revision):
            matches = [oid for oid in repo.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _commit_at(self, repo: _Repo, revision: str) -> _Commit:
        return repo.commits[self._resolve(repo, revision)]

    def _can_write_namespace(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or user in self.orgs.get(namespace, ()))

    def _can_read(self, user: str | None, repo: _Repo) -> bool:
        return not repo.private or self._can_write_namespace(user, repo.namespace)

    def _readable_repo(self, repo_id: str, user: str | None) -> _Repo:
        repo = self._repos.get(repo_id)
        if repo is None or not self._can_read(user, repo):
            # The real Hub does not tell "missing" from "private": 401 when anonymous, 404 when authenticated.
            raise HubError(
                401 if user is None else 404,
                "Repository not found" if user is not None else "Invalid username or password.",
                "RepoNotFound",
            )
        return repo

    def _writable_repo(self, repo_id: str, user: str | None) -> _Repo:
        repo = self._readable_repo(repo_id, user)
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repo.")
        if not self._can_write_namespace(user, repo.namespace):
            raise HubError(403, f"You don't have the rights to write to {repo_id}.")
        return repo


# --------------------------------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub  # set on the subclass made in FakeHub.start()
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()
    server_version = "FakeHub/1.0"

    def log_message(self, format, *args):  # noqa: A002 - keep stderr clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self, method: str) -> None:
        hub = self.fake_hub
        split = urlsplit(self.path)
        record = RecordedRequest(
            method, split.path, {k.lower(): v for k, v in self.headers.items()}, parse_qs(split.query)
        )
        with hub._lock:
            hub.requests.append(record)
        self.method, self.record, self.query = method, record, record.query
        self.segments = [unquote(s) for s in split.path.split("/")[1:]]
        try:
            self.user = self._authenticate()
            with hub._lock:
                status, body, headers = self._route()
        except HubError as e:
            status, body, headers = e.status, e.body, e.headers
            if e.code:
                headers["X-Error-Code"] = e.code
            headers.setdefault("X-Error-Message", e.message)
        except Exception:
            with hub._lock:
                hub.server_errors.append(traceback.format_exc())
            status, body, headers = 500, {"error": "FakeHub internal error (see FakeHub.server_errors)"}, {}
        record.status, record.error_code = status, headers.get("X-Error-Code")
        self._send(status, body, headers)

    def _send(self, status: int, body, headers: dict) -> None:
        if isinstance(body, (bytes, bytearray)):
            payload = bytes(body)
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            payload = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.method != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> dict:
        body = self._read_body()
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None

    def _authenticate(self) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else auth
        if token not in self.fake_hub.tokens:
            raise HubError(401, INVALID_CREDENTIALS)
        return self.fake_hub.tokens[token]

    def _flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")

    def _route(self):
        """-> (status, body (dict/list or bytes), headers). Called with the hub lock held."""
        m, s = self.method, self.segments
        if s[:1] == ["api"]:
            if m == "GET" and s[1:] == ["whoami-v2"]:
                return self._whoami()
            if m == "GET" and s[1:] == ["agent-harnesses"]:
                return 200, _EMPTY_AGENT_REGISTRY, {}
            if m == "POST" and s[1:] == ["repos", "create"]:
                return self._create_repo()
            if m == "DELETE" and s[1:] == ["repos", "delete"]:
                return self._delete_repo()
            if m == "POST" and s[1:] == ["validate-yaml"]:
                self._read_body()
                return 200, {"errors": [], "warnings": []}, {}
            if len(s) >= 4 and s[1] in ("datasets", "spaces", "kernels"):
                raise HubError(404, "This fake Hub only serves model repos", "RepoNotFound")
            if len(s) >= 4 and s[1] == "models":
                return self._route_model_api(f"{s[2]}/{s[3]}", s[4:])
        elif len(s) >= 5 and s[2] == "resolve" and m in ("GET", "HEAD"):
            # hf_hub_download / get_hf_file_metadata / transformers.cached_file: /{repo_id}/resolve/{rev}/{path}
            return self._resolve_file(f"{s[0]}/{s[1]}", s[3], "/".join(s[4:]))
        elif len(s) >= 4 and s[1] == "resolve" or s[:1] in (["datasets"], ["spaces"]):
            raise HubError(404, "Repository not found", "RepoNotFound")
        elif m == "POST" and len(s) == 6 and s[1].endswith(".git") and s[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(f"{s[0]}/{s[1][: -len('.git')]}")
        elif m == "PUT" and len(s) == 2 and s[0] == "__fake_lfs":
            return self._lfs_put(s[1])
        return self._unhandled()

    def _route_model_api(self, repo_id: str, rest: list[str]):
        m = self.method
        action, args = (rest[0], rest[1:]) if rest else (None, [])
        rev = "/".join(args)  # revisions are sent quoted (one segment) but accept them unquoted too
        if m == "GET" and action is None:
            return self._model_info(repo_id, None)  # model_info / repo_info / repo_exists
        if m == "GET" and action == "revision" and args:
            return self._model_info(repo_id, rev)  # model_info(revision=...) / resolve_revision / snapshot_download
        if m == "GET" and action == "tree" and args:
            return self._tree(repo_id, args[0], "/".join(args[1:]))  # list_repo_tree / list_repo_files
        if m == "POST" and action == "paths-info" and args:
            return self._paths_info(repo_id, rev)  # get_paths_info (CommitOperationCopy, HfFileSystem)
        if m == "GET" and action == "refs" and not args:
            return self._refs(repo_id)  # list_repo_refs
        if m == "GET" and action == "commits" and args:
            return self._list_commits(repo_id, rev)  # list_repo_commits
        if m == "POST" and action == "preupload" and args:
            return self._preupload(repo_id, rev)  # create_commit / upload_* -> _fetch_upload_modes
        if m == "POST" and action == "commit" and args:
            return self._commit(repo_id, rev)  # create_commit / upload_* -> _send_commit (NDJSON)
        if action == "branch" and args and m in ("POST", "DELETE"):
            return self._branch(repo_id, rev)  # create_branch / delete_branch
        if action == "tag" and args and m in ("POST", "DELETE"):
            return self._tag(repo_id, rev)  # create_tag / delete_tag
        if m == "PUT" and action == "settings" and not args:
            return self._settings(repo_id)  # update_repo_settings(private=...)
        return self._unhandled()

    def _unhandled(self):
        with self.fake_hub._lock:
            self.fake_hub.unhandled.append(self.record)
        if self.method in ("POST", "PUT"):
            self._read_body()
        return 404, {"error": f"FakeHub: no endpoint for {self.method} {self.record.path}"}, {}

    # ------------------------------------------------------------------ endpoints

    def _whoami(self):  # HfApi.whoami
        if self.user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        hub, user = self.fake_hub, self.user
        orgs = [
            {"type": "org", "name": org, "fullname": org, "roleInOrg": "write"}
            for org, members in hub.orgs.items()
            if user in members
        ]
        return 200, {
            "type": "user",
            "id": hashlib.sha1(user.encode()).hexdigest()[:24],
            "name": user,
            "fullname": user,
            "email": f"{user}@example.com",
            "emailVerified": True,
            "isPro": False,
            "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
        }, {}

    def _create_repo(self):  # HfApi.create_repo: {"name", "organization", "visibility"?, "type"?}
        payload, hub = self._json_body(), self.fake_hub
        if self.user is None:
            raise HubError(401, "You must be authenticated to create a repo.")
        if payload.get("type", "model") != "model":
            raise HubError(400, f"This fake Hub only supports model repos, not {payload['type']!r}.")
        namespace = payload.get("organization") or self.user
        repo_id = f"{namespace}/{payload['name']}"
        if not hub._can_write_namespace(self.user, namespace):
            # Also for namespaces that do not exist (the real Hub does not tell them apart either).
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        if repo_id in hub._repos:
            # create_repo(exist_ok=True) reads the url from this 409 answer, as from a 200 one.
            raise HubError(409, "You already created this model repo", url=f"{hub.endpoint}/{repo_id}")
        private = payload.get("visibility") == "private" or payload.get("private") is True
        hub._new_repo(repo_id, private=private, author=self.user)
        return 200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": hub._new_oid(repo_id)[:24]}, {}

    def _delete_repo(self):  # HfApi.delete_repo
        payload, hub = self._json_body(), self.fake_hub
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        hub._writable_repo(repo_id, self.user)
        del hub._repos[repo_id]
        return 200, {}, {}

    def _settings(self, repo_id: str):  # HfApi.update_repo_settings (visibility only)
        payload = self._json_body()
        repo = self.fake_hub._writable_repo(repo_id, self.user)
        if payload.get("gated") not in (None, False):
            raise HubError(400, "This fake Hub does not support gated repos.")
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        if "private" in payload:
            repo.private = bool(payload["private"])
        return 200, {}, {}

    def _resolve_file(self, repo_id: str, revision: str, path: str):
        hub = self.fake_hub
        repo = hub._readable_repo(repo_id, self.user)
        commit = hub._commit_at(repo, revision)
        headers = {"X-Repo-Commit": commit.oid}
        file = commit.files.get(path)
        if file is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers=headers)
        headers.update({"ETag": f'"{file.etag}"', "Accept-Ranges": "bytes", "Content-Disposition": "attachment"})
        if file.lfs:  # what the real Hub sends on the (redirecting) HEAD of an LFS file
            headers.update({"X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(len(file.content))})
        content = file.content
        byte_range = self.headers.get("Range")
        if byte_range and self.method == "GET" and byte_range.startswith("bytes=") and "," not in byte_range:
            start, _, end = byte_range[len("bytes=") :].partition("-")
            size = len(content)
            first, last = (size - int(end), size - 1) if not start else (int(start), int(end) if end else size - 1)
            first, last = max(first, 0), min(last, size - 1)
            if first > last:
                headers["Content-Range"] = f"bytes */{size}"
                raise HubError(416, "Range not satisfiable", headers=headers)
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            return 206, content[first : last + 1], headers
        return 200, content, headers

    def _model_info(self, repo_id: str, revision: str | None):
        hub = self.fake_hub
        repo = hub._readable_repo(repo_id, self.user)
        commit = hub._commit_at(repo, revision or "main")
        blobs = self._flag("blobs")
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=len(f.content), blobId=f.blob_id)
                if f.lfs:
                    sibling["lfs"] = {"size": len(f.content), "sha256": f.sha256, "pointerSize": len(f.pointer)}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": None,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(len(f.content) for f in commit.files.values()),
        }
        config = commit.files.get("config.json")
        if config is not None:
            try:
                parsed = json.loads(config.content)
                info["config"] = {k: parsed[k] for k in ("architectures", "model_type") if k in parsed}
            except (ValueError, TypeError):
                pass
        expand = self.query.get("expand", []) + self.query.get("expand[]", [])
        if expand:  # like the Hub: only the requested properties (plus the ids)
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return 200, info, {}

    def _tree_entries(self, repo: _Repo, commit: _Commit, folder: str, recursive: bool, expand: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        folders: dict[str, list[str]] = {}
        files = []
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.setdefault(prefix + "/".join(parts[:depth]), []).append(path)
            if recursive or len(parts) == 1:
                files.append(path)
        entries = [self._folder_entry(repo, commit, p, content) for p, content in folders.items()]
        entries += [self._file_entry(repo, commit, p, expand) for p in files]
        return entries

    def _file_entry(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict:
        f = commit.files[path]
        entry = {"type": "file", "oid": f.blob_id, "size": len(f.content), "path": path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": len(f.content), "pointerSize": len(f.pointer)}
        if expand:
            last = commit  # the oldest ancestor from which this file is unchanged
            while last.parent and repo.commits[last.parent].files.get(path) is f:
                last = repo.commits[last.parent]
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return entry

    @staticmethod
    def _folder_entry(repo: _Repo, commit: _Commit, path: str, content: list[str]) -> dict:
        oid = hashlib.sha1("\0".join(f"{p}\0{commit.files[p].blob_id}" for p in content).encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def _tree(self, repo_id: str, revision: str, folder: str):  # list_repo_tree, list_repo_files, snapshot_download
        hub = self.fake_hub
        repo = hub._readable_repo(repo_id, self.user)
        commit = hub._commit_at(repo, revision)
        folder = folder.strip("/")
        if folder and not any(p.startswith(folder + "/") for p in commit.files):
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        return 200, self._tree_entries(repo, commit, folder, self._flag("recursive"), self._flag("expand")), {}

    def _paths_info(self, repo_id: str, revision: str):  # get_paths_info: form data paths=...&expand=...
        hub = self.fake_hub
        form = parse_qs(self._read_body().decode())
        repo = hub._readable_repo(repo_id, self.user)
        commit = hub._commit_at(repo, revision)
        expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                out.append(self._file_entry(repo, commit, path, expand))
            else:
                content = [p for p in sorted(commit.files) if p.startswith(path + "/")]
                if content:
                    out.append(self._folder_entry(repo, commit, path, content))
        return 200, out, {}

    def _refs(self, repo_id: str):  # list_repo_refs
        repo = self.fake_hub._readable_repo(repo_id, self.user)

        def refs(kind: str, items: dict) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in items.items()]

        body = {"branches": refs("heads", repo.branches), "converts": [], "tags": refs("tags", repo.tags)}
        if self._flag("include_prs"):
            body["pullRequests"] = []
        return 200, body, {}

    def _list_commits(self, repo_id: str, revision: str):  # list_repo_commits (newest first)
        hub = self.fake_hub
        repo = hub._readable_repo(repo_id, self.user)
        out, commit = [], hub._commit_at(repo, revision)
        while commit is not None:
            out.append(
                {
                    "id": commit.oid,
                    "authors": [{"user": commit.author}],
                    "date": commit.date,
                    "title": commit.title,
                    "message": commit.message,
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return 200, out, {}

    def _preupload(self, repo_id: str, revision: str):
        hub = self.fake_hub
        payload = self._json_body()
        repo = hub._writable_repo(repo_id, self.user)
        commit = hub._commit_at(repo, revision)
        files = []
        for item in payload.get("files", []):
            existing = commit.files.get(item["path"])
            lfs = hub._is_lfs_size(int(item.get("size", 0)))
            # "oid" of the file already there lets the client skip unchanged files (sha256 for LFS, git oid else).
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.blob_id)
            mode = "lfs" if lfs else "regular"
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return 200, {"files": files, "commitOid": commit.oid}, {}

    def _commit(self, repo_id: str, revision: str):
        hub = self.fake_hub
        body = self._read_body()
        repo = hub._writable_repo(repo_id, self.user)
        if self._flag("create_pr"):
            raise HubError(400, "This fake Hub does not support pull requests (create_pr=True).")
        branch = unquote(revision)
        if branch not in repo.branches:
            hub._resolve(repo, branch)  # 404 RevisionNotFound for unknown revisions
            raise HubError(400, f"Can only commit to a branch, not to {branch!r}.")
        # NDJSON: one {"key": "header" | "file" | "lfsFile" | "deletedFile" | "deletedFolder", "value": {...}} per line
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        head = repo.commits[repo.branches[branch]]
        files = dict(head.files)
        header = {}
        for line in lines:
            key, value = line.get("key"), line.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                files[value["path"]] = _File(data)
            elif key == "lfsFile":
                data = hub._lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(400, f"LFS object {value['oid']} for {value['path']} was not uploaded.")
                files[value["path"]] = _File(data, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and parent != head.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        commit = hub._add_commit(
            repo, branch, files, header.get("summary") or "Commit", header.get("description") or "", self.user
        )
        return 200, {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit.oid}",
            "commitMessage": commit.title,
            "hookOutput": "",
            "pullRequestUrl": None,
        }, {}

    def _branch(self, repo_id: str, branch: str):  # create_branch(revision=...) / delete_branch
        hub = self.fake_hub
        payload = self._json_body() if self.method == "POST" else {}
        repo = hub._writable_repo(repo_id, self.user)
        if self.method == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch.")
            del repo.branches[branch]
            return 200, {}, {}
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = hub._resolve(repo, payload.get("startingPoint") or "main")
        return 200, {}, {}

    def _tag(self, repo_id: str, revision: str):  # create_tag: POST .../tag/{revision} {"tag"}; delete_tag
        hub = self.fake_hub
        payload = self._json_body() if self.method == "POST" else {}
        repo = hub._writable_repo(repo_id, self.user)
        if self.method == "DELETE":
            if repo.tags.pop(revision, None) is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return 200, {}, {}
        oid = hub._resolve(repo, revision)
        if payload.get("tag") in repo.tags:
            raise HubError(409, f"Tag already exists: {payload['tag']}")
        repo.tags[payload["tag"]] = oid
        return 200, {}, {}

    def _lfs_batch(self, repo_id: str):  # lfs.post_lfs_batch_info (only when preupload said "lfs", xet disabled)
        hub = self.fake_hub
        payload = self._json_body()
        hub._writable_repo(repo_id, self.user)
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in hub._lfs_objects:
                entry["actions"] = {"upload": {"href": f"{hub.endpoint}/__fake_lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_put(self, oid: str):  # lfs._upload_single_part: PUT of the content to the href given by the batch
        data = self._read_body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "LFS upload: content does not match its sha256")
        self.fake_hub._lfs_objects[oid] = data
        return 200, {}, {}


# --------------------------------------------------------------------------------------------------- client side


def use_endpoint(monkeypatch, endpoint: str, home: str | os.PathLike, *, isolate_modules: bool = True) -> Path:
    """Point huggingface_hub (and transformers, if imported) at `endpoint` for one test, with a fresh cache.

    Everything is undone by `monkeypatch` at the end of the test. `home` becomes HF_HOME (created if needed);
    returns the hub cache dir (`<home>/hub`), which is also the default `cache_dir` of downloads.

    huggingface_hub reads its environment once, at import, into `huggingface_hub.constants`; those constants (and
    the objects built from them at import) are what must be patched in-process. The environment variables are set
    too, for subprocesses.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _auth, _detect_agent, _http

    try:  # imported now (once per session, ~1 s) so that its import-time copies are patched whatever the test order
        import transformers.dynamic_module_utils as tf_dmu
        import transformers.utils.hub as tf_hub
    except ImportError:
        tf_hub = tf_dmu = None

    endpoint = endpoint.rstrip("/")
    home = Path(home)
    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    host = urlsplit(endpoint).hostname

    # --- environment, for subprocesses (and for anything that reads os.environ lazily)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN", "HUGGINGFACE_CO_STAGING",
                "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_HUB_OFFLINE": "0",  # tests/conftest.py defaults it to 1
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",  # no Xet storage on the fake Hub: plain HTTP downloads, inline/LFS uploads
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)

    # --- huggingface_hub.constants, read at import from the environment
    patches = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {host},
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(home / ".check_for_skill_update_done"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)

    # --- objects built at import time from those constants
    # `huggingface_hub.create_repo`, `upload_folder`, ... are bound methods of this module-level `HfApi()`,
    # whose `endpoint` was fixed at import.
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)
    # Origins to which redirects are followed with the auth header (the fake Hub never redirects, but be exact).
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})
    # Token caches (a stored/OAuth/OIDC token must not leak into the tests).
    for name in ("_OAUTH_REFRESH_CACHE", "_OIDC_TOKEN_CACHE"):
        if hasattr(_auth, name):
            monkeypatch.setattr(_auth, name, None)
    # The AI-agent registry is fetched once per process from `{ENDPOINT}/api/agent-harnesses` to build the
    # user-agent: pin it to an empty one (telemetry is off anyway, which skips it).
    monkeypatch.setattr(_detect_agent, "_registry", dict(_EMPTY_AGENT_REGISTRY))
    assets = sys.modules.get("huggingface_hub.utils._cache_assets")
    if assets is not None:
        monkeypatch.setattr(assets, "HF_ASSETS_CACHE", str(home / "assets"))

    # --- transformers, if installed
    if tf_hub is not None:
        # Lazily-built shared `HfApi` (resolve_revision, list_repo_templates, push_to_hub's create_repo/commit):
        # reset it so that it is rebuilt with the patched endpoint, and restored afterwards.
        monkeypatch.setattr(tf_hub, "_hf_api", None)
    if tf_hub is not None and isolate_modules:
        isolate_modules_cache(monkeypatch, home / "modules")
    return cache


def isolate_modules_cache(monkeypatch, modules: str | os.PathLike) -> None:
    """trust_remote_code copies the model's *.py files to transformers' HF_MODULES_CACHE (computed at import from
    HF_HOME) and puts it on sys.path: use `modules` for one test instead, and restore sys.path afterwards."""
    import transformers.dynamic_module_utils as tf_dmu
    import transformers.utils.hub as tf_hub

    modules = Path(modules)
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "__init__.py").touch()
    monkeypatch.setattr(tf_hub, "HF_MODULES_CACHE", str(modules))
    monkeypatch.setattr(tf_dmu, "HF_MODULES_CACHE", str(modules))
    monkeypatch.syspath_prepend(str(modules))  # saves sys.path, restored at teardown


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A running `FakeHub` with users `alice` (`WRITE_TOKEN`, member of org `acme`) and `bob` (`OTHER_TOKEN`);
    huggingface_hub/transformers point at it and use a fresh cache (`fake_hub.cache_dir`) for the test.

    Re-export from conftest.py with `from hub_server import fake_hub  # noqa: F401`.
    """
    with FakeHub(tokens={WRITE_TOKEN: USER, OTHER_TOKEN: OTHER_USER}, orgs={ORG: [USER]}) as hub:
        hub.cache_dir = use_endpoint(monkeypatch, hub.endpoint, tmp_path / "hf_home")
        yield hub
