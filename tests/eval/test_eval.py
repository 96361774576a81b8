"""prunenet.eval on tiny random LLaMA models: metrics checked against independent computations.

The models come from tests/tiny_models.py (vocabulary 96, context 64) with its `corpus_tokenizer`, a
96-token BPE tokenizer trained on the default corpus, so that the original's tokenizer fits every model.
"""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import read_json
from tiny_models import build_model, corpus_tokenizer, save_model

import prunenet
from prunenet.eval import ThroughputSettings, evaluate
from prunenet.eval.cli import add_eval_parser, run_eval
from prunenet.eval.corpus import default_text, encode_prefix

WINDOW = 32
TOKENS = 150  # not a multiple of WINDOW: the last window is shorter
FAST = ThroughputSettings(batch=1, seq_len=16, prompt_len=8, new_tokens=4, repeats=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(original, compressed at ratio 0.5 by random rows): model folders with the tokenizer."""
    root = tmp_path_factory.mktemp("eval-models")
    original = save_model(build_model("llama", seed=0), root / "original", tokenizer=corpus_tokenizer())
    compressed = root / "compressed"
    prunenet.compress(original, compressed, ratio=0.5, selector="random", repair="none", progress=False)
    return original, compressed


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-text") / "text.txt"
    path.write_text(default_text()[20_000:30_000], encoding="utf-8")
    return path


def reference_windows(folder, text: str) -> list[torch.Tensor]:
    """The test's own windows: the whole text tokenized (no prefix shortcut), cut every WINDOW tokens."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"][:TOKENS]
    return [torch.tensor(ids[i : i + WINDOW])[None] for i in range(0, len(ids), WINDOW)]


def reference_logprobs(folder, windows) -> list[torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return [F.log_softmax(model(w).logits[0, :-1], dim=-1) for w in windows]


def test_model_against_itself_and_a_compressed_one(models):
    original, compressed = models
    report = evaluate(original, [original, compressed], tokens=TOKENS, window=WINDOW, throughput=False, device="cpu")
    base, itself, small = report["models"]
    assert [m["role"] for m in report["models"]] == ["original", "compressed", "compressed"]
    assert base["kl"] is None and base["agreement"] is None
    assert itself["kl"] == pytest.approx(0.0, abs=1e-6)
    assert itself["agreement"] == 1.0
    assert itself["perplexity"] == pytest.approx(base["perplexity"], rel=1e-6)
    assert small["kl"] > 1e-3
    assert small["agreement"] < 1.0
    assert (small["ratio"], small["selector"], small["ffn_width"]) == (0.5, "random", 20)
    assert small["parameters"] < base["parameters"]
    assert report["corpus"]["tokens"] == TOKENS
    assert report["corpus"]["windows"] == math.ceil(TOKENS / WINDOW)
    assert report["corpus"]["predicted_tokens"] == TOKENS - report["corpus"]["windows"]


def test_models_are_compared_one_at_a_time(models, monkeypatch):
    import gc
    import weakref

    from prunenet.eval import evaluation

    original, compressed = models
    alive: weakref.WeakSet = weakref.WeakSet()
    most = []
    load = evaluation.load_model

    def counted(name, device, progress):
        gc.collect()
        most.append(len(alive))  # models still held when the next one is loaded
        loaded = load(name, device, progress)
        alive.add(loaded.model)
        return loaded

    monkeypatch.setattr(evaluation, "load_model", counted)
    report = evaluate(original, [compressed] * 4, tokens=TOKENS, window=WINDOW, throughput=False, device="cpu")
    assert len(report["models"]) == 5 and len({round(m["kl"], 9) for m in report["models"][1:]}) == 1
    assert most == [0, 0, 0, 0, 0]


def test_metrics_equal_an_independent_computation(models, text_file):
    original, compressed = models
    report = evaluate(original, [compressed], text=text_file, tokens=TOKENS, window=WINDOW, throughput=False,
                      device="cpu")
    windows = reference_windows(original, text_file.read_text(encoding="utf-8"))
    base = reference_logprobs(original, windows)
    small = reference_logprobs(compressed, windows)
    targets = [w[0, 1:] for w in windows]
    count = sum(t.numel() for t in targets)
    nll = -sum(lp.gather(1, t[:, None]).sum() for lp, t in zip(base, targets)).item() / count
    kl = sum(F.kl_div(s, b, log_target=True, reduction="sum") for b, s in zip(base, small)).item() / count
    agree = sum((b.argmax(-1) == s.argmax(-1)).sum() for b, s in zip(base, small)).item() / count
    got_base, got_small = report["models"]
    assert got_base["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert got_small["kl"] == pytest.approx(kl, rel=1e-4)
    assert got_small["agreement"] == pytest.approx(agree)
    assert report["corpus"]["source"] == str(text_file)


def test_prefix_tokenization_matches_the_whole_text(models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models[0])
    text = default_text()[:40_000]
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    for tokens in (1, 100, 1000, len(whole), len(whole) + 10):
        assert encode_prefix(tokenizer, text, tokens) == whole[:tokens]


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunenet")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_writes_valid_json_and_a_table(models, tmp_path, capsys):
    original, compressed = models
    out = tmp_path / "eval.json"
    args = eval_parser().parse_args([
        "eval", str(original), str(compressed), "--tokens", "64", "--window", "32", "--prefill-len", "16",
        "--decode-prompt", "8", "--decode-tokens", "4", "--repeats", "1", "--device", "cpu", "--json", str(out),
        "--quiet",
    ])
    returned = run_eval(args)
    report = read_json(out)
    assert report == json.loads(json.dumps(returned))
    assert report["throughput_settings"] == {"batch": 1, "seq_len": 16, "prompt_len": 8, "new_tokens": 4, "repeats": 1}
    for model in report["models"]:
        assert model["throughput"]["prefill_tokens_per_s"] > 0
        assert model["throughput"]["decode_tokens_per_s"] > 0
    printed = capsys.readouterr().out
    assert "| model" in printed and str(compressed) in printed


@pytest.mark.parametrize("case", ["missing-model", "tokens", "window", "text-missing", "text-binary",
                                  "tasks", "compressed-str", "context", "speed"])
def test_bad_input_names_the_value(models, tmp_path, case):
    original, compressed = models
    kwargs = dict(throughput=False, device="cpu")
    if case == "missing-model":
        args, match, error = (original, [tmp_path / "nope"]), "nope", ValueError
    elif case == "tokens":
        args, match, error = (original, [compressed]), "tokens=1", ValueError
        kwargs["tokens"] = 1
    elif case == "window":
        args, match, error = (original, [compressed]), "window=1", ValueError
        kwargs["window"] = 1
    elif case == "text-missing":
        args, match, error = (original, [compressed]), "absent.txt", ValueError
        kwargs["text"] = tmp_path / "absent.txt"
    elif case == "text-binary":
        (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 10)
        args, match, error = (original, [compressed]), "binary.txt", ValueError
        kwargs["text"] = tmp_path / "binary.txt"
    elif case == "tasks":
        args, match, error = (original, [compressed]), "names no task", ValueError
        kwargs["tasks"] = " , "
    elif case == "compressed-str":
        args, match, error = (original, str(compressed)), "compressed must be a list", TypeError
    elif case == "context":  # tiny models have a 64-token context
        args, match, error = (original, [compressed]), "window 128", ValueError
        kwargs["window"] = 128
    else:
        args, match, error = (original, [compressed]), "decode new tokens=0", ValueError
        kwargs["throughput"] = ThroughputSettings(new_tokens=0)
    with pytest.raises(error, match=match):
        evaluate(*args, **kwargs)


TASK_YAML = """\
task: prunenet_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: brier_score
    aggregation: brier_score
    higher_is_better: false
"""


def write_task(folder) -> str:
    folder.mkdir()
    data = folder / "tiny_mc.jsonl"
    words = ["the", "module", "class", "function", "value", "error"]
    with data.open("w", encoding="utf-8") as f:
        for i in range(12):
            choices = [words[(i + j) % len(words)] for j in range(3)]
            record = {"question": f"A {words[i % 6]} is a kind of", "choices": choices, "label": i % 3}
            f.write(json.dumps(record) + "\n")
    (folder / "tiny_mc.yaml").write_text(TASK_YAML.format(data=data), encoding="utf-8")
    return "prunenet_tiny_mc"


def test_lm_eval_task_offline(models, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    original, compressed = models
    task = write_task(tmp_path / "tasks")
    report = evaluate(original, [compressed], tokens=64, window=32, throughput=False, tasks=task,
                      task_include_path=tmp_path / "tasks", device="cpu")
    assert report["tasks"] == [task]
    # lm-eval loading each model from its folder must score the same; the Brier score (a continuous
    # function of the choices' likelihoods) tells the two models apart where accuracy may tie.
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    for model in report["models"]:
        ours = model["tasks"][task]
        assert 0.0 <= ours["acc"] <= 1.0 and ours["acc"] * 12 == pytest.approx(round(ours["acc"] * 12))
        theirs = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": model["path"], "device": "cpu",
                                                                 "dtype": "float32"},
                                         tasks=[task], task_manager=manager, log_samples=False)
        for metric in ("acc", "brier_score"):
            assert ours[metric] == pytest.approx(theirs["results"][task][f"{metric},none"], rel=1e-5)
    original_brier, compressed_brier = (model["tasks"][task]["brier_score"] for model in report["models"])
    assert original_brier != pytest.approx(compressed_brier, rel=1e-4)


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectra_are_the_scored_matrices_singular_values(models):
    from prunenet.eval.spectra import ks_per_layer, scored_spectra

    original, compressed = models
    model = build_model("llama", seed=0)
    expected = torch.stack([torch.linalg.svdvals(layer.mlp.gate_proj.weight.double()) for layer in model.model.layers])
    got = scored_spectra(original)
    torch.testing.assert_close(got, expected.flip(-1).float())
    assert torch.all(got[:, 1:] >= got[:, :-1])
    small = scored_spectra(compressed)
    assert small.shape == (3, 20)
    assert torch.all(ks_per_layer(got, got) == 0)
    assert torch.all(ks_per_layer(got, small) > 0)


def test_plots_are_png(models, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    original, compressed = models
    fit = prunenet.fit(original, ratio=0.5, episodes=3, json_path=tmp_path / "fit.json", progress=False)
    assert len(fit.report["fit"]["reward_per_episode"]) == 3
    quality = evaluate(original, [compressed], tokens=64, window=32, throughput=False, device="cpu",
                       json_path=tmp_path / "eval.json")
    assert quality["models"][1]["ratio"] == 0.5
    pictures = tmp_path / "pictures"
    run_eval(eval_parser().parse_args([
        "plot", "--out", str(pictures), "--spectra", str(original), str(compressed),
        "--fit-report", str(tmp_path / "fit.json"), "--quality", str(tmp_path / "eval.json"),
    ]))
    for name in ("spectra.png", "rewards.png", "quality.png"):
        assert is_png(pictures / name), name
    with pytest.raises(ValueError, match="needs at least one"):
        run_eval(eval_parser().parse_args(["plot", "--out", str(pictures)]))
    with pytest.raises(ValueError, match="no fit"):
        run_eval(eval_parser().parse_args(["plot", "--out", str(pictures),
                                           "--fit-report", str(tmp_path / "eval.json")]))
