"""Probes: the model's own generations (seeded, cached, from BOS) or a text file; bad probe input refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import cli_error, snapshot
from tiny_models import build_model, chat_tokenizer, corpus_tokenizer, save_model, tiny_tokenizer

from prunenet.calibration import probes as probes_module
from prunenet.calibration.probes import ProbePlan, from_current_sampler, get_probes, tokens_from_file
from prunenet.cli import main
from prunenet.config import ProbeConfig
from prunenet.model.checkpoint import Checkpoint

pytestmark = pytest.mark.usefixtures("own_cache")


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
    # Their info names the sampler, read from the cache as well (entries written before it was named too).
    assert first.info["sampler"] == again.info["sampler"] == probes_module.SAMPLER
    assert from_current_sampler(first.info) and not from_current_sampler({**first.info, "sampler": "older"})


def test_a_lower_temperature_writes_likelier_probes_cached_apart(tmp_path):
    src = save_model(build_model("llama"), tmp_path / "src")
    checkpoint, cpu = Checkpoint(src), torch.device("cpu")
    plain = get_probes(checkpoint, ProbeConfig(tokens=96, length=24), 0, tmp_path / "c", cpu)
    cool = get_probes(checkpoint, ProbeConfig(tokens=96, length=24, temperature=0.3), 0, tmp_path / "c", cpu)
    assert not cool.info["cached"] and cool.info["temperature"] == 0.3 and plain.info["temperature"] == 1.0
    # Sharper sampling repeats the model's likeliest continuations: fewer distinct tokens per sequence.
    assert cool.info["distinct_share_mean"] < plain.info["distinct_share_mean"]
    assert get_probes(checkpoint, ProbeConfig(tokens=96, length=24, temperature=0.3), 0, tmp_path / "c",
                      cpu).info["cached"]


def test_probes_are_written_in_bfloat16_unless_asked_and_cached_apart(tmp_path, monkeypatch):
    src = save_model(build_model("llama"), tmp_path / "src")
    checkpoint, cpu = Checkpoint(src), torch.device("cpu")
    loaded, load = [], probes_module.load_generator
    monkeypatch.setattr(probes_module, "load_generator", lambda *a: loaded.append(load(*a)) or loaded[-1])
    plain = get_probes(checkpoint, ProbeConfig(tokens=96, length=24), 0, tmp_path / "c", cpu)
    full = get_probes(checkpoint, ProbeConfig(tokens=96, length=24, dtype="float32"), 0, tmp_path / "c", cpu)
    assert [next(m.parameters()).dtype for m in loaded] == [torch.bfloat16, torch.float32]  # on a CPU too
    assert (plain.info["dtype"], full.info["dtype"]) == ("bfloat16", "float32")
    assert not full.info["cached"] and full.tokens.shape == (4, 24)
    # auto is bfloat16: the same probes as asking for it.
    again = get_probes(checkpoint, ProbeConfig(tokens=96, length=24, dtype="bfloat16"), 0, tmp_path / "c", cpu)
    assert again.info["cached"] and torch.equal(again.tokens, plain.tokens)


@pytest.mark.parametrize("family, length, expected", [("llama", 100, 2 * 3 * 1 * 12 * 100 * 4),
                                                       ("opt", 50, 2 * 3 * 2 * 12 * 50 * 4)])
def test_sequences_per_call_fill_the_kv_budget(family, length, expected):
    model = build_model(family)  # llama: 3 layers, 1 KV head of 12; opt: 2 heads of 12; float32
    assert probes_module.sequences_per_call(model, length, budget=10 * expected) == 10
    assert probes_module.sequences_per_call(model, length, budget=expected - 1) == 1


def test_chat_start_probes_are_a_question_the_model_asks_then_its_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(probes_module, "QUESTION_TOKENS", 8)  # room for the answer in the tiny model's context
    tokenizer = chat_tokenizer()
    src = save_model(build_model("llama"), tmp_path / "src", tokenizer=tokenizer)
    options = ProbeConfig(tokens=192, length=48, start="chat")
    probes = get_probes(Checkpoint(src), options, 0, tmp_path / "c", torch.device("cpu"))
    assert probes.tokens.shape == (4, 48) and probes.info["start"] == "chat"
    for row in probes.tokens.tolist():
        assert row[:2] == [5, 6]  # the template's opening of the user turn
        # The question the model wrote (at most 8 tokens), then the template's end of turn and answer opening.
        assert any(row[i: i + 3] == [2, 7, 8] for i in range(2, 2 + 8 + 1)), row
    again = get_probes(Checkpoint(src), options, 0, tmp_path / "other", torch.device("cpu"))
    assert torch.equal(probes.tokens, again.tokens)  # seeded
    tokenizer.chat_template = tokenizer.chat_template.replace("w7 w8", "w9")
    retemplated = save_model(build_model("llama"), tmp_path / "retemplated", tokenizer=tokenizer)
    assert not get_probes(Checkpoint(retemplated), options, 0, tmp_path / "c", torch.device("cpu")).info["cached"]
    with pytest.raises(ValueError, match="context of 56 tokens"):  # 64 less the questions' bound
        get_probes(Checkpoint(src), ProbeConfig(tokens=128, length=64, start="chat"), 0, tmp_path / "c",
                   torch.device("cpu"))
    plain = save_model(build_model("llama"), tmp_path / "plain")
    with pytest.raises(ValueError, match="needs a chat template"):
        get_probes(Checkpoint(plain), options, 0, tmp_path / "plain-cache", torch.device("cpu"))


def test_another_model_of_the_same_tokenizer_can_write_the_probes(tmp_path):
    src = save_model(build_model("llama"), tmp_path / "src")
    writer = save_model(build_model("llama", seed=1), tmp_path / "writer")
    options = ProbeConfig(tokens=96, length=24)
    own = get_probes(Checkpoint(src), options, 0, tmp_path / "c", torch.device("cpu"))
    written = get_probes(Checkpoint(src), ProbeConfig(tokens=96, length=24, model=str(writer)), 0, tmp_path / "c",
                         torch.device("cpu"))
    assert written.info["writer"] == str(writer) and not written.info["cached"]  # its own cache entry
    assert written.tokens.shape == own.tokens.shape and not torch.equal(written.tokens, own.tokens)
    stranger = save_model(build_model("llama"), tmp_path / "stranger", tokenizer=corpus_tokenizer())
    with pytest.raises(ValueError, match="another tokenizer"):
        get_probes(Checkpoint(src), ProbeConfig(tokens=96, length=24, model=str(stranger)), 0, tmp_path / "c",
                   torch.device("cpu"))
    with pytest.raises(ValueError, match="writes self probes"):
        ProbeConfig(source=str(src / "config.json"), model=str(writer)).validate()


def test_probe_files_plain_and_jsonl(tmp_path):
    tokenizer = tiny_tokenizer()
    words = " ".join(f"w{3 + i % 90}" for i in range(100))
    (tmp_path / "p.txt").write_text(words)
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"text": words}) for _ in range(3)))
    plain = tokens_from_file(tmp_path / "p.txt", tokenizer, ProbePlan(str(tmp_path / "p.txt"), 64, 16, 0))
    assert plain.shape == (4, 16) and plain[0, 0].item() == 3
    jsonl = tokens_from_file(tmp_path / "p.jsonl", tokenizer, ProbePlan(str(tmp_path / "p.jsonl"), 500, 50, 0))
    assert jsonl.shape == (6, 50)  # 3 x (100 words + EOS) = 303 tokens -> 6 full sequences


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
    before = snapshot(tmp_path)
    cli_error(capsys, ["compress", str(src), "--ratio", "0.3", "--out", str(tmp_path / "out"), *args], [message])
    assert snapshot(tmp_path) == before


def test_a_checkpoint_without_tokenizer_cannot_write_probes(tmp_path, capsys):
    src = save_model(build_model("llama"), tmp_path / "src", tokenizer=False)
    before = snapshot(tmp_path)
    cli_error(capsys, ["compress", str(src), "--ratio", "0.3", "--out", str(tmp_path / "out")], ["tokenizer"])
    assert snapshot(tmp_path) == before
    # A weights-only selector with no repair needs no tokenizer.
    assert main(["compress", str(src), "--ratio", "0.3", "--out", str(tmp_path / "out"), "--selector", "random",
                 "--repair", "none", "--quiet"]) == 0

