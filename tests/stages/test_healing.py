"""Self-distillation healing on tiny random Llama models: a teacher, and a student sliced from it here."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import transformers as T
from tiny_models import tiny_tokenizer

from prunenet import healing
from prunenet.healing import (
    HealConfig,
    distill_kl,
    full_kl,
    heal,
    parameter_groups,
    reduced_kl,
    resolved_precision,
    teacher_targets,
    teacher_text,
)

HIDDEN, FFN, LAYERS, VOCAB, LENGTH = 32, 64, 2, 128, 32


def tokenizer() -> T.PreTrainedTokenizerFast:
    return tiny_tokenizer(VOCAB)


def config(ffn: int) -> T.LlamaConfig:
    # A wide initialisation gives the random teacher peaked next-token distributions, so that slicing
    # costs a KL worth healing (the default 0.02 leaves them near uniform).
    return T.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=ffn, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         initializer_range=0.3, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared CPU: a second thread only adds synchronisation (measured 20x slower at 2).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return T.LlamaForCausalLM(config(FFN)).eval()


def sliced(teacher: torch.nn.Module) -> torch.nn.Module:
    """Half of every FFN kept: the even rows of gate and up, the same columns of down."""
    keep = torch.arange(0, FFN, 2)
    student = T.LlamaForCausalLM(config(len(keep))).eval()
    state = {}
    for name, value in teacher.state_dict().items():
        if name.endswith(("gate_proj.weight", "up_proj.weight")):
            value = value[keep]
        elif name.endswith("down_proj.weight"):
            value = value[:, keep]
        state[name] = value.clone()
    student.load_state_dict(state)
    return student


@pytest.fixture(scope="module")
def texts(teacher):
    tok = tokenizer()
    train = teacher_text(teacher, tok, sequences=64, length=LENGTH, seed=1)
    held_out = teacher_text(teacher, tok, sequences=16, length=LENGTH, seed=2)
    return train, held_out


def quick(**changes) -> HealConfig:
    base = {"tokens": 8192, "length": LENGTH, "batch_size": 8, "lr": 3e-2, "seed": 0}
    return HealConfig(**{**base, **changes})


def test_teacher_text_is_seeded_full_length_and_starts_from_bos(teacher, texts):
    train, held_out = texts
    assert train.shape == (64, LENGTH) and train.dtype == torch.int64
    assert (train[:, 0] == 1).all()  # BOS
    assert not (train[:, 1:] == 2).any()  # EOS suppressed: every sequence runs to its full length
    again = teacher_text(teacher, tokenizer(), sequences=64, length=LENGTH, seed=1)
    assert torch.equal(train, again)
    assert not torch.equal(train[:16], held_out)


@pytest.mark.parametrize("top_k, precision", [(0, "float32"), (16, "float32"), (16, "bfloat16")])
def test_healing_lowers_held_out_kl(teacher, texts, top_k, precision):
    train, held_out = texts
    student = sliced(teacher)
    before = distill_kl(student, teacher, held_out)
    report = heal(student, teacher, train, quick(top_k=top_k, precision=precision))
    after = distill_kl(student, teacher, held_out)
    assert {p.dtype for p in student.parameters()} == {torch.float32}  # bfloat16 only inside the products
    assert before > 0.05, before  # slicing half the FFN costs something to heal
    assert after < 0.75 * before, (before, after)  # measured: 1.01 -> 0.63 (full), 0.645 (top-16), 0.649 (bf16)
    assert report["steps"] == 8192 // (8 * LENGTH) and report["tokens"] == 8192
    assert report["epochs"] == 4.0  # 64 sequences of 32 tokens: the text is cycled 4 times
    assert report["kl_last"] < report["kl_first"]


def test_same_seed_gives_identical_weights(teacher, texts):
    train, _ = texts
    runs = []
    for seed in (0, 0, 1):
        student = sliced(teacher)
        heal(student, teacher, train, quick(tokens=2048, seed=seed))
        runs.append(student.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])  # the seed orders the text


def _expected(name: str, train: str) -> bool:
    ffn, norm = ".mlp." in name, "norm" in name
    return {"ffn_norms": ffn or norm, "ffn": ffn, "norms": norm, "all": True}[train]


@pytest.mark.parametrize("train", ["ffn_norms", "ffn", "norms", "all"])
def test_only_the_chosen_parameters_change(teacher, texts, train):
    text, _ = texts
    student = sliced(teacher)
    student.model.embed_tokens.weight.requires_grad_(False)  # flags are the caller's: heal restores them
    before = copy.deepcopy(student.state_dict())
    teacher_before = copy.deepcopy(teacher.state_dict())
    report = heal(student, teacher, text, quick(tokens=1024, train=train))
    after = student.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    expected = {name for name in before if _expected(name, train)}
    assert changed == expected
    assert report["trained_parameters"] == sum(before[name].numel() for name in expected)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    flags = {name: p.requires_grad for name, p in student.named_parameters()}
    assert flags.pop("model.embed_tokens.weight") is False and all(flags.values())
    assert all(p.grad is None for p in student.parameters())


def test_lora_trains_low_rank_updates_of_the_ffn_and_merges_them(teacher, texts):
    train, held_out = texts
    student = sliced(teacher)
    before = copy.deepcopy(student.state_dict())
    kl_before = distill_kl(student, teacher, held_out)
    report = heal(student, teacher, train, quick(train="lora", lora_rank=2))
    after = student.state_dict()
    assert list(after) == list(before)  # merged: the model's own modules and names again
    assert all(type(m).__name__ != "ParametrizationList" for m in student.modules())
    ffn = [name for name in before if ".mlp." in name]
    assert len(ffn) == 3 * LAYERS
    for name in ffn:
        update = after[name] - before[name]
        assert update.abs().max() > 0, name
        assert torch.linalg.matrix_rank(update, rtol=1e-4).item() <= 2, name
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in before if ".mlp." in name or "norm" in name}
    norms = sum(before[name].numel() for name in before if "norm" in name)
    assert report["trained_parameters"] == norms + sum(2 * sum(before[name].shape) for name in ffn)
    assert all(p.requires_grad and p.grad is None for p in student.parameters())
    assert distill_kl(student, teacher, held_out) < 0.9 * kl_before


def test_lora_runs_are_seeded(teacher, texts):
    train, _ = texts
    runs = []
    for seed in (0, 0, 1):
        student = sliced(teacher)
        heal(student, teacher, train, quick(tokens=1024, train="lora", lora_rank=2, seed=seed))
        runs.append(student.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_parameter_groups_cover_every_parameter_once(teacher):
    groups = parameter_groups(teacher)
    names = [n for group in groups.values() for n in group]
    assert sorted(names) == sorted(n for n, _ in teacher.named_parameters())
    assert len(groups["ffn"]) == 3 * LAYERS and len(groups["norms"]) == 2 * LAYERS + 1


def test_parameter_groups_find_ffn_matrices_held_by_the_layer_itself():
    opt = T.OPTForCausalLM(T.OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, ffn_dim=FFN,
                                       num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=HIDDEN))
    groups = parameter_groups(opt)
    assert sorted(groups["ffn"]) == sorted(f"model.decoder.layers.{i}.{m}.{p}" for i in range(LAYERS)
                                           for m in ("fc1", "fc2") for p in ("weight", "bias"))
    assert all("layer_norm" in name for name in groups["norms"])


def test_bfloat16_teacher_targets_are_the_float32_ones_within_rounding(teacher, texts):
    train, _ = texts
    exact = teacher_targets(teacher, train[:8], LENGTH, 16)
    rounded = teacher_targets(teacher, train[:8], LENGTH, 16, precision="bfloat16")
    assert rounded.logprobs.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: log-probabilities of a few nats move by a few hundredths.
    top = exact.indices[..., 0] == rounded.indices[..., 0]
    assert top.float().mean() > 0.9
    torch.testing.assert_close(rounded.logprobs[..., 0][top], exact.logprobs[..., 0][top], atol=0.1, rtol=0.05)


def test_reduced_kl_is_a_lower_bound_and_exact_with_one_token_left():
    torch.manual_seed(3)
    teacher_logits, student_logits = torch.randn(2, 5, VOCAB) * 3, torch.randn(2, 5, VOCAB) * 3
    teacher_net = _Fixed(teacher_logits)
    tokens = torch.zeros(2, 6, dtype=torch.long)
    exact = full_kl(student_logits, teacher_logits)
    for k in (1, 8, VOCAB - 1):
        targets = teacher_targets(teacher_net, tokens, length=6, top_k=k)
        reduced = reduced_kl(student_logits, targets)
        assert (reduced <= exact + 1e-5).all()
        if k == VOCAB - 1:
            torch.testing.assert_close(reduced, exact, atol=1e-4, rtol=1e-4)


class _Fixed(torch.nn.Module):
    """A 'model' whose logits are given: position t of the (B, 6) input gets logits[:, t] (last is padding)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.cat([logits, logits[:, -1:]], dim=1))
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        return T.modeling_outputs.CausalLMOutput(logits=self.logits[: input_ids.shape[0]])


