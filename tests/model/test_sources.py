"""Model sources through the commands: Hugging Face Hub ids (offline, from a Hub cache laid out in the test),
revisions, and farm plans that name a Hub id."""
from __future__ import annotations

import pytest
from helpers import add_snapshot, cli_error, read_json
from tiny_models import build_model, save_model
from transformers import AutoModelForCausalLM

import prunenet
from prunenet.farm.plan import load_plan
from prunenet.model import resolve_model

MAIN, DEV = "c" * 40, "d" * 40
pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture
def cached_tiny(hub_cache, tmp_path):
    """A tiny LLaMA in the Hub cache as org/tiny: main and dev at two commits (dev's weights differ)."""
    snapshots = {}
    for commit, ref, seed in ((MAIN, "main", 0), (DEV, "dev", 1)):
        folder = save_model(build_model("llama", seed=seed), tmp_path / f"src-{ref}")
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        snapshots[ref] = add_snapshot(hub_cache, files, commit, refs=(ref,), repo_id="org/tiny")
    return snapshots


def test_a_hub_id_compresses_from_the_cache_offline(cached_tiny, tmp_path):
    report = prunenet.compress("org/tiny", tmp_path / "out", ratio=0.3, selector="random", repair="none",
                               progress=False)
    assert report["model"]["path"] == str(cached_tiny["main"])
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # loads as any checkpoint does
    dev = prunenet.compress("org/tiny", tmp_path / "dev", ratio=0.3, revision="dev", selector="random",
                            repair="none", progress=False)
    assert dev["model"]["path"] == str(cached_tiny["dev"])


def test_an_absent_id_offline_is_one_line_naming_it(hub_cache, tmp_path, capsys):
    cli_error(capsys, ["compress", "org/absent", "--ratio", "0.3", "--out", str(tmp_path / "o")],
              ["'org/absent'", "offline", "download org/absent"])
    assert not (tmp_path / "o").exists()


def test_a_revision_needs_a_hub_id(tmp_path, capsys):
    src = save_model(build_model("llama"), tmp_path / "src")
    cli_error(capsys, ["info", str(src), "--revision", "v1"], ["revision 'v1'", "Hub ids"])
    with pytest.raises(ValueError, match="revision 'v1' applies to Hugging Face Hub ids"):
        resolve_model("smollm2-135m", revision="v1")


def test_a_farm_plan_keys_a_hub_id_by_its_commit(cached_tiny, tmp_path):
    plan = load_plan({"out": str(tmp_path / "runs"), "ratios": [0.3],
                      "models": ["org/tiny", {"name": "tiny-dev", "path": "org/tiny", "revision": "dev"}]})
    main, dev = plan.models
    assert (main.name, main.source) == ("tiny", str(cached_tiny["main"]))
    assert (dev.name, dev.source) == ("tiny-dev", str(cached_tiny["dev"]))
    assert main.fingerprint != dev.fingerprint
    with pytest.raises(ValueError, match="needs a Hub id"):
        load_plan({"out": str(tmp_path / "runs"), "ratios": [0.3], "models": [{"path": ".", "revision": "v1"}]})


def test_reports_name_the_snapshot_and_probes_work_from_it(cached_tiny, tmp_path):
    report = prunenet.compress("org/tiny", tmp_path / "out", ratio=0.3, probe_tokens=128, probe_length=32,
                               progress=False)
    assert report["probes"]["tokens"] == 128
    assert read_json(tmp_path / "out" / "prunenet.json")["selector"] == "activation"
