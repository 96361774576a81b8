"""The statistics pass: per layer, the Gram matrix of the FFN's intermediate activations on the probes.

For every decoder layer (run by `LayerStream`, one layer in memory at a time) it accumulates, over all
probe tokens, G = A^T A (n x n, float32) and the sums A^T 1 of A, the input of the output matrix
(down_proj, fc2, ...): A = act(gate x) * (up x) for gated FFNs, act(fc1 x) otherwise. A forward
pre-hook on the output matrix sees A exactly as the model computes it, for every family.

One-shot: every layer sees the original model's activations. Sequential (as GPTQ and SparseGPT do):
after a layer's statistics are taken, `decide` may return new weights for its output matrix (the
pruned and repaired layer, dropped columns zero), and the layer is run again with them, so the next
layer sees the activations of the already-compressed layers before it. That rerun computes only the
output matrix on its recorded input; everything before it in the layer gives what it gave (`_Upstream`).
A repair that changes the input matrices too hands back the output matrix's new input with its weights
(`LayerChange.activations`), computed on the FFN inputs the pass recorded for it (`LayerStats.inputs`).

Against the original (a `target`): two hidden-state sets go through the decoder side by side, the
original model's and the compressed one's, one layer's weights in memory. The statistics are taken on
the compressed stream, and carry the cross term A^T T with a target T that the output matrix should
produce from them: the original layer's FFN output on the original stream ("ffn"), or the original
layer's output minus the compressed stream's residual before its FFN ("layer"), which also asks the FFN
to undo the error of the layers before it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
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
    # With a target T (tokens, h) the output matrix should reproduce: A^T T (n, h) and T^T 1 (h,), float32.
    target_cross: torch.Tensor | None = None
    target_sums: torch.Tensor | None = None
    # Where the repair asks for them: every probe token's FFN input (tokens, h), on the compressed stream.
    inputs: torch.Tensor | None = None


@dataclass
class FFNModule:
    """The module of a loaded layer whose forward is the whole FFN (LlamaMLP, PhiMLP, ...)."""

    module: torch.nn.Module
    path: str  # in the layer, e.g. "mlp"
    row_sliced: tuple[str, ...]  # its tensors that lose rows, named in it ("gate_proj.weight", ...)
    output: str  # its output matrix's module, named in it ("down_proj")
    fused_gate_up: bool  # gate and up stacked in one (2n, h) matrix


@dataclass
class OutputMatrix:
    """A loaded layer's output matrix (down_proj, fc2, ...) and its bias, as the model holds them."""

    weight: torch.Tensor  # (h, n)
    bias: torch.Tensor | None
    # Given with the recorded inputs; None where the family computes its FFN in the decoder layer's own forward.
    ffn: FFNModule | None = None


@dataclass
class LayerChange:
    """What `decide` runs the layer with next: its output matrix (dropped columns zero) and bias, and, where
    the input matrices changed too, the output matrix's new input on the probes (tokens, n)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    activations: torch.Tensor | None = None


# decide(layer index, its statistics, its output matrix) -> None, or the change to run the layer with next
Decide = Callable[[int, LayerStats, OutputMatrix], "LayerChange | None"]


def output_module_path(family: Family) -> str:
    """The output matrix's module, relative to a decoder layer (e.g. "mlp.down_proj", "fc2")."""
    return family.col_sliced[0].rsplit(".", 1)[0]


def ffn_module_path(family: Family) -> str | None:
    """The module holding the FFN's input and output matrices ("mlp"), or None where the layer itself does (OPT)."""
    modules = {name.rsplit(".", 1)[0] for name in (*family.row_sliced, *family.col_sliced)}
    parents = {module.rsplit(".", 1)[0] if "." in module else "" for module in modules}
    parent = parents.pop() if len(parents) == 1 else ""
    return parent or None


def ffn_module(layer: torch.nn.Module, family: Family) -> FFNModule | None:
    path = ffn_module_path(family)
    if path is None:
        return None
    module = layer.get_submodule(path)
    held = dict(module.named_parameters())
    rows = tuple(name[len(path) + 1:] for name in family.row_sliced if name[len(path) + 1:] in held)
    return FFNModule(module, path, rows, output_module_path(family)[len(path) + 1:], family.fused_gate_up)


