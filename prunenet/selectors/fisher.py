"""`fisher`: rows ranked by the Fisher information of a mask on each row, on the probes.

Put a mask m_i = 1 on every FFN row's activation, where it enters the output matrix. The probe text is
written by the model itself, so its next tokens are samples of the model's own distribution, and the
squared gradients of their log-likelihood with respect to the masks estimate the Fisher information of
that distribution. Removing row i sets m_i to 0, and to second order it moves the model's next-token
distribution (the KL the quality table measures) by F_ii / 2, with

    F_ii = sum over probe tokens t of (a_ti * dL/da_ti)^2,

a_ti being row i's activation at token t and L the probes' summed negative log-likelihood (the mask's
gradient at a token is a_ti times the activation's). Unlike `activation`, the score sees how much the
layers above and the head care about a row, not only the size of what it adds. It needs the whole
original model in memory and one backward pass over the probes, before the statistics pass.

In that pass a layer's rows are ranked by F_ii / E_ii * G_ii: the Fisher information per unit of the
row's activation energy on the original (E_ii = sum_t a_ti^2), times its energy G_ii on the stream the
pass runs. With sequential statistics (the default) that stream is the compressed one, so a row whose
input the layers below already changed is ranked by what it carries now; with one-shot statistics
G = E, and the ranking is Fisher's alone. A probe file of the user's own text gives the empirical
Fisher of that text instead.
"""
from __future__ import annotations

import torch

from ..calibration.layer_stream import LayerStream
from ..calibration.probes import probe_batches
from ..calibration.statistics import output_module_path
from ..model.ffn_map import SlicePlan
from ..progress import progress_bar
from .base import StatisticsSelector


def output_modules(model: torch.nn.Module, plan: SlicePlan) -> list[torch.nn.Module]:
    """Every layer's output matrix (down_proj, fc2, ...) as a module of the loaded `model`, in layer order."""
    path = output_module_path(plan.family)
    return [layer.get_submodule(path) for layer in LayerStream.of_model(model, plan.family).layers]


def fisher_information(model: torch.nn.Module, plan: SlicePlan, tokens: torch.Tensor,
                       progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """F_ii and the activation energy E_ii = sum_t a_ti^2 of every row of every layer on the probe `tokens`
    (sequences, length): two (L, n) float32 tensors."""
    outputs = output_modules(model, plan)
    fisher = torch.zeros(plan.num_layers, plan.n, dtype=torch.float64)
    energy = torch.zeros(plan.num_layers, plan.n, dtype=torch.float64)
    masks: dict[int, torch.Tensor] = {}

    def masked(index: int):
        def pre_hook(module, args):
            # Shaped as the activations reach the matrix: (batch, tokens, n), or (batch * tokens, n) in OPT.
            energy[index] += args[0].detach().double().square().reshape(-1, plan.n).sum(0).cpu()
            masks[index] = torch.ones_like(args[0]).requires_grad_(True)
            return (args[0] * masks[index], *args[1:])
        return pre_hook

    trainable = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    device = next(model.parameters()).device
    hooks = [module.register_forward_pre_hook(masked(i)) for i, module in enumerate(outputs)]
    batches = probe_batches(tokens)
    bar = progress_bar(total=len(batches), desc="fisher", unit="batch", disable=not progress)
    try:
        model.eval()  # no dropout: the gradients of the model as it predicts
        for p in trainable:  # only the masks' gradients are wanted: no graph for the weights
            p.requires_grad_(False)
        for batch in batches:
            batch = batch.to(device)
            logits = model(batch).logits[:, :-1]
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
            grads = torch.autograd.grad(nll, [masks[i] for i in range(len(outputs))])
            for index, grad in enumerate(grads):
                fisher[index] += grad.double().square().reshape(-1, plan.n).sum(0).cpu()
            bar.update()
    finally:
        bar.close()
        masks.clear()
        for hook in hooks:
            hook.remove()
        for p in trainable:
            p.requires_grad_(True)
        model.train(was_training)
    return fisher.float(), energy.float()


class FisherSelector(StatisticsSelector):
    name = "fisher"
    help = ("rows ranked by the Fisher information of a mask on each row on the probes, per unit of the row's "
            "activation energy, times its energy on the stream the statistics pass runs (the whole model in "
            "memory, float32, and a backward pass over the probes first)")
    uses_model = True

    def prepare_model(self, model, plan, tokens, progress):
        fisher, energy = fisher_information(model, plan, tokens, progress)
        # A row that never fires carries no information either: 0 / 0 ranks it last.
        self.sensitivity = torch.where(energy > 0, fisher / energy.clamp_min(torch.finfo(energy.dtype).tiny), 0.0)

    def rank_layer(self, index, stats, output, smallest_width):
        sensitivity = self.sensitivity[index].to(stats.gram.device)
        return sensitivity * stats.gram.diagonal().clamp_min(0)