@pytest.mark.parametrize("units, auto", [(True, "bfloat16"), (False, "float32")])
def test_auto_precision_is_bfloat16_only_where_the_device_has_the_units(monkeypatch, units, auto):
    monkeypatch.setattr(healing, "has_bfloat16_units", lambda device: units)
    cpu = torch.device("cpu")
    assert resolved_precision("auto", cpu) == auto
    assert [resolved_precision(p, cpu) for p in ("float32", "bfloat16")] == ["float32", "bfloat16"]  # as asked


@pytest.mark.parametrize("changes, message", [
    ({"tokens": 0}, "tokens=0"),
    ({"tokens": 100, "batch_size": 4, "length": 32}, "tokens=100"),
    ({"length": 1}, "length=1"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"lr": -1e-4}, "lr=-0.0001"),
    ({"lr": float("nan")}, "lr=nan"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ({"max_grad_norm": 0.0}, "max_grad_norm=0.0"),
    ({"warmup_steps": 99}, "warmup_steps=99"),
    ({"top_k": -5}, "top_k=-5"),
    ({"train": "attention"}, "train='attention'"),
    ({"lora_rank": 0}, "lora_rank=0"),
    ({"schedule": "linear"}, "schedule='linear'"),
    ({"precision": "float16"}, "precision='float16'"),
])
def test_bad_config_values_raise_value_error_naming_them(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        quick(**changes).validate()


@pytest.mark.parametrize("changes, message", [
    ({"tokens": 1.5}, "tokens"), ({"seed": True}, "seed"), ({"lr": "0.1"}, "lr"), ({"batch_size": None}, "batch_size"),
    ({"lora_rank": 2.0}, "lora_rank"),
])
def test_wrongly_typed_config_values_raise_type_error(changes, message):
    with pytest.raises(TypeError, match=message):
        quick(**changes).validate()


def test_heal_rejects_what_it_cannot_train(teacher, texts):
    train, _ = texts
    with pytest.raises(TypeError, match="float32"):
        heal(sliced(teacher).to(torch.bfloat16), teacher, train, quick(tokens=1024))
    with pytest.raises(ValueError, match="fewer than length=64"):
        heal(sliced(teacher), teacher, train, quick(tokens=1024, length=64, batch_size=1))
    with pytest.raises(ValueError, match=f"top_k={VOCAB}"):
        heal(sliced(teacher), teacher, train, quick(tokens=1024, top_k=VOCAB))
    targets = teacher_targets(teacher, train[:8], LENGTH, top_k=4)
    with pytest.raises(ValueError, match="do not match"):
        heal(sliced(teacher), teacher, train, quick(tokens=1024, top_k=4), targets=targets)


def test_schedules():
    cosine = quick(tokens=8 * 8 * LENGTH, warmup_steps=2)
    rates = [cosine.lr_at(s) for s in range(cosine.steps)]
    assert rates[0] < rates[1] < rates[2] == cosine.lr  # warm-up, then the full rate
    assert all(a > b for a, b in itertools.pairwise(rates[2:])) and rates[-1] > 0
    constant = quick(schedule="constant")
    assert {constant.lr_at(s) for s in range(constant.steps)} == {constant.lr}
