"""The pass against the original model: two hidden-state sets side by side, the repair fitted to the original's
output instead of the compressed layer's own."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from helpers import PROBES
from tiny_models import build_model, logits, save_model

import prunenet
from prunenet.calibration.driver import MODES, select_on_probes
from prunenet.calibration.layer_stream import LayerStream
from prunenet.calibration.statistics import LayerChange, statistics_pass
from prunenet.model.families import family_for
from prunenet.model.ffn_map import SlicePlan
from prunenet.model.in_memory import ModelTensors, slice_in_place
from prunenet.repairs import REPAIRS
from prunenet.repairs.lsq import refit_output
from prunenet.selectors import make_selector

BATCHES = [torch.randint(3, 96, (4, 24), generator=torch.Generator().manual_seed(seed)) for seed in range(3)]


def down_inputs(model: torch.nn.Module) -> tuple[list[list[torch.Tensor]], list]:
    """Every call's input of every layer's down_proj, in call order, and the hooks (to remove)."""
    seen: list[list[torch.Tensor]] = [[] for _ in model.model.layers]
    hooks = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].clone()))
             for i, layer in enumerate(model.model.layers)]
    return seen, hooks


@pytest.mark.parametrize("target", ["ffn", "layer"])
def test_with_no_row_removed_the_compressed_stream_is_the_original_and_the_fit_gives_its_weights(target):
    model = build_model("llama").eval()
    stream = LayerStream.of_model(model, family_for("llama"))
    weights = [layer.mlp.down_proj.weight.detach().clone() for layer in model.model.layers]
    seen, hooks = down_inputs(model)
    fitted = []

    def decide(index, stats, output):
        every = torch.arange(output.weight.shape[1])
        assert stats.target_cross is not None and stats.target_sums is not None
        fitted.append(refit_output(output.weight, stats.gram, every, target_cross=stats.target_cross)[0])
        return LayerChange(fitted[-1], None)

    try:
        statistics_pass(stream, BATCHES, decide, sequential=True, target=target)
    finally:
        for hook in hooks:
            hook.remove()
    batches = len(BATCHES)
    for index, calls in enumerate(seen):
        # Per layer: the original stream's batches, the compressed stream's, and the compressed stream again
        # with the fitted weights.
        assert len(calls) == 3 * batches
        original, compressed = calls[:batches], calls[batches: 2 * batches]
        for a, b in zip(original, compressed):
            if index == 0:
                assert torch.equal(a, b)
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fitted[index], weights[index], rtol=1e-4, atol=1e-5)


def compressed_error(model: torch.nn.Module, statistics: str, ratio: float = 0.5) -> float:
    """Relative error of the compressed model's last hidden states against the original's, on the probes."""
    pruned = copy.deepcopy(model)
    family = family_for("llama")
    plan = SlicePlan(ModelTensors(pruned), family)
    k = int(plan.n * (1 - ratio))
    chosen = select_on_probes(LayerStream.of_model(pruned, family), BATCHES, plan, {ratio: k},
                              make_selector("activation", None, 0), None, REPAIRS["lsq"], MODES[statistics])
    # The sequential passes changed the working copy's output matrices in place: slice a fresh one.
    pruned = copy.deepcopy(model)
    slice_in_place(pruned, SlicePlan(ModelTensors(pruned), family), chosen.kept[ratio], chosen.replacements[ratio])
    with torch.no_grad():
        want = torch.cat([model.model(input_ids=t).last_hidden_state for t in BATCHES])
        got = torch.cat([pruned.model(input_ids=t).last_hidden_state for t in BATCHES])
    return ((got - want).norm() / want.norm()).item()


def test_fitting_against_the_original_lowers_the_error_of_todays_refit():
    model = build_model("llama", num_hidden_layers=4).eval()
    own = compressed_error(model, "sequential")
    assert compressed_error(model, "reconstruct-layer") < 0.9 * own
    assert compressed_error(model, "reconstruct") < own


def test_the_target_is_checked():
    stream = LayerStream.of_model(build_model("llama").eval(), family_for("llama"))
    with pytest.raises(ValueError, match="unknown target 'logits'"):
        statistics_pass(stream, BATCHES, lambda *a: None, sequential=True, target="logits")


@pytest.mark.usefixtures("own_cache")
@pytest.mark.parametrize("name", ["opt", "gemma3_text", "phi3"])
def test_reconstruct_writes_loadable_models_of_other_families(name, tmp_path):
    src = save_model(build_model(name), tmp_path / "src")
    report = prunenet.compress(src, tmp_path / "out", ratio=0.5, statistics="reconstruct", progress=False, **PROBES)
    assert logits(report["outputs"][0]["out"], torch.tensor([[3, 4, 5, 6]])).isfinite().all()


@pytest.mark.usefixtures("own_cache")
def test_the_layer_target_is_refused_before_any_work_where_the_ffn_output_is_normalised(tmp_path):
    src = save_model(build_model("gemma3_text"), tmp_path / "src")
    with pytest.raises(ValueError, match="gemma3_text normalises it first; use statistics 'reconstruct'"):
        prunenet.compress(src, tmp_path / "out", ratio=0.5, statistics="reconstruct-layer", progress=False, **PROBES)
    assert not (tmp_path / "out").exists()
    assert not (Path(os.environ["PRUNENET_CACHE"]) / "probes").exists()
