"""The evaluation text and its fixed token windows.

The default corpus is `pydoc_data.topics.topics`, which ships with every CPython: its values joined in
sorted-key order, so every machine evaluates on the same text with no download.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

DEFAULT_CORPUS = "pydoc_data.topics"
DEFAULT_TOKENS = 4096
DEFAULT_WINDOW = 256
# Tokens tokenized beyond the ones kept: a cut inside a word changes only that word's tokens.
_MARGIN = 64


def default_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file; a clear ValueError if it is missing, unreadable or empty."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"text file {str(path)!r} does not exist")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"text file {str(path)!r} cannot be read as UTF-8 text: {exc}") from None
    if not text.strip():
        raise ValueError(f"text file {str(path)!r} holds no text")
    return text


def check_count(name: str, value: int, minimum: int) -> int:
    """An integer option (tokens, window, batch...) that must be at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value!r} must be at least {minimum}")
    return value


def encode_prefix(tokenizer, text: str, tokens: int) -> list[int]:
    """The first `tokens` token ids of `text` (no special tokens added).

    Only a prefix of the text is tokenized, doubled until it yields `_MARGIN` ids more than needed, so a
    large file costs no more than the tokens evaluated; the margin keeps the cut away from the ids kept.
    """
    chars = 8 * (tokens + _MARGIN)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if chars >= len(text) or len(ids) >= tokens + _MARGIN:
            return list(ids[:tokens])
        chars *= 2


def token_windows(tokenizer, text: str, tokens: int, window: int) -> list[torch.Tensor]:
    """Non-overlapping windows (1, <= window) over the first `tokens` ids of `text`.

    Each window is evaluated on its own (its first token has no context and is not predicted). A last
    window of a single token predicts nothing and is dropped.
    """
    ids = encode_prefix(tokenizer, text, tokens)
    if len(ids) < 2:
        raise ValueError(f"the text yields {len(ids)} token(s); at least 2 are needed to predict one")
    windows = [ids[start : start + window] for start in range(0, len(ids), window)]
    if len(windows[-1]) < 2:
        windows.pop()
    return [torch.tensor(w, dtype=torch.long).unsqueeze(0) for w in windows]
