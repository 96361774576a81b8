"""Tiny random models of every supported family, built from config classes and saved as safetensors.

Also the two tokenizers the tests give them (a word-level one over the model's ids, and a BPE one trained
on the default evaluation corpus) and `save_tiny_llama`, the sharded LLaMA checkpoint of the checkpoint,
bad-input and reliability tests.
"""
from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

# Small but awkward: FFN width 40 and hidden 24 are not powers of two; 3 layers.
HIDDEN, FFN, LAYERS, VOCAB = 24, 40, 3, 96
_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
               max_position_embeddings=64)

CONFIGS = {
    "llama": lambda: T.LlamaConfig(**_COMMON, intermediate_size=FFN, num_key_value_heads=1),
    "llama-mlp-bias": lambda: T.LlamaConfig(**_COMMON, intermediate_size=FFN, num_key_value_heads=1, mlp_bias=True),
    "mistral": lambda: T.MistralConfig(**_COMMON, intermediate_size=FFN, num_key_value_heads=1),
    "qwen2": lambda: T.Qwen2Config(**_COMMON, intermediate_size=FFN, num_key_value_heads=1),
    "qwen3": lambda: T.Qwen3Config(**_COMMON, intermediate_size=FFN, num_key_value_heads=1, head_dim=12),
    "gemma": lambda: T.GemmaConfig(**_COMMON, intermediate_size=FFN, num_key_value_heads=1, head_dim=12),
    "gemma2": lambda: T.Gemma2Config(**_COMMON, intermediate_size=FFN, num_key_value_heads=1, head_dim=12),
    # sliding_window 4 < the test sequences, and layer_types mixing both kinds of attention
    "gemma3_text": lambda: T.Gemma3TextConfig(**_COMMON, intermediate_size=FFN, num_key_value_heads=1, head_dim=12,
                                              sliding_window=4, layer_types=["sliding_attention", "full_attention",
                                                                             "sliding_attention"]),
    "phi3": lambda: T.Phi3Config(**_COMMON, intermediate_size=FFN, num_key_value_heads=1, pad_token_id=0),
    "opt": lambda: T.OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, ffn_dim=FFN,
                               num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=HIDDEN),
    "phi": lambda: T.PhiConfig(**_COMMON, intermediate_size=FFN),
    "falcon": lambda: T.FalconConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=2, ffn_hidden_size=FFN, bias=True),
    "gpt_neox": lambda: T.GPTNeoXConfig(**_COMMON, intermediate_size=FFN),
}


def build_model(name: str, seed: int = 0, **config) -> torch.nn.Module:
    """A tiny random model of family `name`; `config` overrides keys of its config (e.g. intermediate_size)."""
    model_config = CONFIGS[name]()
    for key, value in config.items():
        setattr(model_config, key, value)
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(model_config)
    with torch.no_grad():  # some families initialise biases to zero; make every FFN row distinct and non-zero
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def tiny_tokenizer(size: int = VOCAB) -> T.PreTrainedTokenizerFast:
    """A word-level tokenizer over `size` ids (default the tiny models' VOCAB): 3 specials and w3, w4, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(len(specials), size)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return T.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def chat_tokenizer() -> T.PreTrainedTokenizerFast:
    """`tiny_tokenizer()` with a chat template: a user turn is w5 w6 MESSAGE </s>, an answer opens with w7 w8."""
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}w5 w6 {{ m['content'] }} </s> {% endfor %}"
                               "{% if add_generation_prompt %}w7 w8 {% endif %}")
    return tokenizer


def corpus_tokenizer() -> T.PreTrainedTokenizerFast:
    """A BPE tokenizer of at most VOCAB tokens trained on the default evaluation corpus: unlike
    `tiny_tokenizer`, it reads English text, so perplexity, KL and tasks mean something."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from prunenet.eval.corpus import default_text

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<eos>"], limit_alphabet=60,
                                  show_progress=False)
    tokenizer.train_from_iterator([default_text()[:50_000]], trainer)
    assert tokenizer.get_vocab_size() <= VOCAB
    return T.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>")


def save_model(model: torch.nn.Module, path: Path, shard_size: str | None = None,
               tokenizer: bool | T.PreTrainedTokenizerBase = True) -> Path:
    """Save `model` (sharded at `shard_size`) with a tokenizer: `tiny_tokenizer()` (True), none (False) or
    the tokenizer given."""
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(path, **kwargs)
    if tokenizer is True:
        tokenizer = tiny_tokenizer()
    if tokenizer:
        tokenizer.save_pretrained(path)
    return path


# The tiny LLaMA of the checkpoint tests: 4 shards of about 20 KB, two tokenizer files replaced by
# dummies that an output must copy byte for byte.
SHARD_SIZE = "20KB"
SECOND_SHARD = "model-00002-of-00004.safetensors"
AUX_FILES = {
    "tokenizer.json": '{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}}}\n',
    "special_tokens_map.json": '{"eos_token": "</s>"}\n',
}


def save_tiny_llama(path: Path, shard_size: str | None = SHARD_SIZE, ffn: int = FFN) -> torch.nn.Module:
    """A tiny random LLaMA of FFN width `ffn` saved to `path` (sharded by default) with the dummy tokenizer
    files AUX_FILES; returns the model."""
    model = build_model("llama", intermediate_size=ffn)
    save_model(model, path, shard_size)
    for name, text in AUX_FILES.items():
        (Path(path) / name).write_text(text, encoding="utf-8")
    return model


def logits(model_dir_or_model, tokens: torch.Tensor) -> torch.Tensor:
    model = model_dir_or_model
    if not isinstance(model, torch.nn.Module):
        model = T.AutoModelForCausalLM.from_pretrained(model_dir_or_model)
    with torch.no_grad():
        return model.eval()(tokens).logits