TARGETS = ("ffn", "layer")
COMPRESSED, ORIGINAL = 0, 1  # the hidden-state sets of a pass against the original


def check_target(target: str | None, family: Family) -> None:
    """Refuse an unknown target, or the layer target where `family` normalises the FFN output first."""
    if target is not None and target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "layer" and family.norm_after_ffn:
        raise ValueError(f"target 'layer' needs each FFN's output added to the residual as it is, and "
                         f"{family.name} normalises it first; use statistics 'reconstruct'")


def statistics_pass(
    stream: LayerStream,
    batches: list[torch.Tensor],
    decide: Decide,
    sequential: bool,
    target: str | None = None,
    progress: bool = False,
    record_inputs: bool = False,
) -> None:
    """Collect `LayerStats` of every layer and hand them to `decide`, layer by layer.

    `target` ("ffn" or "layer", see the module's text) runs the original stream beside the compressed
    one; it implies `sequential`. `record_inputs`: the stats carry every probe token's FFN input too.
    """
    check_target(target, stream.family)
    sequential = sequential or target is not None
    path = output_module_path(stream.family)
    desc = "statistics" + (f" (against the original {target})" if target else " (sequential)" if sequential else "")
    bar = progress_bar(total=stream.num_layers, desc=desc, unit="layer", disable=not progress)

    def visit(index: int, layer: torch.nn.Module, forward: Callable[..., list[torch.Tensor]]) -> None:
        output = layer.get_submodule(path)
        n = output.weight.shape[1]
        h = output.weight.shape[0]
        stats = LayerStats(torch.zeros(n, n, dtype=torch.float32, device=stream.device),
                           torch.zeros(n, dtype=torch.float32, device=stream.device), 0)
        original: list[torch.Tensor] = []  # the target's part from the original stream
        if target == "ffn":
            with seeing(output, original, h, inputs=False):
                forward(ORIGINAL)
        elif target == "layer":
            original = [out.reshape(-1, h).float() for out in forward(ORIGINAL)]
        seen: list[torch.Tensor] = []
        compressed_ffn: list[torch.Tensor] = []
        ffn_inputs: list[torch.Tensor] = []
        first_input = layer.get_submodule(input_matrices[0])
        upstream = _Upstream(layer, input_matrices)
        with seeing(output, seen, n, inputs=True), upstream.recording() if sequential else nullcontext(), \
                seeing(output, compressed_ffn, h, inputs=False) if target == "layer" else nullcontext(), \
                seeing(first_input, ffn_inputs, first_input.weight.shape[1], inputs=True) if record_inputs \
                else nullcontext():
            compressed_layer = forward(COMPRESSED)
        if record_inputs:
            stats.inputs = torch.cat(ffn_inputs)
            del ffn_inputs[:]
        # One accumulation per layer over all micro-batches: each call ends with a mirror of the n x n result.
        sizes = [batch.shape[0] for batch in seen]
        activations = torch.cat(seen)
        del seen[:]
        K.act_gram(activations, None, "identity", stats.gram)
        stats.sums += activations.float().sum(0)
        stats.count += activations.shape[0]
        if target is not None:
            wanted = torch.cat(original)
            if target == "layer":  # less the compressed stream's residual: its layer output minus its FFN's
                wanted -= torch.cat([out.reshape(-1, h) for out in compressed_layer]).float()
                wanted += torch.cat(compressed_ffn)
            stats.target_cross = activations.float().T @ wanted
            stats.target_sums = wanted.sum(0)
            del wanted
        recorded = activations.split(sizes) if sequential else ()  # what the rerun feeds the output matrix
        del activations, original[:], compressed_ffn[:]
        change = decide(index, stats, OutputMatrix(output.weight.detach(), _bias(output),
                                                   ffn_module(layer, stream.family) if record_inputs else None))
        stats.inputs = None
        if sequential and change is not None:
            with torch.no_grad():
                output.weight.copy_(change.weight)
                if change.bias is not None:
                    output.bias.copy_(change.bias)
            if change.activations is not None:  # the input matrices changed: the output matrix's input with them
                recorded = change.activations.to(recorded[0]).split(sizes)
            with upstream.replaying(output, recorded):
                forward(COMPRESSED)
        del recorded, upstream, change
        bar.update()

    input_matrices = [tensor.rsplit(".", 1)[0] for tensor in stream.family.row_sliced]
    for _ in stream.run(batches, visit, copies=2 if target is not None else 1):
        pass
    bar.close()


