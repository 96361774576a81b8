"""Probe tokens through a decoder one layer at a time: a checkpoint's, never holding the whole model, or a
loaded model's own layers.

For a checkpoint, the model is built from its config with empty (meta) parameters; only what lies outside the decoder
layers (embeddings, rotary tables, ...) is loaded. A first, cheap pass through the model's own forward
records, for every micro-batch, the input of layer 0 and the keyword arguments that forward hands each
layer (attention masks, position embeddings, per-layer attention types), with every layer replaced by
a recorder. Then each layer in turn gets its weights from the checkpoint, runs all micro-batches with
transformers' own decoder-layer class (no hand-written attention), and is emptied again. So the pass
works for every family of `families.py` with one code path, and peak memory is one layer plus the
activations of the probes.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..memory import limit_heap_fragmentation
from ..model.checkpoint import Checkpoint
from ..model.families import Family


class _Stop(Exception):
    """Raised by the last recorder: everything after the decoder layers is not needed."""


class _Recorder(torch.nn.Module):
    """Stands in for one decoder layer: records its call and passes the hidden states on unchanged."""

    def __init__(self, calls: list, last: bool):
        super().__init__()
        self.calls, self.last = calls, last

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.last:
            raise _Stop
        hidden = args[0] if args else kwargs["hidden_states"]
        return hidden


@dataclass
class LayerCall:
    """How the model's forward called one layer on one micro-batch; `hidden` is replaced per layer."""

    args: tuple
    kwargs: dict

    def run(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.args:
            out = layer(hidden, *self.args[1:], **self.kwargs)
        else:
            out = layer(**{**self.kwargs, "hidden_states": hidden})
        return out[0] if isinstance(out, tuple) else out


class LayerStream:
    """A decoder, run layer by layer over batches of token ids: a model's own layers, in memory."""

    def __init__(self, base: torch.nn.Module, family: Family, device: torch.device, dtype: torch.dtype):
        self.base, self.family, self.device, self.dtype = base, family, device, dtype
        self.layers, self.layer_prefix = _decoder_layers(base, family)

    @classmethod
    def of_model(cls, model: torch.nn.Module, family: Family) -> LayerStream:
        """The layers of a loaded model, on its device and in its dtype, changed in place by sequential passes."""
        parameter = next(model.parameters())
        return cls(getattr(model, model.base_model_prefix), family, parameter.device, parameter.dtype)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def record_calls(self, batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[list[LayerCall]]]:
        """Layer 0's input per batch, and how the model calls each layer: calls[layer][batch]."""
        originals = list(self.layers)
        calls_by_layer: list[list] = [[] for _ in originals]
        inputs = []
        for index in range(len(originals)):
            self.layers[index] = _Recorder(calls_by_layer[index], last=index == len(originals) - 1)
        try:
            with torch.no_grad():
                for tokens in batches:
                    try:
                        self.base(input_ids=tokens.to(self.device), use_cache=False)
                    except _Stop:
                        pass
        finally:
            for index, layer in enumerate(originals):
                self.layers[index] = layer
        calls = []
        for layer_calls in calls_by_layer:
            calls.append([LayerCall(args, kwargs) for args, kwargs in layer_calls])
        for args, kwargs in calls_by_layer[0]:
            inputs.append(args[0] if args else kwargs["hidden_states"])
        return inputs, calls

    def loaded(self, index: int) -> torch.nn.Module:
        """Layer `index`, ready to run."""
        return self.layers[index].eval()

    def release(self, index: int) -> None:
        """Done with layer `index` (a checkpoint's stream empties it again)."""

    def run(
        self,
        batches: list[torch.Tensor],
        visit: Callable[[int, torch.nn.Module, Callable[..., list[torch.Tensor]]], None],
        copies: int = 1,
    ) -> Iterator[int]:
        """Run every layer over every batch; `visit(index, layer, forward)` is called per layer.

        `forward(copy=0)` runs the loaded layer over all batches of hidden-state set `copy` and returns
        its outputs (callers hook the layer's modules to see what they need, and may change its weights
        between two calls). `copies` sets of hidden states go through the decoder side by side, all
        starting from the same embeddings: e.g. the original model's and a compressed one's. The outputs
        of the last `forward(copy)` call feed the next layer's set `copy`; a set `visit` did not run is
        run after it, with the layer as `visit` left it. Yields each finished layer's index.
        """
        inputs, calls = self.record_calls(batches)
        hidden = [list(inputs) for _ in range(copies)]
        for index in range(self.num_layers):
            layer = self.loaded(index)
            outputs: list[list[torch.Tensor] | None] = [None] * copies

            def forward(copy: int = 0) -> list[torch.Tensor]:
                with torch.no_grad():
                    outputs[copy] = [call.run(layer, h) for call, h in zip(calls[index], hidden[copy])]
                return outputs[copy]

            visit(index, layer, forward)
            hidden = [done if done is not None else forward(copy) for copy, done in enumerate(outputs)]
            self.release(index)
            yield index


class CheckpointStream(LayerStream):
    """A checkpoint's decoder, never held whole: each layer is read from the checkpoint, run, and emptied."""

    def __init__(self, checkpoint: Checkpoint, family: Family, device: torch.device, dtype: torch.dtype):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.checkpoint = checkpoint
        limit_heap_fragmentation()  # layer after layer of large temporaries: see memory.py
        config = AutoConfig.from_pretrained(checkpoint.path)
        with init_empty_weights():  # parameters on the meta device; buffers (rotary tables) real
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        super().__init__(getattr(model, model.base_model_prefix), family, device, dtype)
        base_prefix = model.base_model_prefix + "."
        names = set(checkpoint.weight_map)
        outside = {}
        for name in self.base.state_dict():
            if re.match(rf"{re.escape(self.layer_prefix)}\.\d+\.", name):
                continue
            stored = base_prefix + name if base_prefix + name in names else name
            if stored in names:
                outside[name] = checkpoint.read(stored).to(device=device, dtype=dtype)
        self.base.load_state_dict(outside, strict=False, assign=True)
        for module in self.base.modules():  # buffers were made on the CPU; the meta parameters stay put
            for key, buffer in module._buffers.items():
                if buffer is not None and not buffer.is_meta:
                    module._buffers[key] = buffer.to(device)
        self.stored_prefix = base_prefix if any(n.startswith(base_prefix) for n in names) else ""

    def layer_weights(self, index: int) -> dict[str, torch.Tensor]:
        """Layer `index`'s tensors from the checkpoint, named as in the layer module."""
        prefix = f"{self.stored_prefix}{self.layer_prefix}.{index}."
        return {
            name[len(prefix):]: self.checkpoint.read(name).to(device=self.device, dtype=self.dtype)
            for name in self.checkpoint.weight_map if name.startswith(prefix)
        }

    def loaded(self, index: int) -> torch.nn.Module:
        layer = self.layers[index]
        layer.load_state_dict(self.layer_weights(index), strict=False, assign=True)
        missing = [name for name, p in layer.named_parameters() if p.is_meta]
        if missing:
            raise ValueError(f"{self.checkpoint.path}: layer {index} has no stored {', '.join(missing[:3])}")
        return layer.eval()

    def release(self, index: int) -> None:
        self.layers[index].to("meta")


def _decoder_layers(base: torch.nn.Module, family: Family) -> tuple[torch.nn.ModuleList, str]:
    """The ModuleList of decoder layers (the one whose items hold the family's scored matrix)."""
    scored_module = family.scored.rsplit(".", 1)[0]
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and _has(module[0], scored_module):
            return module, name
    raise ValueError(f"no decoder layers holding {scored_module!r} in the {family.name} model")


def _has(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True
