"""`prune_`: a loaded model sliced in place with the same code as `compress`: the same rows and tensors as
compressing its folder, a config that says the new width, and a `save_pretrained` that plain
`from_pretrained` loads."""
from __future__ import annotations

import pytest
import torch
from helpers import PROBES, read_json
from tiny_models import build_model, save_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

import prunenet

pytestmark = pytest.mark.usefixtures("own_cache")
OPTIONS = [{}, {"statistics": "sequential"}, {"selector": "random", "repair": "lsq"},
           {"selector": "prunenet", "episodes": 2, "repair": "none"}]


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "sequential", "random-lsq", "prunenet"])
@pytest.mark.parametrize("family", ["llama", "opt", "phi3"])
def test_prune_in_memory_equals_compress_of_the_folder(family, options, tmp_path):
    src = save_model(build_model(family), tmp_path / "src")
    report = prunenet.compress(src, tmp_path / "out", ratio=0.3, progress=False, **PROBES, **options)
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    pruned = prunenet.prune_(model, 0.3, tokenizer=tiny_tokenizer(), progress=False, **PROBES, **options)
    assert pruned["outputs"][0]["kept_rows"] == read_json(tmp_path / "out" / "prunenet.json")["kept_rows"]
    written = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, written[name], rtol=1e-5, atol=1e-6, msg=name)
    assert pruned["outputs"][0]["parameters_after"] == report["outputs"][0]["parameters_after"]
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    tokens = torch.tensor([[1, 5, 9, 13]])
    torch.testing.assert_close(reloaded(tokens).logits, model(tokens).logits)


def test_prune_keeps_the_model_where_it_sits_and_its_training_mode(tmp_path):
    model = build_model("llama").to(torch.float64).train()
    prunenet.prune_(model, 0.25, selector="magnitude", repair="none", progress=False)
    assert model.training and all(p.dtype == torch.float64 for p in model.parameters())
    assert model.config.intermediate_size == model.model.layers[0].mlp.gate_proj.out_features


@pytest.mark.parametrize("call, error, says", [
    (lambda m: prunenet.prune_(m, 0.3, progress=False), ValueError, "tokenizer"),
    (lambda m: prunenet.prune_(m, 0.3, dtype="float16", progress=False), ValueError, "dtype='float16'"),
    (lambda m: prunenet.prune_(m, 0.3, device="cpu", progress=False), ValueError, "device='cpu'"),
    (lambda m: prunenet.prune_(m, 1.0, progress=False), ValueError, "ratio 1.0"),
    (lambda m: prunenet.prune_(m, 0.3, episodes=2, progress=False), ValueError, "episodes"),
    (lambda m: prunenet.prune_(torch.nn.Linear(2, 2), 0.3, progress=False), TypeError, "PreTrainedModel"),
])
def test_bad_input_is_refused_and_the_model_left_whole(call, error, says):
    model = build_model("llama")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(error, match=says):
        call(model)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
