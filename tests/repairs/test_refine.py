"""The joint refinement of each sliced FFN (`repair="refine"`): gate/up rows and the output matrix trained
together, kept only where they beat least squares on held-out probe tokens."""
from __future__ import annotations

import copy

import pytest
import torch
from helpers import cli_error, snapshot
from safetensors.torch import load_file
from tiny_models import build_model, logits, save_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

import prunenet
from prunenet.calibration.driver import MODES, select_on_probes
from prunenet.calibration.layer_stream import LayerStream
from prunenet.config import CompressConfig, RefineOptions
from prunenet.model.families import family_for
from prunenet.model.ffn_map import SlicePlan
from prunenet.model.in_memory import ModelTensors, slice_in_place
from prunenet.repairs import REPAIRS
from prunenet.selectors import make_selector

pytestmark = pytest.mark.usefixtures("own_cache")

# Many probe tokens for a tiny FFN: enough that a fit of all its kept tensors can generalise.
TRAIN = [torch.randint(3, 96, (8, 32), generator=torch.Generator().manual_seed(seed)) for seed in range(8)]
FRESH = [torch.randint(3, 96, (8, 32), generator=torch.Generator().manual_seed(100 + seed)) for seed in range(2)]


def sliced(model: torch.nn.Module, repair: str, ratio: float = 0.5, **options) -> tuple[torch.nn.Module, object]:
    """`model` compressed in memory by the driver with `repair` on the TRAIN batches, and the selection."""
    family = family_for(model.config.model_type)
    working = copy.deepcopy(model)
    plan = SlicePlan(ModelTensors(working), family)
    k = int(plan.n * (1 - ratio))
    config = CompressConfig.from_options({"repair": repair, **options})
    chosen = select_on_probes(LayerStream.of_model(working, family), TRAIN, plan, {ratio: k},
                              make_selector("activation", None, 0), None, REPAIRS[repair].configured(config),
                              MODES["sequential"])
    pruned = copy.deepcopy(model)  # the pass changed the working copy's output matrices in place
    slice_in_place(pruned, SlicePlan(ModelTensors(pruned), family), chosen.kept[ratio], chosen.replacements[ratio])
    return pruned, chosen


def error_on_fresh_text(model: torch.nn.Module, pruned: torch.nn.Module) -> float:
    with torch.no_grad():
        want = torch.cat([model.model(input_ids=t).last_hidden_state for t in FRESH])
        got = torch.cat([pruned.model(input_ids=t).last_hidden_state for t in FRESH])
    return ((got - want).norm() / want.norm()).item()


def test_refining_lowers_the_error_of_least_squares_on_text_it_never_saw():
    model = build_model("llama", num_hidden_layers=2)
    lsq, _ = sliced(model, "lsq")
    refined, chosen = sliced(model, "refine", refine_epochs=8, refine_lr=3e-3, refine_batch_tokens=64)
    gate = [name for name in chosen.replacements[0.5] if name.endswith("gate_proj.weight")]
    assert gate, "no layer kept refined gate rows"
    assert error_on_fresh_text(model, refined) < 0.9 * error_on_fresh_text(model, lsq)


def test_where_no_epoch_beats_least_squares_the_layer_gets_least_squares():
    model = build_model("llama", num_hidden_layers=2)
    lsq, plain_chosen = sliced(model, "lsq")
    # A step so large that every epoch is worse on the held-out tokens than the start.
    refined, chosen = sliced(model, "refine", refine_epochs=1, refine_lr=10.0)
    assert set(chosen.replacements[0.5]) == set(plain_chosen.replacements[0.5])  # the output matrices only
    for name, tensor in plain_chosen.replacements[0.5].items():
        torch.testing.assert_close(chosen.replacements[0.5][name], tensor)


@pytest.mark.parametrize("name", ["llama", "phi3", "falcon", "phi", "gemma3_text"])
def test_refined_outputs_reload_with_their_refined_rows(name, tmp_path):
    src = save_model(build_model(name), tmp_path / "src")
    options = dict(ratio=0.5, repair="refine", refine_epochs=4, refine_lr=3e-3, refine_batch_tokens=32,
                   progress=False, probe_tokens=1024, probe_length=32)
    report = prunenet.compress(src, tmp_path / "out", **options)
    again = prunenet.compress(src, tmp_path / "again", **options)
    out = report["outputs"][0]["out"]
    assert logits(out, torch.tensor([[3, 4, 5, 6]])).isfinite().all()
    first, second = load_file(f"{out}/model.safetensors"), load_file(f"{again['outputs'][0]['out']}/model.safetensors")
    for tensor in first:  # seeded shuffles: the same run gives the same tensors
        torch.testing.assert_close(first[tensor], second[tensor], rtol=1e-5, atol=1e-6)


def test_refine_is_refused_in_one_line_where_the_family_has_no_ffn_module(tmp_path, capsys):
    src = save_model(build_model("opt"), tmp_path / "src")
    before = snapshot(tmp_path)
    cli_error(capsys, ["compress", src, "--ratio", "0.5", "--repair", "refine", "--out", tmp_path / "out",
                       "--probe-tokens", "256", "--probe-length", "32", "--quiet"],
              ["repair 'refine'", "opt computes its FFN in the decoder layer", "use repair 'lsq'"])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("options, says", [
    ({"repair": "refine", "refine_epochs": 0}, "refine_epochs=0"),
    ({"repair": "refine", "refine_lr": -1.0}, "refine_lr=-1.0"),
    ({"repair": "refine", "refine_batch_tokens": 0}, "refine_batch_tokens=0"),
    ({"refine_epochs": 2}, "option refine_epochs (--refine-epochs) applies to repair 'refine' only, not to 'lsq'"),
    ({"repair": "refine", "statistics": "reconstruct"}, "statistics 'reconstruct' fits the original model's"),
])
def test_bad_refine_options_are_refused_naming_the_value(options, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        CompressConfig.from_options(options)


def test_the_cli_refuses_a_bad_refine_option_in_one_line_before_any_work(tmp_path, capsys):
    cli_error(capsys, ["compress", "smollm2-135m", "--ratio", "0.2", "--repair", "refine", "--refine-epochs", "0",
                       "--out", tmp_path / "o"], ["refine_epochs=0"])
    assert list(tmp_path.iterdir()) == []


def test_the_defaults_are_the_documented_ones():
    assert RefineOptions() == RefineOptions(epochs=4, lr=3e-4, batch_tokens=512)


@pytest.mark.parametrize("name", ["llama", "phi3"])
def test_prune_in_memory_refines_as_compress_does(name, tmp_path):
    options = dict(repair="refine", refine_epochs=2, refine_lr=3e-3, refine_batch_tokens=32, probe_tokens=512,
                   probe_length=32, probe_dtype="float32", progress=False)
    src = save_model(build_model(name), tmp_path / "src")
    prunenet.compress(src, tmp_path / "out", ratio=0.5, **options)
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    prunenet.prune_(model, 0.5, tokenizer=tiny_tokenizer(), **options)
    written = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for tensor, value in model.state_dict().items():
        torch.testing.assert_close(value, written[tensor], rtol=1e-4, atol=1e-5, msg=tensor)
