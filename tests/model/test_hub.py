"""Hub model ids resolved offline: a Hub-cache layout built in a temporary folder, and a fake Hub on localhost."""
from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import transformers as T
from helpers import add_snapshot
from huggingface_hub import constants, snapshot_download
from huggingface_hub.utils import are_progress_bars_disabled, filter_repo_objects

import prunenet.model.hub as hub_module
from prunenet.model.hub import UNWANTED_FILES, WANTED_FILES, HubModel, looks_like_repo_id, resolve_hub_model

REPO_ID = "org/name"
MAIN_COMMIT = "a" * 40
DEV_COMMIT = "b" * 40


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    config = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=2, vocab_size=128)
    T.LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.parametrize("name", ["org/name", "name", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2",
                                  "Qwen/Qwen2.5-0.5B", "a.b_c-d/e.f"])
def test_repo_ids(name):
    assert looks_like_repo_id(name)


@pytest.mark.parametrize("name", ["./x", "/abs/x", "a/b/c", "../x", "~/x", "x/", "", "a--b", "a..b", "x.git",
                                  "-x", "C:\\models\\x", "org/" + "n" * 97, None, 3])
def test_not_repo_ids(name):
    assert not looks_like_repo_id(name)


@pytest.mark.parametrize("revision", [None, "main", MAIN_COMMIT])
def test_cached_snapshot(hub_cache, tiny_model, revision):
    snapshot = add_snapshot(hub_cache, files_of(tiny_model), MAIN_COMMIT)
    model = resolve_hub_model(REPO_ID, revision=revision)
    assert model == HubModel(repo_id=REPO_ID, revision=revision, commit=MAIN_COMMIT, path=snapshot)
    assert (model.path / "model.safetensors").is_file()


def test_each_branch_its_own_commit(hub_cache, tiny_model):
    add_snapshot(hub_cache, files_of(tiny_model), MAIN_COMMIT)
    dev = add_snapshot(hub_cache, files_of(tiny_model), DEV_COMMIT, refs=("dev", "refs/pr/1"))
    assert resolve_hub_model(REPO_ID).commit == MAIN_COMMIT
    for revision in ("dev", "refs/pr/1", DEV_COMMIT):
        model = resolve_hub_model(REPO_ID, revision=revision)
        assert (model.commit, model.path) == (DEV_COMMIT, dev)


def test_sharded_snapshot(hub_cache, tiny_model):
    files = files_of(tiny_model)
    weights = files.pop("model.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    files |= {"model.safetensors.index.json": json.dumps(index).encode(),
              "model-00001-of-00002.safetensors": weights, "model-00002-of-00002.safetensors": weights}
    add_snapshot(hub_cache, files, MAIN_COMMIT)
    assert resolve_hub_model(REPO_ID).commit == MAIN_COMMIT


def test_offline_and_absent(hub_cache):
    with pytest.raises(ValueError) as error:
        resolve_hub_model(REPO_ID)
    message = str(error.value)
    assert "\n" not in message
    for part in ("'org/name'", str(hub_cache), "offline", "huggingface-cli download org/name", "hf download org/name",
                 "local folder"):
        assert part in message


def test_offline_and_revision_absent(hub_cache, tiny_model):
    add_snapshot(hub_cache, files_of(tiny_model), MAIN_COMMIT)
    for revision in ("dev", "c" * 40):
        with pytest.raises(ValueError, match=f"'org/name' at revision '{revision}' is not in the local"):
            resolve_hub_model(REPO_ID, revision=revision)


