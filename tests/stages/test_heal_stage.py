"""`--heal-tokens`: self-distillation as a `compress` / `prune_` stage, after slicing and before writing."""
from __future__ import annotations

import pytest
import torch
from helpers import PROBES, assert_nothing_written, cli_error, read_json
from tiny_models import build_model, chat_tokenizer, logits, save_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

import prunenet
import prunenet.memory
from prunenet.calibration import probes as probes_module
from prunenet.healing import resolved_precision

pytestmark = pytest.mark.usefixtures("own_cache")
# The tiny models have 96 tokens: top-16 targets; a larger lr than the default so a few steps show.
HEAL = dict(heal_tokens=2048, heal_length=32, heal_top_k=16, heal_lr=1e-3)
HELD_OUT = torch.randint(3, 96, (4, 24), generator=torch.Generator().manual_seed(7))


def kl_to(src, folder) -> float:
    reference = torch.log_softmax(logits(src, HELD_OUT), -1)
    got = torch.log_softmax(logits(folder, HELD_OUT), -1)
    return (reference.exp() * (reference - got)).sum(-1).mean().item()


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return save_model(build_model("llama"), tmp_path_factory.mktemp("heal") / "src")


def test_healing_lowers_kl_keeps_the_rows_and_says_so(src, tmp_path):
    plain = prunenet.compress(src, tmp_path / "plain", ratio=0.4, progress=False, **PROBES)
    healed = prunenet.compress(src, tmp_path / "healed", ratio=0.4, progress=False, **PROBES, **HEAL)
    assert read_json(tmp_path / "healed" / "prunenet.json")["kept_rows"] == \
        read_json(tmp_path / "plain" / "prunenet.json")["kept_rows"]
    assert kl_to(src, tmp_path / "healed") < 0.95 * kl_to(src, tmp_path / "plain")
    report = healed["outputs"][0]["stages"]["heal"]
    assert report["steps"] == 2048 // (4 * 32) and report["kl_last"] < report["kl_first"]
    # The default: bfloat16 autocast products where the CPU has the units, float32 where it would emulate them.
    assert report["config"]["precision"] == "auto"
    assert report["precision"] == resolved_precision("auto", torch.device("cpu"))
    assert read_json(tmp_path / "healed" / "prunenet.json")["stages"]["heal"]["steps"] == report["steps"]
    assert plain["outputs"][0]["stages"] is None and "stages" in healed["timings_s"]
    # Only FFN matrices and norms train (the default): attention and embeddings are written as stored.
    before = AutoModelForCausalLM.from_pretrained(src).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "healed").state_dict()
    attention = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(before[attention], after[attention])
    assert not torch.equal(before["model.norm.weight"], after["model.norm.weight"])


def test_healing_in_float32_products_lowers_kl_too(src, tmp_path):
    prunenet.compress(src, tmp_path / "plain", ratio=0.4, progress=False, **PROBES)
    healed = prunenet.compress(src, tmp_path / "healed", ratio=0.4, progress=False, **PROBES, **HEAL,
                               heal_precision="float32")
    assert healed["outputs"][0]["stages"]["heal"]["precision"] == "float32"
    assert kl_to(src, tmp_path / "healed") < 0.95 * kl_to(src, tmp_path / "plain")


def test_healing_is_seeded_and_every_ratio_gets_its_own_student(src, tmp_path):
    for run in ("a", "b"):
        prunenet.compress(src, tmp_path / run, ratios=[0.25, 0.5], progress=False, **PROBES, **HEAL)
    for ratio in ("ratio-0.25", "ratio-0.5"):
        a = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / ratio).state_dict()
        b = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / ratio).state_dict()
        assert all(torch.equal(a[name], b[name]) for name in a)
    widths = {read_json(tmp_path / "a" / r / "config.json")["intermediate_size"] for r in ("ratio-0.25", "ratio-0.5")}
    assert len(widths) == 2


def test_prune_heals_in_place_as_compress_does(src, tmp_path):
    prunenet.compress(src, tmp_path / "out", ratio=0.4, progress=False, **PROBES, **HEAL)
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    report = prunenet.prune_(model, 0.4, tokenizer=tiny_tokenizer(), progress=False, **PROBES, **HEAL)
    assert report["outputs"][0]["stages"]["heal"]["steps"] == 16
    written = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, written[name], rtol=1e-4, atol=1e-5, msg=name)


def test_prune_refuses_to_heal_a_half_precision_model():
    model = build_model("llama").to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        prunenet.prune_(model, 0.4, tokenizer=tiny_tokenizer(), progress=False, **PROBES, **HEAL)


