"""The statistics pass: per layer, the Gram matrix of the FFN's intermediate activations on the probes.

For every decoder layer (run by `LayerStream`, one layer in memory at a time) it accumulates, over all
probe tokens, G = A^T A (n x n, float32) and the sums A^T 1 of A, the input of the output matrix
(down_proj, fc2, ...): A = act(gate x) * (up x) for gated FFNs, act(fc1 x) otherwise. A forward
pre-hook on the output matrix sees A exactly as the model computes it, for every family.

One-shot: every layer sees the original model's activations. Sequential (as GPTQ and SparseGPT do):
after a layer's statistics are taken, `decide` may return new weights for its output matrix (the
pruned and repaired layer, dropped columns zero), and the layer is run again with them, so the next
layer sees the activations of the already-compressed layers before it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import prunenet_kernels as K

from ..model.families import Family
from ..progress import progress_bar
from .layer_stream import LayerStream


@dataclass
class LayerStats:
    gram: torch.Tensor  # (n, n) float32: A^T A over all probe tokens
    sums: torch.Tensor  # (n,) float32: A^T 1
    count: int  # probe tokens seen


@dataclass
class OutputMatrix:
    """A loaded layer's output matrix (down_proj, fc2, ...) and its bias, as the model holds them."""

    weight: torch.Tensor  # (h, n)
    bias: torch.Tensor | None


# decide(layer index, its statistics, its output matrix) -> None, or (weight, bias) to run the layer with next
Decide = Callable[[int, LayerStats, OutputMatrix], "tuple[torch.Tensor, torch.Tensor | None] | None"]


def output_module_path(family: Family) -> str:
    """The output matrix's module, relative to a decoder layer (e.g. "mlp.down_proj", "fc2")."""
    return family.col_sliced[0].rsplit(".", 1)[0]


def statistics_pass(
    stream: LayerStream,
    batches: list[torch.Tensor],
    decide: Decide,
    sequential: bool,
    progress: bool = False,
) -> None:
    """Collect `LayerStats` of every layer and hand them to `decide`, layer by layer."""
    path = output_module_path(stream.family)
    bar = progress_bar(total=stream.num_layers, desc="statistics" + (" (sequential)" if sequential else ""),
                       unit="layer", disable=not progress)

    def visit(index: int, layer: torch.nn.Module, forward: Callable[[], list[torch.Tensor]]) -> None:
        output = layer.get_submodule(path)
        n = output.weight.shape[1]
        stats = LayerStats(torch.zeros(n, n, dtype=torch.float32, device=stream.device),
                           torch.zeros(n, dtype=torch.float32, device=stream.device), 0)

        seen: list[torch.Tensor] = []

        def accumulate(module, args):
            seen.append(args[0].reshape(-1, n))

        handle = output.register_forward_pre_hook(accumulate)
        try:
            forward()
        finally:
            handle.remove()
        # One accumulation per layer over all micro-batches: each call ends with a mirror of the n x n result.
        activations = torch.cat(seen)
        del seen[:]
        K.act_gram(activations, None, "identity", stats.gram)
        stats.sums += activations.float().sum(0)
        stats.count += activations.shape[0]
        del activations
        change = decide(index, stats, OutputMatrix(output.weight.detach(), _bias(output)))
        if sequential and change is not None:
            weight, bias = change
            with torch.no_grad():
                output.weight.copy_(weight)
                if bias is not None:
                    output.bias.copy_(bias)
            forward()
        bar.update()

    for _ in stream.run(batches, visit):
        pass
    bar.close()


def _bias(module: torch.nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.detach() if isinstance(bias, torch.Tensor) else None
