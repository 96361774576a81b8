"""Tiny random models of every supported family, built from config classes and saved as safetensors."""
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


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(CONFIGS[name]())
    with torch.no_grad():  # some families initialise biases to zero; make every FFN row distinct and non-zero
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def tiny_tokenizer() -> T.PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny models' VOCAB ids: 3 specials and w3..w95 (probes need one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(len(specials), VOCAB)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return T.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def save_model(model: torch.nn.Module, path: Path, shard_size: str | None = None, tokenizer: bool = True) -> Path:
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(path, **kwargs)
    if tokenizer:
        tiny_tokenizer().save_pretrained(path)
    return path


def logits(model_dir_or_model, tokens: torch.Tensor) -> torch.Tensor:
    model = model_dir_or_model
    if not isinstance(model, torch.nn.Module):
        model = T.AutoModelForCausalLM.from_pretrained(model_dir_or_model)
    with torch.no_grad():
        return model.eval()(tokens).logits
