"""Pull FaceScope checkpoints from a Hugging Face Hub repo, and publish them to one.

A hub repo holds exactly a checkpoint folder (model.safetensors, config.json, README.md),
so everything goes through huggingface_hub: downloads land in the hub cache (shared with
every other Hugging Face library, reusable offline with HF_HUB_OFFLINE=1), a revision pins
a branch, tag or commit, and only those three files are ever fetched - never a pickle.

The endpoint is HF_ENDPOINT read at call time (huggingface_hub itself reads it once at
import), so a process can point at a mirror or a local stand-in after importing.

    path = hub.pull("facescope/ir18-arcface", revision="v1")     # cached snapshot folder
    model = hub.load("facescope/ir18-arcface")                    # what zoo.load does for repo ids
    info = hub.publish("zoo/checkpoints/ir18-arcface", "me/ir18-arcface")
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import httpx2
from huggingface_hub import CommitInfo, HfApi, constants, get_cached_repo_tree, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .checkpoint import (CARD_FILE, CONFIG_FILE, PAIR_RESULTS_FILE, WEIGHTS_FILE, CheckpointError,
                         load as load_checkpoint)
from .model import FaceModel

REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)
HUB_FILES = (*REQUIRED_FILES, PAIR_RESULTS_FILE)  # what a checkpoint publishes and pulls
LIBRARY_NAME = "facescope"
ZOO_ORG = "facescope"  # the Hub organisation the embedded zoo is published under

PathLike = Union[str, os.PathLike]


class HubError(CheckpointError):
    """A hub repo that cannot be pulled or published to; the message says what to do."""


def endpoint_url(endpoint: Optional[str] = None) -> str:
    """The Hub to talk to: `endpoint`, else HF_ENDPOINT now, else huggingface_hub's default."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_repo_id(text: str) -> bool:
    """Whether `text` is shaped like a hub model repo id, ORG/NAME (the Hub's own rules)."""
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def architecture(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """What must match for one checkpoint to replace another: model name, width and head.

    Options are left out on purpose: a retrained folded SCAN carries new learnt t values
    in its options yet is the same architecture. None for a non-FaceScope config.
    """
    arch = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(arch, dict) or "name" not in arch:
        return None
    return {"name": arch["name"], "width": arch.get("width", 1.0), "head": arch.get("head")}


def describe(arch: Optional[Dict[str, Any]]) -> str:
    """`architecture(...)` in words, for refusal messages."""
    if arch is None:
        return "something that is not a FaceScope checkpoint"
    head = arch["head"] or "default head"
    return f"{arch['name']} (width {arch['width']}, {head})"


def pull(repo_id: str, revision: Optional[str] = None, cache_dir: Optional[PathLike] = None,
         endpoint: Optional[str] = None, token: Union[str, bool, None] = None) -> Path:
    """Download (or find in the hub cache) the checkpoint files of `repo_id` at `revision`.

    Returns the cached snapshot folder, named by its commit hash. Raises HubError for a
    missing repo, revision or weights file, and for an unreachable Hub with nothing cached.
    """
    endpoint = endpoint_url(endpoint)
    where = f"{repo_id}@{revision or constants.DEFAULT_REVISION}"
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                                        token=token, allow_patterns=list(HUB_FILES), library_name=LIBRARY_NAME))
    except (RepositoryNotFoundError, GatedRepoError):
        raise HubError(f"no model repository {repo_id} on {endpoint} (or it is private or gated and no token "
                       f"with access was given: set HF_TOKEN); {_local_zoo_hint()}") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} on {endpoint} has no revision {revision!r}: give an existing branch, tag or "
                       "commit hash") from None
    except RemoteEntryNotFoundError as err:
        raise HubError(f"{where} on {endpoint} lists a file it cannot serve ({_first_line(err)})") from None
    except LocalEntryNotFoundError as err:
        raise HubError(_unreachable(where, endpoint, cache, err)) from None
    except HfHubHTTPError as err:
        raise HubError(f"the Hub at {endpoint} refused {where}: {_http_reason(err)}") from None
    if not (folder / WEIGHTS_FILE).is_file():
        raise HubError(f"{where} on {endpoint} has no {WEIGHTS_FILE}{_repo_listing(repo_id, folder.name, cache)}: "
                       "FaceScope loads safetensors weights only, never pickled *.bin / *.pt / *.pkl files")
    return folder


def load(repo_id: str, revision: Optional[str] = None, cache_dir: Optional[PathLike] = None,
         endpoint: Optional[str] = None, token: Union[str, bool, None] = None) -> FaceModel:
    """Pull `repo_id` and load it, naming the repo and commit when the checkpoint is unusable."""
    folder = pull(repo_id, revision, cache_dir, endpoint, token)
    try:
        return load_checkpoint(folder)
    except CheckpointError as err:
        raise HubError(f"{repo_id}@{revision or constants.DEFAULT_REVISION} (commit {folder.name}): {err}") from None


