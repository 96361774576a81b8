"""Where each supported architecture keeps its FFN, chosen by `config.model_type`.

A family names, relative to a layer's prefix (`model.layers.7.`, `transformer.h.7.`, ...), the scored
matrix, the tensors that lose rows and the tensors that lose columns, and the config keys that hold
the FFN width. Tensor names are matched by suffix, so checkpoints saved with or without the outer
`model.` prefix both work.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    scored: str
    row_sliced: tuple[str, ...]
    col_sliced: tuple[str, ...]
    width_keys: tuple[str, ...]
    # phi3 stores gate and up stacked in one (2n, h) matrix: the first n rows are the gate.
    fused_gate_up: bool = False
    # gemma2/3 normalise the FFN's output before adding it to the residual stream.
    norm_after_ffn: bool = False

    def match(self, tensor_name: str) -> tuple[int, str] | None:
        """(layer index, suffix) if `tensor_name` is one of this family's FFN tensors, else None."""
        found = _suffix_pattern(self).match(tensor_name)
        return (int(found.group("layer")), found.group("suffix")) if found else None

    def width(self, config: Mapping) -> int:
        """The FFN width n stated by a config.json dictionary."""
        for key in self.width_keys:
            if config.get(key):
                return int(config[key])
        if self.name == "falcon" and config.get("hidden_size"):
            return 4 * int(config["hidden_size"])  # FalconConfig's default when ffn_hidden_size is unset
        raise ValueError(f"config.json states no FFN width (looked for {', '.join(self.width_keys)})")


_GATED = dict(
    scored="mlp.gate_proj.weight",
    row_sliced=("mlp.gate_proj.weight", "mlp.gate_proj.bias", "mlp.up_proj.weight", "mlp.up_proj.bias"),
    col_sliced=("mlp.down_proj.weight",),
    width_keys=("intermediate_size",),
)
_H_TO_4H = dict(
    scored="mlp.dense_h_to_4h.weight",
    row_sliced=("mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias"),
    col_sliced=("mlp.dense_4h_to_h.weight",),
)

FAMILIES: dict[str, Family] = {
    **{t: Family(name=t, **_GATED) for t in ("llama", "mistral", "qwen2", "qwen3", "gemma")},
    **{t: Family(name=t, **_GATED, norm_after_ffn=True) for t in ("gemma2", "gemma3_text")},
    "phi3": Family(
        name="phi3",
        scored="mlp.gate_up_proj.weight",
        row_sliced=("mlp.gate_up_proj.weight",),
        col_sliced=("mlp.down_proj.weight",),
        width_keys=("intermediate_size",),
        fused_gate_up=True,
    ),
    "opt": Family(
        name="opt",
        scored="fc1.weight",
        row_sliced=("fc1.weight", "fc1.bias"),
        col_sliced=("fc2.weight",),
        width_keys=("ffn_dim",),
    ),
    "phi": Family(
        name="phi",
        scored="mlp.fc1.weight",
        row_sliced=("mlp.fc1.weight", "mlp.fc1.bias"),
        col_sliced=("mlp.fc2.weight",),
        width_keys=("intermediate_size",),
    ),
    "falcon": Family(name="falcon", width_keys=("ffn_hidden_size",), **_H_TO_4H),
    "gpt_neox": Family(name="gpt_neox", width_keys=("intermediate_size",), **_H_TO_4H),
}

_PATTERNS: dict[str, re.Pattern] = {}


def _suffix_pattern(family: Family) -> re.Pattern:
    if family.name not in _PATTERNS:
        suffixes = "|".join(re.escape(s) for s in family.row_sliced + family.col_sliced)
        _PATTERNS[family.name] = re.compile(rf"^(?:.*\.)?(?P<layer>\d+)\.(?P<suffix>{suffixes})$")
    return _PATTERNS[family.name]


def family_for(model_type: str | None) -> Family:
    """The family of a `config.model_type`; a clear error names the supported ones."""
    if model_type not in FAMILIES:
        supported = ", ".join(sorted(FAMILIES))
        raise ValueError(f"unsupported model_type {model_type!r}; supported: {supported}")
    return FAMILIES[model_type]
