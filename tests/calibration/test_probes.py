"""Selection that sees activations: probes, the layer-streaming statistics pass, rankers, repair, scores files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import prunenet
from prunenet.selectors.activation import activation_priority
from prunenet.selectors.obs import obs_priority
from prunenet.calibration.statistics import output_module_path
from prunenet.model.checkpoint import Checkpoint
from prunenet.cli import main
from prunenet.model.families import family_for
from prunenet.calibration.layer_stream import LayerStream
from prunenet.calibration.probes import ProbePlan, get_probes, tokens_from_file
from prunenet.config import ProbeConfig
from prunenet.repairs import refit_output
from tiny_models import CONFIGS, build_model, logits, save_model, tiny_tokenizer

PROBES = dict(probe_tokens=256, probe_length=32)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNENET_CACHE", str(tmp_path / "cache"))


def _layer_outputs(model: torch.nn.Module, family, tokens: torch.Tensor) -> list[torch.Tensor]:
    """What each decoder layer of the full HF model returns on `tokens`."""
    stream_layers = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)
                     and len(m) and _holds(m[0], output_module_path(family))][0]
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o))
             for layer in stream_layers]
    with torch.no_grad():
        model(tokens)
    for hook in hooks:
        hook.remove()
    return outputs


def _holds(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_layer_stream_reproduces_the_full_forward(name, tmp_path):
    model = build_model(name)
    src = save_model(model, tmp_path / "src")
    checkpoint = Checkpoint(src)
    family = family_for(checkpoint.model_type)
    batches = [torch.randint(3, 96, (2, 11), generator=torch.Generator().manual_seed(b)) for b in range(2)]
    expected = [_layer_outputs(model, family, tokens) for tokens in batches]
    stream = LayerStream(checkpoint, family, torch.device("cpu"), torch.float32)
    got: list[list[torch.Tensor]] = [[] for _ in batches]

    def visit(index, layer, forward):
        for batch, out in enumerate(forward()):
            got[batch].append(out.clone())

    assert list(stream.run(batches, visit)) == list(range(3))
    for batch in range(len(batches)):
        assert len(got[batch]) == len(expected[batch]) == 3
        for mine, theirs in zip(got[batch], expected[batch]):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    # Layers are emptied after use: the model is never whole in memory.
    assert all(p.is_meta for layer in stream.layers for p in layer.parameters())


def _activations(tokens: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Correlated, non-zero-mean activations, as an FFN's are.
    return torch.randn(tokens, n, generator=g) @ torch.randn(n, n, generator=g) * 0.3 + 0.2


def test_repair_lowers_the_output_error_of_random_rows():
    g = torch.Generator().manual_seed(1)
    a, w, b = _activations(600, 40), torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    kept = torch.randperm(40, generator=g)[:28].sort().values
    target = a @ w.T + b
    plain = ((a[:, kept] @ w[:, kept].T + b - target).square().sum() / target.square().sum()).item()
    refit, new_bias = refit_output(w, a.T @ a, kept, b, a.sum(0), a.shape[0])
    repaired = ((a[:, kept] @ refit.T + new_bias - target).square().sum() / target.square().sum()).item()
    assert repaired < 0.5 * plain, (plain, repaired)
    refit_nobias, _ = refit_output(w, a.T @ a, kept)
    no_bias_refit = ((a[:, kept] @ refit_nobias.T + b - target).square().sum() / target.square().sum()).item()
    assert repaired < no_bias_refit  # refitting the bias absorbs the dropped rows' mean


def test_repair_with_identity_statistics_is_plain_slicing():
    w = torch.randn(10, 16, generator=torch.Generator().manual_seed(2))
    kept = torch.tensor([0, 3, 4, 9, 15])
    refit, bias = refit_output(w, torch.eye(16), kept)
    assert bias is None
    # Uncorrelated unit activations: nothing to compensate, and the ridge pulls towards plain slicing.
    torch.testing.assert_close(refit, w[:, kept])


def test_refit_validates_its_inputs():
    w = torch.randn(4, 6)
    with pytest.raises(ValueError, match="do not match"):
        refit_output(w, torch.eye(5), torch.tensor([0]))
    with pytest.raises(ValueError, match="non-empty"):
        refit_output(w, torch.eye(6), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="sums"):
        refit_output(w, torch.eye(6), torch.tensor([0]), bias=torch.zeros(4))


@pytest.mark.parametrize("ranker", ["activation", "obs"])
def test_rankers_find_the_rows_that_carry_the_output(ranker):
    n, planted = 30, torch.tensor([2, 7, 11, 19, 23, 29])
    a = _activations(500, n, seed=3) * 0.05
    a[:, planted] *= 40  # these rows are active ...
    w = torch.randn(12, n, generator=torch.Generator().manual_seed(4))
    gram = a.T @ a
    if ranker == "activation":
        priority = activation_priority(gram, w)
    else:
        priority = obs_priority(gram, w, smallest_width=len(planted))
    assert set(priority.topk(len(planted)).indices.tolist()) == set(planted.tolist())


def test_obs_ranking_is_nested_and_validated():
    a, w = _activations(300, 20, seed=5), torch.randn(8, 20)
    priority = obs_priority(a.T @ a, w, smallest_width=4)
    assert priority.shape == (20,) and priority.unique().numel() == 20
    with pytest.raises(ValueError, match="smallest_width"):
        obs_priority(a.T @ a, w, smallest_width=0)


def test_compress_default_keeps_the_model_better_than_random_rows(tmp_path):
    model = build_model("llama")
    src = save_model(model, tmp_path / "src")
    tokens = torch.randint(3, 96, (4, 20), generator=torch.Generator().manual_seed(0))
    reference = torch.log_softmax(logits(model, tokens), -1)

    def kl(folder: Path) -> float:
        got = torch.log_softmax(logits(folder, tokens), -1)
        return (reference.exp() * (reference - got)).sum(-1).mean().item()

    report = prunenet.compress(src, tmp_path / "default", ratio=0.4, progress=False, probe_tokens=2048, probe_length=32)
    assert report["options"]["selector"] == "activation" and report["options"]["repair"] == "lsq"
    assert report["probes"]["tokens"] == 2048 and report["probes"]["source"] == "self"
    prunenet.compress(src, tmp_path / "random", ratio=0.4, selector="random", repair="none", progress=False)
    provenance = json.loads((tmp_path / "default" / "prunenet.json").read_text())
    assert provenance["repair"] == "lsq" and provenance["probes"]["tokens"] == 2048
    assert kl(tmp_path / "default") < kl(tmp_path / "random")


@pytest.mark.parametrize("name", ["llama-mlp-bias", "opt", "gemma3_text"])
@pytest.mark.parametrize("statistics", ["oneshot", "sequential"])
def test_every_selector_with_repair_writes_a_loadable_model(name, statistics, tmp_path):
    src = save_model(build_model(name), tmp_path / "src")
    for selector in ("obs", "random"):
        out = tmp_path / f"{selector}"
        report = prunenet.compress(src, out, ratios=[0.25, 0.5], selector=selector, statistics=statistics,
                                   progress=False, **PROBES)
        for output in report["outputs"]:
            assert logits(output["out"], torch.tensor([[3, 4, 5, 6]])).isfinite().all()
            kept = json.loads((Path(output["out"]) / "prunenet.json").read_text())["kept_rows"]
            assert all(len(rows) == output["ffn_width_after"] for rows in kept)


def test_repair_changes_only_the_output_matrices(tmp_path):
    src = save_model(build_model("opt"), tmp_path / "src")
    prunenet.compress(src, tmp_path / "none", ratio=0.3, repair="none", progress=False, **PROBES)
    prunenet.compress(src, tmp_path / "lsq", ratio=0.3, repair="lsq", progress=False, **PROBES)
    plain, refit = (load_file(str(tmp_path / f / "model.safetensors")) for f in ("none", "lsq"))
    changed = {name for name in plain if not torch.equal(plain[name], refit[name])}
    assert changed and all(".fc2." in name for name in changed)
    assert any(name.endswith("fc2.bias") for name in changed)  # OPT's output matrix has a bias: refitted too


def test_scores_file_slices_like_a_direct_compress(tmp_path):
    src = save_model(build_model("qwen2"), tmp_path / "src")
    scores = tmp_path / "scores.safetensors"
    report = prunenet.score(src, scores, repair="lsq", progress=False, **PROBES)  # slicing options are accepted
    assert report["selector"] == "activation" and report["probes"]["tokens"] == 256
    direct = prunenet.compress(src, tmp_path / "direct", ratio=0.3, repair="none", progress=False, **PROBES)
    stored = prunenet.compress(src, tmp_path / "stored", ratio=0.3, repair="lsq", scores=scores, progress=False)
    assert direct["outputs"][0]["ffn_width_after"] == stored["outputs"][0]["ffn_width_after"]
    kept = [json.loads((tmp_path / f / "prunenet.json").read_text())["kept_rows"] for f in ("direct", "stored")]
    assert kept[0] == kept[1]
    assert stored["probes"]["from_scores"] == str(scores)  # the repair reused the stored probes
    # Sequential statistics rank per ratio: the stored ranking is not used, its probes are.
    again = prunenet.compress(src, tmp_path / "seq", ratio=0.3, statistics="sequential", scores=scores,
                              progress=False)
    assert again["probes"]["from_scores"] == str(scores) and again["outputs"][0]["ffn_width_after"] == 28
    with pytest.raises(ValueError, match="selector 'activation', not 'obs'"):
        prunenet.compress(src, tmp_path / "x", ratio=0.3, selector="obs", scores=scores, progress=False)
    with pytest.raises(TypeError, match="bogus"):
        prunenet.score(src, tmp_path / "y.safetensors", bogus=1, progress=False)


def test_self_probes_are_seeded_cached_and_full_length(tmp_path):
    src = save_model(build_model("llama"), tmp_path / "src")
    checkpoint = Checkpoint(src)
    options = ProbeConfig(tokens=96, length=24)
    first = get_probes(checkpoint, options, 3, tmp_path / "c", torch.device("cpu"))
    again = get_probes(checkpoint, options, 3, tmp_path / "c", torch.device("cpu"))
    other = get_probes(checkpoint, options, 4, tmp_path / "c", torch.device("cpu"))
    assert first.tokens.shape == (4, 24) and not first.info["cached"] and again.info["cached"]
    assert torch.equal(first.tokens, again.tokens) and not torch.equal(first.tokens, other.tokens)
    assert (first.tokens[:, 0] == tiny_tokenizer().bos_token_id).all()  # from BOS; the model picks the rest
    assert 0 < first.info["distinct_share_mean"] <= 1


def test_probe_files_plain_and_jsonl(tmp_path):
    tokenizer = tiny_tokenizer()
    words = " ".join(f"w{3 + i % 90}" for i in range(100))
    (tmp_path / "p.txt").write_text(words)
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"text": words}) for _ in range(3)))
    plain = tokens_from_file(tmp_path / "p.txt", tokenizer, ProbePlan(str(tmp_path / "p.txt"), 64, 16, 0))
    assert plain.shape == (4, 16) and plain[0, 0].item() == 3
    jsonl = tokens_from_file(tmp_path / "p.jsonl", tokenizer, ProbePlan(str(tmp_path / "p.jsonl"), 500, 50, 0))
    assert jsonl.shape == (6, 50)  # 3 x (100 words + EOS) = 303 tokens -> 6 full sequences


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


BAD_PROBES = {
    "missing-file": (lambda d: ["--probes", str(d / "nope.txt")], "does not exist"),
    "empty-file": (lambda d: ["--probes", str(_write(d / "empty.txt", b""))], "is empty"),
    "binary-file": (lambda d: ["--probes", str(_write(d / "bin.txt", b"w3 \x00\x01 w4"))], "binary"),
    "not-utf8": (lambda d: ["--probes", str(_write(d / "latin.txt", b"\xff\xfe w3"))], "not UTF-8"),
    "too-short": (lambda d: ["--probes", str(_write(d / "short.txt", b"w3 w4 w5")), "--probe-length", "16"],
                  "fewer than one sequence"),
    "jsonl-no-text": (lambda d: ["--probes", str(_write(d / "p.jsonl", b'{"t": 1}\n'))], "no string field"),
    "budget-zero": (lambda d: ["--probe-tokens", "0"], "must be positive"),
    "budget-negative": (lambda d: ["--probe-tokens", "-5"], "must be positive"),
    "length-over-context": (lambda d: ["--probe-length", "65"], "exceeds the model's context of 64"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD_PROBES))
def test_bad_probe_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    src = save_model(build_model("llama"), tmp_path / "src")
    data = tmp_path / "data"
    data.mkdir()
    make_args, message = BAD_PROBES[case]
    args = make_args(data)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(["compress", str(src), "--ratio", "0.3", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert _snapshot(tmp_path) == before


def test_a_checkpoint_without_tokenizer_cannot_write_probes(tmp_path, capsys):
    src = save_model(build_model("llama"), tmp_path / "src", tokenizer=False)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(["compress", str(src), "--ratio", "0.3", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tokenizer" in err[0], err
    assert _snapshot(tmp_path) == before
    # A weights-only selector with no repair needs no tokenizer.
    assert main(["compress", str(src), "--ratio", "0.3", "--out", str(tmp_path / "out"), "--selector", "random",
                 "--repair", "none", "--quiet"]) == 0