def test_a_model_the_stage_cannot_hold_is_refused_before_any_work(src, tmp_path, monkeypatch):
    monkeypatch.setattr(prunenet.memory, "available_bytes", lambda device: 1 << 10)
    with pytest.raises(ValueError, match=r"heal need the original and a compressed model whole on cpu: about"):
        prunenet.compress(src, tmp_path / "out", ratio=0.4, progress=False, **PROBES, **HEAL)
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("flags, says", [
    (["--heal-tokens", "-5"], "heal_tokens=-5"),
    (["--heal-tokens", "64", "--heal-length", "32"], "less than one step"),
    (["--heal-tokens", "4096", "--heal-lr", "0"], "heal_lr=0.0"),
    (["--heal-tokens", "4096", "--heal-train", "attention"], "attention"),
    (["--heal-tokens", "4096", "--heal-top-k", "-1"], "heal_top_k=-1"),
    (["--heal-tokens", "4096", "--heal-precision", "float16"], "float16"),
    (["--heal-tokens", "4096", "--heal-start", "eos"], "eos"),
    (["--heal-tokens", "4096", "--heal-temperature", "0"], "heal_temperature=0.0"),
    (["--heal-tokens", "4096", "--heal-start", "chat"], "needs a chat template"),  # the tiny tokenizer has none
    (["--heal-tokens", "many"], "many"),
])
def test_bad_heal_options_are_one_line_exit_2_and_nothing_written(src, tmp_path, capsys, flags, says):
    out = tmp_path / "out"
    cli_error(capsys, ["compress", str(src), "--ratio", "0.3", "--out", str(out), *flags], [says])
    assert_nothing_written(out)


def test_the_heal_text_is_written_as_asked_and_the_report_says_how(tmp_path, monkeypatch):
    monkeypatch.setattr(probes_module, "QUESTION_TOKENS", 8)  # room for the answer in the tiny model's context
    src = save_model(build_model("llama"), tmp_path / "src", tokenizer=chat_tokenizer())
    starts = {}
    for probe_start, heal_start in (("bos", "probes"), ("chat", "probes"), ("bos", "chat"), ("chat", "bos")):
        out = tmp_path / f"{probe_start}-{heal_start}"
        report = prunenet.compress(src, out, ratio=0.4, progress=False, **PROBES, **HEAL, probe_start=probe_start,
                                   heal_start=heal_start)
        assert report["probes"]["start"] == probe_start
        text = report["outputs"][0]["stages"]["heal"]["text"]
        assert text["tokens"] == HEAL["heal_tokens"] and text["length"] == HEAL["heal_length"]
        starts[probe_start, heal_start] = text["start"]
    assert starts == {("bos", "probes"): "bos", ("chat", "probes"): "chat", ("bos", "chat"): "chat",
                      ("chat", "bos"): "bos"}
    # The chat-start text trains another student than the bos-start text of the same probes.
    bos = AutoModelForCausalLM.from_pretrained(tmp_path / "bos-probes").state_dict()
    chat = AutoModelForCausalLM.from_pretrained(tmp_path / "bos-chat").state_dict()
    assert not torch.equal(bos["model.norm.weight"], chat["model.norm.weight"])
    cool = prunenet.compress(src, tmp_path / "cool", ratio=0.4, progress=False, **PROBES, **HEAL,
                             heal_temperature=0.5)
    assert cool["outputs"][0]["stages"]["heal"]["text"]["temperature"] == 0.5
    assert cool["probes"]["temperature"] == 1.0
    model = AutoModelForCausalLM.from_pretrained(src).eval()
    report = prunenet.prune_(model, 0.4, tokenizer=chat_tokenizer(), progress=False, **PROBES, **HEAL,
                             heal_start="chat", heal_temperature=0.5)
    text = report["outputs"][0]["stages"]["heal"]["text"]
    assert text["start"] == "chat" and text["temperature"] == 0.5


def test_the_heal_text_options_are_refused_with_probes_from_a_file(src, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{3 + i % 90}" for i in range(2000)), encoding="utf-8")
    out = tmp_path / "out"
    for flag, says in (("--heal-start", "heal_start='chat'"), ("--heal-temperature", "heal_temperature=0.7")):
        value = "chat" if flag == "--heal-start" else "0.7"
        cli_error(capsys, ["compress", str(src), "--ratio", "0.3", "--out", str(out), "--probes", str(text),
                           "--heal-tokens", "4096", flag, value], [says, "probe file"])
        assert_nothing_written(out)
