"""Hugging Face Hub model ids: from `org/name` (and a revision) to a local snapshot folder.

The snapshot lives in huggingface_hub's own cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
~/.cache/huggingface/hub), so a model fetched by transformers or `hf download` is reused, and one
fetched here is reused by them. Only the files prunenet reads are fetched: the config, the safetensors
weights and the tokenizer; never other weight formats (.bin, .pt, .gguf, ...) or training states.
The result names the snapshot's commit, so a caller can key its outputs by it.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# The HTTP client's base error (requests, httpx or httpx2, by huggingface_hub version): some of its
# transport errors, a refusing proxy or a connection dropped mid-file, are not OSErrors.
from huggingface_hub.errors import HTTPError as ClientHTTPError
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, validate_repo_id

CONFIG_FILE = "config.json"
SHARD_INDEX_FILE = "model.safetensors.index.json"
WANTED_FILES = [
    CONFIG_FILE,
    "generation_config.json",
    "*.safetensors",
    SHARD_INDEX_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
]
UNWANTED_FILES = [
    # prunenet reads a model folder's top level only; subfolders hold other exports (onnx/, original/, ...).
    # The patterns match across "/", so "*.safetensors" alone would take them in.
    "*/*",
    # Mistral repos carry their weights twice: HF shards plus `consolidated.safetensors` in Mistral's own layout.
    "consolidated*.safetensors",
]
# Weights prunenet cannot read; only used to say so when a cached snapshot holds nothing else.
OTHER_WEIGHT_FORMATS = ["*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.gguf", "*.onnx"]


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    revision: str | None  # as asked for; None means the default branch
    commit: str  # the snapshot's commit hash, the folder name under snapshots/
    path: Path


def looks_like_repo_id(name: str) -> bool:
    """Whether `name` has the form of a Hub repo id, "org/name" or "name" (not "./x", "/x" or "a/b/c").

    A bare "x" is also a valid folder name: a caller that accepts both should try the folder first.
    """
    if not isinstance(name, str):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_hub_model(repo_id: str, revision: str | None = None, progress: bool = True) -> HubModel:
    """The local snapshot of `repo_id` at `revision`: from the Hub cache, else downloaded into it.

    Raises ValueError, one line naming the id, when the model cannot be had or read.
    """
    _check_arguments(repo_id, revision)
    label = _label(repo_id, revision)
    cached = _cached_snapshot(repo_id, revision)
    if cached is not None and _unreadable_reason(cached) is None:
        return _hub_model(repo_id, revision, cached)
    if constants.is_offline_mode():
        if cached is not None and _holds_only_other_weights(cached):
            raise ValueError(f"model {label} cannot be read by prunenet: {_unreadable_reason(cached)}")
        raise ValueError(_not_cached_message(repo_id, label, cached is not None, "offline"))
    snapshot = _download(repo_id, revision, label, progress, cached is not None)
    reason = _unreadable_reason(snapshot)
    if reason is not None and snapshot == cached:
        # When the Hub cannot be reached, snapshot_download answers with the cached snapshot, without saying so.
        reason += ", or the Hub could not be reached to complete the cached snapshot"
    if reason is not None:
        raise ValueError(f"model {label} cannot be read by prunenet: {reason}")
    return _hub_model(repo_id, revision, snapshot)


def _check_arguments(repo_id: object, revision: object) -> None:
    if not isinstance(repo_id, str):
        raise TypeError(f"repo_id must be a string like 'org/name', not {type(repo_id).__name__}: {repo_id!r}")
    if not looks_like_repo_id(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hugging Face Hub model id ('org/name' or 'name')")
    if revision is None:
        return
    if not isinstance(revision, str):
        raise TypeError(f"revision must be a string (branch, tag or commit) or None, not "
                        f"{type(revision).__name__}: {revision!r}")
    # A branch or tag is read from the cache as the file refs/<revision>; ".." would leave that folder.
    if not revision.strip() or ".." in revision or revision.startswith("/"):
        raise ValueError(f"revision {revision!r} of model {repo_id!r} is not a branch, tag or commit name")


def _label(repo_id: str, revision: str | None) -> str:
    return repr(repo_id) if revision is None else f"{repo_id!r} at revision {revision!r}"


def _hub_model(repo_id: str, revision: str | None, snapshot: Path) -> HubModel:
    return HubModel(repo_id=repo_id, revision=revision, commit=snapshot.name, path=snapshot)


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot folder for `revision`, or None; never touches the network.

    snapshot_download(local_files_only=True) rather than scan_cache_dir or try_to_load_from_cache:
    it resolves a branch or tag through refs/ exactly as a download would, takes a commit hash
    directly, reads the cache folder huggingface_hub is configured with, and refuses a snapshot its
    cached file listing knows to be incomplete. It does not check that the files are there when no
    listing is cached (a snapshot written by another tool), hence `_unreadable_reason` afterwards.
    """
    try:
        folder = snapshot_download(repo_id, revision=revision, local_files_only=True,
                                   allow_patterns=WANTED_FILES, ignore_patterns=UNWANTED_FILES)
    except LocalEntryNotFoundError:  # absent, or known to be incomplete
        return None
    return Path(folder)