def publish(folder: PathLike, repo_id: str, revision: Optional[str] = None, force: bool = False,
            private: bool = False, token: Union[str, bool, None] = None, commit_message: Optional[str] = None,
            endpoint: Optional[str] = None) -> CommitInfo:
    """Upload the checkpoint `folder` to `repo_id` (branch `revision`, default main) as one commit.

    The folder is loaded first, so a checkpoint that would not load is never published. The
    repo and branch are created if needed; a repo whose config.json names another
    architecture is refused unless `force`.
    """
    folder = Path(folder)
    model = load_checkpoint(folder)
    endpoint = endpoint_url(endpoint)
    branch = revision or constants.DEFAULT_REVISION
    where = f"{repo_id}@{branch}"
    api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        remote = _remote_architecture(repo_id, branch, endpoint, token)
        local = architecture({"architecture": model.config.to_dict()})
        if remote is not False and remote != local and not force:
            raise HubError(f"{where} on {endpoint} holds {describe(remote)}, this checkpoint is {describe(local)}: "
                           "refusing to overwrite a different architecture; publish to another repo or branch, "
                           "or force it (--force / force=True)")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=branch,
                                 allow_patterns=list(HUB_FILES),
                                 commit_message=commit_message or f"Publish {model.name} with FaceScope")
    except OfflineModeIsEnabled:
        raise HubError(f"HF_HUB_OFFLINE is set: publishing to {where} needs the Hub; unset it") from None
    except (httpx2.ConnectError, httpx2.TimeoutException) as err:
        raise HubError(f"cannot reach the Hugging Face Hub at {endpoint} to publish {where} "
                       f"({_first_line(err)}): check the network or HF_ENDPOINT") from None
    except HfHubHTTPError as err:
        raise HubError(f"the Hub at {endpoint} refused to publish {where}: {_http_reason(err)}; "
                       "a write token is needed (hf auth login, or HF_TOKEN)") from None


def _remote_architecture(repo_id: str, branch: str, endpoint: str, token):
    """The architecture of the repo's current config.json, or False when it has none.

    Read through a throwaway cache so publishing never leaves files in the user's hub cache.
    """
    with tempfile.TemporaryDirectory(prefix="facescope-publish-") as scratch:
        try:
            path = hf_hub_download(repo_id, CONFIG_FILE, revision=branch, cache_dir=scratch, endpoint=endpoint,
                                   token=token, library_name=LIBRARY_NAME)
        except RemoteEntryNotFoundError:
            return False
        try:
            return architecture(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


def _unreachable(where: str, endpoint: str, cache: Path, err: Exception) -> str:
    """Why nothing could be fetched (offline mode, no connection, a failing Hub) and what to do."""
    if constants.is_offline_mode():
        return (f"HF_HUB_OFFLINE is set and {where} is not in the hub cache {cache}: unset HF_HUB_OFFLINE to "
                f"download it; {_local_zoo_hint()}")
    cause = err.__cause__ or err
    if isinstance(cause, HfHubHTTPError):
        return (f"the Hugging Face Hub at {endpoint} failed ({_http_reason(cause)}) and {where} is not in the hub "
                f"cache {cache}: try again later; {_local_zoo_hint()}")
    return (f"cannot reach the Hugging Face Hub at {endpoint} ({type(cause).__name__}: {_first_line(cause)}) and "
            f"{where} is not in the hub cache {cache}: check the network or HF_ENDPOINT; {_local_zoo_hint()}")


def _repo_listing(repo_id: str, commit: str, cache: Path) -> str:
    """' (the repo holds: ...)' from the tree listing snapshot_download cached, so a repo of
    pickled weights says so; empty when no listing is cached."""
    try:
        files = sorted(f.path for f in get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache))
    except CachedRepoTreeNotFoundError:
        return ""
    return f" (the repo holds: {', '.join(files) or 'no files'})"


def _local_zoo_hint() -> str:
    from . import LOCAL_ZOO, local_models  # at call time: zoo imports this module, and LOCAL_ZOO may be moved

    return f"the local zoo ({LOCAL_ZOO}) has: {', '.join(local_models()) or 'no models'}"


def _http_reason(err: HfHubHTTPError) -> str:
    """Status line plus what the server said, without huggingface_hub's generic advice."""
    line = _first_line(err)
    return line if not err.server_message or err.server_message in line else f"{line} ({err.server_message})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
