"""Joint refinement of each sliced FFN: the kept rows of its input matrices (gate/up, fc1) and its refitted
output matrix trained together, so that the nonlinearity is inside what is fitted.

Least squares (`lsq`) can only move the output matrix: the kept activations are fixed, and whatever the
dropped ones carried that is not a linear function of the kept ones is lost. Here, starting from the
least-squares solution, Adam minimises the mean squared error between the sliced FFN's output and the
unpruned FFN's output (the target `lsq` fits: the layer's own FFN output on the same input) over every
probe token's FFN input, in shuffled mini-batches, for a few epochs. The FFN is run as the model runs it
(its own module, with the sliced tensors swapped in by `torch.func.functional_call`), so every family with
an FFN module is served by one code path.

The probes are a few thousand tokens and the trainable tensors millions of numbers per layer, so the fit
can learn the probes rather than the layer. One probe token in `HELD_OUT` (the last ones: whole probe
sequences) is left out: least squares is fitted again without them as the starting point (epoch 0), and
after every epoch the error on them is measured. The refined tensors are kept only where an epoch beats
that start; otherwise the layer gets the least-squares repair on every probe token, as `lsq` gives it.
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from ..calibration.statistics import seeing
from ..config import RefineOptions
from .base import Refit, Repair
from .lsq import LeastSquaresRepair, refit_output

HELD_OUT = 8  # one probe token in this many is held out to choose the epoch
CHUNK = 4096  # tokens per forward pass where no gradient is needed


class RefineRepair(Repair):
    name = "refine"
    help = ("lsq, then the kept gate/up (fc1) rows and the refitted output matrix of every FFN trained together "
            "towards the unpruned FFN's output on the probes (Adam, --refine-epochs), kept where an epoch beats "
            "least squares on held-out probe tokens; about 4x the statistics time of lsq on a CPU")
    needs_statistics = True
    needs_inputs = True

    def __init__(self, options: RefineOptions | None = None):
        self.options = options or RefineOptions()

    def configured(self, config):
        return RefineRepair(config.refine)

    def check(self, family):
        from ..calibration.statistics import ffn_module_path

        if ffn_module_path(family) is None:
            raise ValueError(f"repair 'refine' trains each layer's FFN module, and {family.name} computes its FFN "
                             "in the decoder layer's own forward; use repair 'lsq'")

    def refit(self, output, stats, kept):
        return refine_ffn(output, stats, kept, self.options) or LeastSquaresRepair().refit(output, stats, kept)


def refine_ffn(output, stats, kept: torch.Tensor, options: RefineOptions) -> Refit | None:
    """The refined tensors of the FFN of `output` (an `OutputMatrix` with its `FFNModule`) at kept rows `kept`,
    trained on `stats.inputs` (the FFN's input on the probes), or None where no epoch beats least squares on
    the held-out probe tokens. CPU float32 tensors, with the activations they give on every probe token."""
    ffn = output.ffn
    assert ffn is not None and stats.inputs is not None  # checked before the pass; recorded for this repair
    x = stats.inputs.float()
    held = x.shape[0] // HELD_OUT
    if held == 0:
        return None
    original = {name: p.detach().float() for name, p in ffn.module.named_parameters()}
    output_module = ffn.module.get_submodule(ffn.output)

    def run(tensors: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        return functional_call(ffn.module, {**original, **tensors}, (batch,))

    with torch.no_grad():  # the unpruned FFN's output; on the held-out tokens, its activations seen on the way
        target_parts = [run({}, chunk) for chunk in x[:-held].split(CHUNK)]
        held_activations: list[torch.Tensor] = []
        with seeing(output_module, held_activations, output.weight.shape[1], inputs=True):
            target_parts += [run({}, chunk) for chunk in x[-held:].split(CHUNK)]
        target = torch.cat(target_parts)
        del target_parts
    # Least squares without the held-out tokens: their part of the statistics taken away again.
    a = torch.cat(held_activations).float()
    bias = None if output.bias is None else output.bias.cpu()
    weight, bias = refit_output(output.weight.cpu(), (stats.gram - a.T @ a).cpu(), kept, bias,
                                (stats.sums - a.sum(0)).cpu(), stats.count - held)
    del a, held_activations
    on = kept.to(x.device)
    n = output.weight.shape[1]
    rows = torch.cat([on, on + n]) if ffn.fused_gate_up else on
    params = {name: original[name][rows].clone() for name in ffn.row_sliced}
    params[f"{ffn.output}.weight"] = weight.to(x.device)
    if bias is not None:
        params[f"{ffn.output}.bias"] = bias.to(x.device)
    train_x, check_x, train_t, check_t = x[:-held], x[-held:], target[:-held], target[-held:]

    def held_out_error() -> float:
        with torch.no_grad():
            return sum(float((run(params, a) - b).pow(2).sum()) for a, b in zip(check_x.split(CHUNK),
                                                                                  check_t.split(CHUNK)))

    best_error, best = held_out_error(), None
    for tensor in params.values():
        tensor.requires_grad_(True)
    optimizer = torch.optim.Adam(params.values(), lr=options.lr)
    order = torch.Generator().manual_seed(0)  # the same shuffles on every run and device
    for _ in range(options.epochs):
        for batch in torch.randperm(train_x.shape[0], generator=order).to(x.device).split(options.batch_tokens):
            loss = (run(params, train_x[batch]) - train_t[batch]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        error = held_out_error()
        if error < best_error:
            best_error, best = error, {name: t.detach().clone() for name, t in params.items()}
    if best is None:
        return None
    seen: list[torch.Tensor] = []
    with seeing(output_module, seen, kept.numel(), inputs=True), torch.no_grad():
        for chunk in x.split(CHUNK):
            run(best, chunk)
    fitted_bias = best.get(f"{ffn.output}.bias")
    return Refit(best[f"{ffn.output}.weight"].cpu(), None if fitted_bias is None else fitted_bias.cpu(),
                 {f"{ffn.path}.{name}": best[name].cpu() for name in ffn.row_sliced}, torch.cat(seen))