def _download(repo_id: str, revision: str | None, label: str, progress: bool, partly_cached: bool) -> Path:
    """Fetch the wanted files of `repo_id` into the Hub cache (what is already there is kept)."""
    # The per-file bars do not take snapshot_download's tqdm_class; this switch reaches them all. It is
    # left alone when the bars are off already: under HF_HUB_DISABLE_PROGRESS_BARS=1 it would not switch back.
    quiet = contextlib.nullcontext() if progress or are_progress_bars_disabled() else disable_progress_bars()
    try:
        with quiet:
            folder = snapshot_download(repo_id, revision=revision,
                                       allow_patterns=WANTED_FILES, ignore_patterns=UNWANTED_FILES)
    except GatedRepoError:  # before RepositoryNotFoundError, which it derives from
        raise ValueError(f"model {label} is gated on the Hugging Face Hub: accept its terms on "
                         f"https://huggingface.co/{repo_id} and log in (`hf auth login`) or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ValueError(f"model {label} does not exist on the Hugging Face Hub, or it is private and no "
                         "valid token was sent (`hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ValueError(f"model {repo_id!r} has no revision {revision!r} (branch, tag or commit) "
                         "on the Hugging Face Hub") from None
    except DisabledRepoError:
        raise ValueError(f"model {label} is disabled on the Hugging Face Hub") from None
    except LocalEntryNotFoundError:  # the Hub could not be reached and the cache has no such snapshot
        raise ValueError(_not_cached_message(repo_id, label, partly_cached, "no connection")) from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", "?")
        raise ValueError(f"the Hugging Face Hub refused model {label} (HTTP {status}): "
                         f"{_first_line(error)}") from None
    except (OSError, ClientHTTPError) as error:  # disk full, permissions, proxy, a dropped connection
        raise ValueError(f"model {label} could not be downloaded: {type(error).__name__}: "
                         f"{_first_line(error)}") from None
    return Path(folder)


def _not_cached_message(repo_id: str, label: str, partly: bool, why: str) -> str:
    where = "is only partly" if partly else "is not"
    return (f"model {label} {where} in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub "
            f"cannot be reached ({why}); fetch it on a connected machine with "
            f"`huggingface-cli download {repo_id}` (or `hf download {repo_id}`), or pass a local folder")


def _unreadable_reason(folder: Path) -> str | None:
    """Why prunenet cannot read the model in `folder`, or None when it can."""
    index_file = folder / SHARD_INDEX_FILE
    if index_file.is_file():
        try:
            shards = sorted(set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            return f"its {SHARD_INDEX_FILE} cannot be read ({type(error).__name__}: {_first_line(error)})"
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            return f"{len(missing)} of its {len(shards)} weight shards are missing ({', '.join(missing[:3])})"
    # is_file() follows the cache's symlinks into blobs/, so a dangling link counts as missing.
    elif not any(path.is_file() for path in folder.glob("*.safetensors")):
        return "it holds no safetensors weights (prunenet reads safetensors only)"
    if not (folder / CONFIG_FILE).is_file():
        return f"it holds no {CONFIG_FILE}"
    return None


def _holds_only_other_weights(folder: Path) -> bool:
    has_safetensors = any(folder.glob("*.safetensors"))
    return not has_safetensors and any(any(folder.glob(pattern)) for pattern in OTHER_WEIGHT_FORMATS)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