def test_bin_only_snapshot(hub_cache, tiny_model):
    files = files_of(tiny_model)
    files["pytorch_model.bin"] = files.pop("model.safetensors")
    add_snapshot(hub_cache, files, MAIN_COMMIT)
    with pytest.raises(ValueError, match=r"^model 'org/name' cannot be read by prunenet: it holds no safetensors "
                                         r"weights \(prunenet reads safetensors only\)$"):
        resolve_hub_model(REPO_ID)


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json", "model-00002-of-00002.safetensors"])
def test_partial_snapshot_offline(hub_cache, tiny_model, missing):
    """A snapshot another tool filled only in part (say a config fetched alone) is not taken for complete."""
    files = files_of(tiny_model)
    index = {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    if missing == "model-00002-of-00002.safetensors":
        files["model.safetensors.index.json"] = json.dumps(index).encode()
    files.pop(missing, None)
    add_snapshot(hub_cache, files, MAIN_COMMIT)
    with pytest.raises(ValueError, match="'org/name' is only partly in the local Hugging Face cache"):
        resolve_hub_model(REPO_ID)


def test_dangling_link_is_missing(hub_cache, tiny_model):
    snapshot = add_snapshot(hub_cache, files_of(tiny_model), MAIN_COMMIT)
    (snapshot / "model.safetensors").resolve().unlink()
    with pytest.raises(ValueError, match="only partly in the local"):
        resolve_hub_model(REPO_ID)


@pytest.mark.parametrize("repo_id, revision, error", [
    (Path("org/name"), None, TypeError), (None, None, TypeError), ("org/name", 3, TypeError),
    ("./x", None, ValueError), ("/abs/x", None, ValueError), ("a/b/c", None, ValueError),
    ("org/name", "", ValueError), ("org/name", "../../etc", ValueError), ("org/name", "/main", ValueError),
])
def test_bad_arguments(hub_cache, repo_id, revision, error):
    with pytest.raises(error, match="repo_id|revision|model id"):
        resolve_hub_model(repo_id, revision=revision)


class FakeHub(ThreadingHTTPServer):
    """The three Hub routes snapshot_download takes, for one repo: revision info, file tree, file download."""

    def __init__(self, files: dict[str, bytes], refs: dict[str, str], error_code: str | None = None):
        super().__init__(("127.0.0.1", 0), FakeHubRoutes)
        self.files, self.refs, self.error_code = files, refs, error_code
        self.downloaded: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubRoutes(BaseHTTPRequestHandler):
    server: FakeHub

    def do_GET(self):
        self.answer(send_body=True)

    def do_HEAD(self):
        self.answer(send_body=False)

    def answer(self, send_body: bool):
        hub, path = self.server, self.path.split("?")[0]
        api, resolve = f"/api/models/{REPO_ID}/", f"/{REPO_ID}/"
        if hub.error_code is not None or not path.startswith((api, resolve)):
            return self.reply(404 if hub.error_code != "GatedRepo" else 403, b"{}", send_body,
                              {"X-Error-Code": hub.error_code or "RepoNotFound"})
        if path.startswith(api + "revision/"):
            revision = path.removeprefix(api + "revision/").replace("%2F", "/")
            if revision not in hub.refs:
                return self.reply(404, b"{}", send_body, {"X-Error-Code": "RevisionNotFound"})
            info = {"id": REPO_ID, "sha": hub.refs[revision], "siblings": [{"rfilename": f} for f in hub.files]}
            return self.reply(200, json.dumps(info).encode(), send_body)
        if path.startswith(api + "tree/"):
            tree = [{"type": "file", "path": name, "size": len(content), "oid": hashlib.sha1(content).hexdigest()}
                    for name, content in hub.files.items()]
            return self.reply(200, json.dumps(tree).encode(), send_body)
        commit, _, name = path.removeprefix(resolve + "resolve/").partition("/")
        content = hub.files[name]
        if send_body:
            hub.downloaded.append(name)
        self.reply(200, content, send_body, {"X-Repo-Commit": commit,
                                             "ETag": f'"{hashlib.sha256(content).hexdigest()}"'})

    def reply(self, status: int, body: bytes, send_body: bool, headers: dict[str, str] | None = None):
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve_hub(monkeypatch, hub_cache):
    """Go online, to a fake Hub on localhost; the download URL template is also fixed at import."""
    servers = []

    def serve(files: dict[str, bytes], refs: dict[str, str], error_code: str | None = None) -> FakeHub:
        hub = FakeHub(files, refs, error_code)
        threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(hub)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        return hub

    yield serve
    for hub in servers:
        hub.shutdown()
        hub.server_close()


def test_download_takes_only_what_prunenet_reads(serve_hub, hub_cache, tiny_model):
    repo_files = files_of(tiny_model) | {"tokenizer.json": b"{}", "pytorch_model.bin": b"torch", "tf_model.h5": b"tf",
                                         "onnx/model.onnx": b"onnx", "README.md": b"# card"}
    hub = serve_hub(repo_files, {"main": MAIN_COMMIT})
    model = resolve_hub_model(REPO_ID, progress=False)
    assert (model.commit, model.path) == (MAIN_COMMIT, hub_cache / "models--org--name" / "snapshots" / MAIN_COMMIT)
    wanted = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
    assert set(hub.downloaded) == wanted
    assert {path.name for path in model.path.iterdir()} == wanted
    assert (model.path / "model.safetensors").read_bytes() == repo_files["model.safetensors"]
    # Cached now: found again with the Hub gone.
    hub.error_code = "RepoNotFound"
    assert resolve_hub_model(REPO_ID, revision="main").path == model.path


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bars(serve_hub, tiny_model, monkeypatch, progress):
    """huggingface_hub's bars are switched off for the download alone, and only when asked."""
    bar_switches = sys.modules[are_progress_bars_disabled.__module__]
    monkeypatch.setattr(bar_switches, "HF_HUB_DISABLE_PROGRESS_BARS", None)  # the variable would override both ways
    monkeypatch.setattr(bar_switches, "progress_bar_states", {})
    serve_hub(files_of(tiny_model), {"main": MAIN_COMMIT})
    bars_off_during_download = []

    def spy(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            bars_off_during_download.append(are_progress_bars_disabled())
        return snapshot_download(*args, **kwargs)

    monkeypatch.setattr(hub_module, "snapshot_download", spy)
    resolve_hub_model(REPO_ID, progress=progress)
    assert bars_off_during_download == [not progress]
    assert not are_progress_bars_disabled()


def test_download_of_bin_only_repo(serve_hub, tiny_model):
    repo_files = files_of(tiny_model)
    repo_files["pytorch_model.bin"] = repo_files.pop("model.safetensors")
    hub = serve_hub(repo_files, {"main": MAIN_COMMIT})
    with pytest.raises(ValueError, match=r"^model 'org/name' cannot be read by prunenet: .*safetensors only\)$"):
        resolve_hub_model(REPO_ID, progress=False)
    assert "pytorch_model.bin" not in hub.downloaded


@pytest.mark.parametrize("error_code, revision, expected", [
    ("RepoNotFound", None, r"^model 'org/name' does not exist on the Hugging Face Hub, or it is private"),
    ("GatedRepo", None, r"^model 'org/name' is gated on the Hugging Face Hub: accept its terms"),
    (None, "v9", r"^model 'org/name' has no revision 'v9' \(branch, tag or commit\) on the Hugging Face Hub$"),
])
def test_hub_refusals(serve_hub, hub_cache, tiny_model, error_code, revision, expected):
    serve_hub(files_of(tiny_model), {"main": MAIN_COMMIT}, error_code)
    with pytest.raises(ValueError, match=expected):
        resolve_hub_model(REPO_ID, revision=revision, progress=False)
    assert list(hub_cache.glob("models--*/snapshots/*")) == []


@pytest.fixture
def unreachable_hub(monkeypatch, hub_cache):
    """Online, but the Hub endpoint is a localhost port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        f"http://127.0.0.1:{closed_port}/{{repo_id}}/resolve/{{revision}}/{{filename}}")


def test_unreachable_hub(unreachable_hub, hub_cache):
    with pytest.raises(ValueError, match=r"^model 'org/name' is not in the local Hugging Face cache .* cannot be "
                                         r"reached \(no connection\); fetch it .*`huggingface-cli download org/name`"):
        resolve_hub_model(REPO_ID)
    assert list(hub_cache.iterdir()) == []


def test_unreachable_hub_and_partial_snapshot(unreachable_hub, hub_cache, tiny_model):
    """snapshot_download then hands back the partial snapshot as if the Hub had nothing more."""
    files = files_of(tiny_model)
    del files["model.safetensors"]
    add_snapshot(hub_cache, files, MAIN_COMMIT)
    with pytest.raises(ValueError, match=r"^model 'org/name' cannot be read by prunenet: it holds no safetensors "
                                         r"weights .*, or the Hub could not be reached to complete the cached "
                                         r"snapshot$"):
        resolve_hub_model(REPO_ID)


def test_only_wanted_files_are_fetched():
    """The filter handed to snapshot_download, applied the way it applies it."""
    listing = ["config.json", "generation_config.json", "model.safetensors.index.json",
               "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
               "added_tokens.json", "chat_template.jinja", "pytorch_model.bin", "pytorch_model-00001-of-00002.bin",
               "pytorch_model.bin.index.json", "model.pt", "weights.pth", "flax_model.msgpack", "tf_model.h5",
               "model-q4.gguf", "model.onnx", "onnx/model.onnx", "onnx/model.safetensors", "optimizer.pt",
               "training_args.bin", "original/consolidated.00.pth", "consolidated.safetensors", "README.md",
               ".gitattributes", "figures/plot.png"]
    kept = set(filter_repo_objects(listing, allow_patterns=WANTED_FILES, ignore_patterns=UNWANTED_FILES))
    assert kept == {"config.json", "generation_config.json", "model.safetensors.index.json",
                    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
                    "merges.txt", "added_tokens.json", "chat_template.jinja"}
