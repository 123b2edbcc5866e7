"""Uploading a saved checkpoint folder to the Hugging Face Hub (what `push_to_hub` and `hf-binary-bert push` call).

Every Hub call goes through `huggingface_hub.HfApi` (endpoint: `HF_ENDPOINT`, token: `token=` or the stored login);
the HTTP errors it raises become one `PushToHubError` that says what went wrong and what to do.
"""

from __future__ import annotations

import os

from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

_ADVICE = {
    401: "authentication failed: pass a valid write token (token=... / --token, the HF_TOKEN variable or `hf auth "
         "login`)",
    403: "the token may not write to this repository, or may not create it (a missing repository, or a namespace "
         "that does not exist or is not yours): check the name, or use a token with write access",
    404: "the repository (or its namespace) does not exist and could not be created",
}


class PushToHubError(OSError):
    """A push to the Hub failed (authentication, permissions, a missing repository or revision). Nothing was left
    behind locally: `push_to_hub` writes into a temporary folder that is removed either way."""


def upload_checkpoint(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: bool | str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Create `repo_id` if needed (`private` applies then) and upload every file of `folder` in one commit.

    Args:
        folder: a saved checkpoint folder (config, weights, code, tokenizer, README.md model card).
        repo_id: `"user/name"` or `"name"` (in the token owner's namespace).
        token: a Hub token, True / None for the stored login.
        private: make a new repository private (None: the Hub's default); an existing repository keeps its setting.
        revision: branch to commit to; created from the default branch when it does not exist.
        commit_message / commit_description / create_pr: as `HfApi.create_commit`.

    Returns:
        The `huggingface_hub.CommitInfo` of the commit (`.oid` is the revision to pin).

    Raises:
        PushToHubError: naming the repository and the HTTP status, for an authentication failure (401), a
            forbidden namespace (403), a missing repository / namespace or revision (404), or any other HTTP error.
    """
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and not revision.startswith("refs/pr"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or "Upload binarized BERT (hf_binary_bert)",
            commit_description=commit_description,
            create_pr=create_pr,
        )
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if isinstance(err, RevisionNotFoundError):
            reason = f"revision {revision!r} not found"
        else:
            reason = _ADVICE.get(status, "the Hub refused the upload")
            if isinstance(err, RepositoryNotFoundError) and status != 401:
                reason = _ADVICE[404]
        server = getattr(err, "server_message", None) or str(err).splitlines()[0]
        raise PushToHubError(
            f"Could not push to {repo_id!r} on {api.endpoint} (HTTP {status}): {reason}. Hub message: {server}"
        ) from None


__all__ = ["PushToHubError", "upload_checkpoint"]
