"""`fisher`: rows ranked by the Fisher information of a mask on each row, from the whole model on the probes,
per unit of activation energy, times the energy on the stream the statistics pass runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import PROBES, assert_nothing_written, cli_error, read_json
from tiny_models import build_model, logits, save_model, tiny_tokenizer

import prunenet
import prunenet.memory
from prunenet.calibration.statistics import LayerStats
from prunenet.cli import main
from prunenet.model.families import family_for
from prunenet.model.ffn_map import SlicePlan
from prunenet.model.in_memory import ModelTensors
from prunenet.selectors.fisher import FisherSelector, fisher_information, output_modules

pytestmark = pytest.mark.usefixtures("own_cache")


def _nll(model, tokens: torch.Tensor) -> torch.Tensor:
    out = model(tokens).logits[:, :-1]
    return torch.nn.functional.cross_entropy(out.flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum")


# Families whose forward runs in float64 throughout (llama's norms compute in float32, too coarse for finite
# differences); OPT hands its output matrix the activations flattened to (batch * tokens, n).
@pytest.mark.parametrize("name", ["opt", "gpt_neox"])
def test_fisher_is_the_sum_of_squared_mask_derivatives_by_finite_differences(name):
    model = build_model(name).double()
    plan = SlicePlan(ModelTensors(model), family_for(model.config.model_type))
    tokens = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(1))
    fisher, energy = fisher_information(model, plan, tokens)
    assert fisher.shape == energy.shape == (plan.num_layers, plan.n) and (fisher >= 0).all()
    layer, row, eps = 1, 7, 1e-5
    module = output_modules(model, plan)[layer]
    squares = 0.0
    for position in range(tokens.numel()):
        nll = []
        for sign in (1, -1):
            def scaled(mod, args, sign=sign, position=position):
                x = args[0].clone()
                x.view(-1, plan.n)[position, row] *= 1 + sign * eps
                return (x,)
            hook = module.register_forward_pre_hook(scaled)
            with torch.no_grad():
                nll.append(_nll(model, tokens).item())
            hook.remove()
        squares += ((nll[0] - nll[1]) / (2 * eps)) ** 2
    assert squares > 0
    assert fisher[layer, row].item() == pytest.approx(squares, rel=1e-5)
    seen = []
    hook = module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].reshape(-1, plan.n)[:, row]))
    with torch.no_grad():
        model(tokens)
    hook.remove()
    assert energy[layer, row].item() == pytest.approx(seen[0].square().sum().item(), rel=1e-5)


def test_the_pass_ranks_by_fisher_per_unit_energy_times_the_energy_it_sees():
    model = build_model("llama")
    plan = SlicePlan(ModelTensors(model), family_for(model.config.model_type))
    tokens = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(3))
    selector = FisherSelector(FisherSelector.options(), seed=0)
    selector.prepare_model(model, plan, tokens, progress=False)
    fisher, energy = fisher_information(model, plan, tokens)
    assert (energy > 0).all()

    def ranked(layer: int, gram: torch.Tensor) -> torch.Tensor:
        stats = LayerStats(gram=gram, sums=torch.zeros(plan.n), count=tokens.numel())
        return selector.rank_layer(layer, stats, None, smallest_width=1)

    # On the original's stream (one-shot statistics) the ranking is Fisher's own.
    torch.testing.assert_close(ranked(1, torch.diag(energy[1])), fisher[1])
    # A row whose input the compressed layers below cut to a quarter of its energy is worth a quarter.
    gram = torch.diag(energy[1])
    gram[5, 5] *= 0.25
    expected = fisher[1].clone()
    expected[5] *= 0.25
    torch.testing.assert_close(ranked(1, gram), expected)


def test_ranking_leaves_the_model_as_it_was():
    model = build_model("qwen2")
    model.train()
    model.lm_head.weight.requires_grad_(False)
    plan = SlicePlan(ModelTensors(model), family_for(model.config.model_type))
    tokens = torch.randint(3, 96, (3, 8), generator=torch.Generator().manual_seed(2))
    model.eval()
    before = logits(model, tokens)
    model.train()
    fisher_information(model, plan, tokens)
    assert model.training and not model.lm_head.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "lm_head.weight")
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    torch.testing.assert_close(logits(model, tokens), before, rtol=0, atol=0)  # no hook left behind


def _kl(reference: torch.Tensor, folder: Path, tokens: torch.Tensor) -> float:
    got = torch.log_softmax(logits(folder, tokens), -1)
    return (reference.exp() * (reference - got)).sum(-1).mean().item()


def test_fisher_rows_keep_the_model_closer_than_random_rows(tmp_path):
    model = build_model("llama")
    src = save_model(model, tmp_path / "src")
    tokens = torch.randint(3, 96, (4, 20), generator=torch.Generator().manual_seed(0))
    reference = torch.log_softmax(logits(model, tokens), -1)
    report = prunenet.compress(src, tmp_path / "fisher", ratios=[0.25, 0.5], selector="fisher", repair="none",
                               progress=False, **PROBES)
    assert report["options"]["selector"] == "fisher" and report["probes"]["tokens"] == 256
    assert "select" in report["timings_s"]
    prunenet.compress(src, tmp_path / "random", ratios=[0.25, 0.5], selector="random", repair="none", progress=False)
    for r in ("0.25", "0.5"):
        assert _kl(reference, tmp_path / "fisher" / f"ratio-{r}", tokens) < \
            _kl(reference, tmp_path / "random" / f"ratio-{r}", tokens)
    # Nested: the rows kept at 0.5 are among those kept at 0.25, in every layer.
    kept = [read_json(tmp_path / "fisher" / f"ratio-{r}" / "prunenet.json")["kept_rows"] for r in ("0.25", "0.5")]
    assert all(set(narrow) <= set(wide) for wide, narrow in zip(*kept))


@pytest.mark.parametrize("statistics", ["oneshot", "sequential"])
def test_a_scores_file_slices_as_the_direct_compress(tmp_path, statistics):
    src = save_model(build_model("gemma3_text"), tmp_path / "src")
    scores = tmp_path / "fisher.safetensors"
    report = prunenet.score(src, scores, selector="fisher", progress=False, **PROBES)
    assert report["selector"] == "fisher" and report["probes"]["tokens"] == 256
    direct = prunenet.compress(src, tmp_path / "direct", ratio=0.3, selector="fisher", statistics=statistics,
                               progress=False, **PROBES)
    stored = prunenet.compress(src, tmp_path / "stored", ratio=0.3, selector="fisher", statistics=statistics,
                               scores=scores, progress=False)
    assert stored["probes"]["from_scores"] == str(scores) and direct["outputs"][0]["ffn_width_after"] == 28
    kept = [read_json(tmp_path / f / "prunenet.json")["kept_rows"] for f in ("direct", "stored")]
    # One-shot: the stored ranking as it is; sequential: ranked again in the pass, on the stored probes.
    assert kept[0] == kept[1]
    for folder in ("direct", "stored"):
        assert logits(tmp_path / folder, torch.tensor([[3, 4, 5, 6]])).isfinite().all()


def test_prune_ranks_a_loaded_model_in_place(tmp_path):
    model = build_model("llama")
    src = save_model(model, tmp_path / "src")
    compressed = prunenet.compress(src, tmp_path / "out", ratio=0.3, selector="fisher", progress=False, **PROBES)
    report = prunenet.prune_(model, 0.3, tokenizer=tiny_tokenizer(), selector="fisher", progress=False, **PROBES)
    assert report["outputs"][0]["ffn_width_after"] == compressed["outputs"][0]["ffn_width_after"] == 28
    assert model.config.intermediate_size == 28
    assert logits(model, torch.tensor([[3, 4, 5, 6]])).isfinite().all()


def test_a_model_the_selector_cannot_hold_is_refused_before_any_work(tmp_path, monkeypatch):
    src = save_model(build_model("llama"), tmp_path / "src")
    monkeypatch.setattr(prunenet.memory, "available_bytes", lambda device: 1 << 10)
    with pytest.raises(ValueError, match=r"selector 'fisher' runs the whole model in float32 on cpu: about"):
        prunenet.compress(src, tmp_path / "out", ratio=0.4, selector="fisher", progress=False, **PROBES)
    assert_nothing_written(tmp_path / "out")


def test_the_cli_takes_the_selector_and_refuses_its_bad_input(tmp_path, capsys):
    src = save_model(build_model("llama"), tmp_path / "src")
    out = tmp_path / "out"
    cli_error(capsys, ["compress", str(src), "--ratio", "0.3", "--out", str(out), "--selector", "fisher",
                       "--episodes", "3"], ["episodes", "prunenet"])
    assert_nothing_written(out)
    assert main(["compress", str(src), "--ratio", "0.3", "--out", str(out), "--selector", "fisher",
                              "--probe-tokens", "256", "--probe-length", "32", "--quiet"]) == 0
    assert read_json(out / "prunenet.json")["selector"] == "fisher"


def test_a_kl_bound_search_ranks_once(tmp_path, monkeypatch):
    import prunenet.selectors.fisher as fisher

    src = save_model(build_model("llama"), tmp_path / "src")
    calls = []
    ranked = fisher.fisher_information
    monkeypatch.setattr(fisher, "fisher_information", lambda *args, **kw: calls.append(1) or ranked(*args, **kw))
    report = prunenet.compress(src, tmp_path / "out", max_kl=0.01, max_kl_tokens=512, selector="fisher",
                               progress=False, **PROBES)
    assert len(report["max_kl"]["checked"]) > 1 and calls == [1]
