"""Every supported family: compress a tiny random model, reload it with plain transformers, run it."""
from __future__ import annotations

import pytest
import torch
from helpers import read_json
from tiny_models import CONFIGS, FFN, LAYERS, VOCAB, build_model, logits, save_model
from transformers import AutoModelForCausalLM

import prunenet
from prunenet.model.families import FAMILIES, family_for

TOKENS = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))


def _ffn_tensors(model: torch.nn.Module, model_type: str) -> dict[str, torch.Tensor]:
    family = family_for(model_type)
    return {name: t for name, t in model.state_dict().items() if family.match(name)}


def test_every_model_type_of_the_design_table_is_supported():
    assert set(FAMILIES) == {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "opt",
                             "phi", "falcon", "gpt_neox"}
    assert {CONFIGS[name]().model_type for name in CONFIGS} == set(FAMILIES)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_compress_reload_and_run(name, tmp_path):
    model = build_model(name)
    src = save_model(model, tmp_path / "src")
    report = prunenet.compress(src, tmp_path / "out", ratio=0.3, progress=False)
    k = int(0.7 * FFN)
    out = report["outputs"][0]
    assert out["ffn_width_after"] == k and out["ffn_width_before"] == FFN

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    family = family_for(reloaded.config.model_type)
    assert all(reloaded.config.to_dict()[key] == k for key in family.width_keys)
    with torch.no_grad():
        result = reloaded(TOKENS).logits
    assert result.shape == (2, 9, VOCAB) and torch.isfinite(result).all()

    # Parameters removed: every FFN tensor loses (n - k) of its n rows or columns, in every layer.
    removed_per_row = sum(t.numel() for t in _ffn_tensors(model, reloaded.config.model_type).values()) // FFN
    assert removed_per_row * (FFN - k) == model.num_parameters() - reloaded.num_parameters()
    assert out["parameters_before"] - out["parameters_after"] == removed_per_row * (FFN - k)
    scored = [t for n, t in reloaded.state_dict().items() if n.endswith(family.scored)]
    assert len(scored) == LAYERS
    assert all(t.shape[0] == (2 * k if family.fused_gate_up else k) for t in scored)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pruning_zeroed_rows_leaves_outputs_unchanged(name, tmp_path):
    """Zero some rows of the scored matrix (and their bias): activation(0) = 0, so those FFN units add
    nothing. The magnitude selector then drops exactly them (norm 0), and the compressed model must give
    the same logits. This pins the slicing of rows, columns, biases and fused halves for every family."""
    model = build_model(name)
    family = family_for(model.config.model_type)
    dropped = torch.tensor([0, 3, 4, 17, FFN - 1])
    with torch.no_grad():
        for tensor_name, tensor in model.state_dict().items():
            found = family.match(tensor_name)
            if found and found[1] in (family.scored, family.scored.replace(".weight", ".bias")):
                tensor[dropped] = 0.0  # the gate half of a fused gate_up matrix is its first n rows
    expected = logits(model, TOKENS)
    src = save_model(model, tmp_path / "src")
    ratio = len(dropped) / FFN
    prunenet.compress(src, tmp_path / "out", ratio=ratio, selector="magnitude", progress=False)
    provenance = read_json(tmp_path / "out" / "prunenet.json")
    assert all(set(range(FFN)) - set(rows) == set(dropped.tolist()) for rows in provenance["kept_rows"])
    torch.testing.assert_close(logits(tmp_path / "out", TOKENS), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "opt", "phi3"])
def test_ratio_zero_leaves_logits_unchanged(name, tmp_path):
    model = build_model(name)
    src = save_model(model, tmp_path / "src")
    report = prunenet.compress(src, tmp_path / "out", ratio=0.0, progress=False)
    assert report["fit"] is None  # nothing to select, nothing to learn
    torch.testing.assert_close(logits(tmp_path / "out", TOKENS), logits(model, TOKENS), rtol=0, atol=0)


def test_unknown_model_type_names_the_supported_ones():
    with pytest.raises(ValueError, match="unsupported model_type 'bert'.*gpt_neox.*llama"):
        family_for("bert")