class _Upstream:
    """The rerun of a layer after its output matrix changed, without the work that cannot have changed.

    Recording (on the layer's run before the change): the outputs of the layer's direct children that
    finish, on every micro-batch, before its FFN's input matrices start (the attention block and the
    norms before the FFN, in every family). Replaying (the rerun): those children give their recorded
    outputs, the input matrices (`inputs`, module paths) give zeros, and the output matrix computes,
    with its new weights, on the input it recorded then (`recorded`, one tensor per micro-batch). Only
    the output matrix and the layer's own glue run again, so the next layer sees exactly what a full rerun
    would give it.
    """

    def __init__(self, layer: torch.nn.Module, inputs: list[str]):
        self.layer = layer
        self.inputs = [layer.get_submodule(path) for path in dict.fromkeys(inputs)]
        self.outputs: dict[str, list] = {}  # child name -> its outputs, in call order
        self.late: set[str] = set()  # children called once the FFN had started: run again

    @contextmanager
    def recording(self) -> Iterator[None]:
        state = {"ffn_started": False}

        def record(name: str, out) -> None:
            if state["ffn_started"]:
                self.late.add(name)
            else:
                self.outputs.setdefault(name, []).append(_cloned(out))

        handles = [self.layer.register_forward_pre_hook(lambda m, args: state.update(ffn_started=False))]
        handles += [inner.register_forward_pre_hook(lambda m, args: state.update(ffn_started=True))
                    for inner in self.inputs]
        handles += [child.register_forward_hook(lambda m, args, out, name=name: record(name, out))
                    for name, child in self.layer.named_children() if not _holds_any(child, self.inputs)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def replaying(self, output: torch.nn.Module, recorded: tuple[torch.Tensor, ...]) -> Iterator[None]:
        replayed = {name: iter(outs) for name, outs in self.outputs.items() if name not in self.late}
        fed = iter(recorded)
        compute = output.forward
        stubs = {self.layer.get_submodule(name): lambda *args, outs=outs, **kwargs: next(outs)
                 for name, outs in replayed.items()}
        for inner in self.inputs:  # what they would give is never read: the output matrix's input is recorded
            stubs[inner] = lambda x, inner=inner: x.new_zeros(*x.shape[:-1], inner.weight.shape[0])
        stubs[output] = lambda x: compute(next(fed).reshape(*x.shape[:-1], -1))
        # A forward set on the instance (accelerate's device hooks set one) is put back as it was.
        before = {module: vars(module).get("forward") for module in stubs}
        for module, stub in stubs.items():
            module.forward = stub
        try:
            yield
        finally:
            for module, forward in before.items():
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward


def _holds_any(module: torch.nn.Module, inner: list[torch.nn.Module]) -> bool:
    return any(sub in inner for sub in module.modules())


def _cloned(out):
    """`out` with its tensors copied: the layer may change a child's output in place after it is returned."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, tuple):
        return tuple(_cloned(item) for item in out)
    return out


@contextmanager
def seeing(module: torch.nn.Module, into: list[torch.Tensor], width: int, inputs: bool) -> Iterator[None]:
    """Append what `module` takes in (`inputs`) or gives out, as (tokens, width) rows, to `into`."""
    if inputs:
        handle = module.register_forward_pre_hook(lambda m, args: into.append(args[0].reshape(-1, width)))
    else:
        handle = module.register_forward_hook(lambda m, args, out: into.append(out.reshape(-1, width).float()))
    try:
        yield
    finally:
        handle.remove()


def _bias(module: torch.nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.detach() if isinstance(bias, torch.Tensor) else None
