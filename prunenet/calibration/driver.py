"""Selection and repair that see activations: rows ranked, and output matrices refitted, on the probes.

`select_on_probes` runs the statistics pass once (one-shot: every ratio from the original model's
activations) or once per ratio (sequential: each layer sees the compressed layers before it) and returns,
per ratio, the kept rows of every layer and the repaired output matrices to write in place of plain
slices. Rows come from a `StatisticsSelector` ranking each layer on its statistics, or are given (by a
weights-only selector, or a stored ranking), and then get the same repair.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

import prunenet_kernels as K

from ..model.families import Family
from ..model.ffn_map import SlicePlan
from ..repairs import Repair
from ..selectors import StatisticsSelector
from .layer_stream import LayerStream
from .statistics import LayerChange, LayerStats, OutputMatrix, check_target, statistics_pass


@dataclass(frozen=True)
class StatisticsMode:
    name: str
    help: str
    sequential: bool  # each layer's statistics are taken after the layers before it are compressed
    target: str | None = None  # what the repair fits against the original model (statistics.TARGETS)

    def check(self, family: Family) -> None:
        """Refuse a family this mode's target does not hold for (before any work)."""
        check_target(self.target, family)

    def rounds(self, widths: dict[float, int]) -> list[dict[float, int]]:
        """The widths each statistics pass serves: all at once, or one pass per ratio."""
        return [{r: k} for r, k in widths.items()] if self.sequential else [widths]


MODES = {mode.name: mode for mode in (
    StatisticsMode("oneshot", "every layer's statistics from the original model (one pass serves every ratio)",
                   sequential=False),
    StatisticsMode("sequential", "each layer sees the compressed layers before it (one pass per ratio)",
                   sequential=True),
    StatisticsMode("reconstruct", "sequential, and the repair fits the original model's FFN output on the "
                                  "original stream (two streams, one pass per ratio)",
                   sequential=True, target="ffn"),
    StatisticsMode("reconstruct-layer", "sequential, and the repair fits the original layer's output less the "
                                        "compressed stream's residual, undoing upstream error (two streams)",
                   sequential=True, target="layer"),
)}


@dataclass
class ProbeSelection:
    kept: dict[float, torch.Tensor] = field(default_factory=dict)  # ratio -> (L, k)
    replacements: dict[float, dict[str, torch.Tensor]] = field(default_factory=dict)  # ratio -> name -> tensor
    priority: torch.Tensor | None = None  # (L, n) keep priority of a ranker, one-shot statistics only


def output_names(plan: SlicePlan, checkpoint_names) -> dict[int, tuple[str, str | None]]:
    """Per layer: the checkpoint names of its output matrix and of that matrix's bias (None if absent)."""
    names = {}
    for name, (layer, role) in plan.roles.items():
        if role == "cols":
            bias = name[: -len("weight")] + "bias"
            names[layer] = (name, bias if bias in checkpoint_names else None)
    return names


def row_names(plan: SlicePlan) -> dict[int, dict[str, str]]:
    """Per layer: its row-sliced tensors' names in the layer ("mlp.gate_proj.weight") -> in the checkpoint."""
    names: dict[int, dict[str, str]] = {}
    for name, (layer, role) in plan.roles.items():
        if role == "rows":
            found = plan.family.match(name)
            assert found is not None  # the plan's roles are the family's tensors
            names.setdefault(layer, {})[found[1]] = name
    return names


def select_on_probes(
    stream: LayerStream,
    batches: list[torch.Tensor],
    plan: SlicePlan,
    widths: dict[float, int],
    ranker: StatisticsSelector | None,
    given: dict[float, torch.Tensor] | None,
    repair: Repair,
    mode: StatisticsMode,
    progress: bool = False,
    rank_down_to: int | None = None,
) -> ProbeSelection:
    """Kept rows and repaired output matrices per ratio; `widths` maps each ratio to its kept width.

    Rows come from `ranker` on the statistics, or from `given` (ratio -> (L, k)). `rank_down_to`: the
    smallest width a greedy ranker (obs) ranks down to; default the smallest of `widths`.
    """
    if (ranker is None) == (given is None):
        raise ValueError(f"rows come either from a ranker or from given rows; got ranker={ranker!r} and "
                         f"{'some' if given is not None else 'no'} given rows")
    names = output_names(plan, plan.checkpoint.weight_map)
    rows_by_layer = row_names(plan)
    result = ProbeSelection()
    for round_widths in mode.rounds(widths):
        for r, k in round_widths.items():
            result.replacements[r] = {}
            result.kept[r] = torch.empty(stream.num_layers, k, dtype=torch.long)
        priorities = torch.empty(stream.num_layers, plan.n)

        def decide(index: int, stats: LayerStats, output: OutputMatrix):
            if ranker is not None:
                down_to = rank_down_to or min(round_widths.values())
                priorities[index] = ranker.rank_layer(index, stats, output, down_to).cpu()
            change = None
            for r, k in round_widths.items():
                kept = K.topk_rows(priorities[index : index + 1], k)[0] if given is None else given[r][index].cpu()
                result.kept[r][index] = kept
                weight, bias = output.weight[:, kept.to(output.weight.device)], output.bias
                repaired = repair.refit(output, stats, kept)
                activations = None
                if repaired is not None:
                    weight, bias, activations = repaired.weight, repaired.bias, repaired.activations
                    weight_name, bias_name = names[index]
                    stored = {weight_name: weight, **{rows_by_layer[index][in_layer]: tensor
                                                      for in_layer, tensor in repaired.rows.items()}}
                    if bias_name is not None and bias is not None:
                        stored[bias_name] = bias
                    # Held until written: in the stored dtype, not float32 (a bf16 model's halve).
                    for name, tensor in stored.items():
                        result.replacements[r][name] = tensor.to(plan.checkpoint.stored_dtype(name))
                if mode.sequential:  # the layer the next ones see: dropped columns zero
                    on = kept.to(output.weight.device)
                    full = torch.zeros_like(output.weight)
                    full[:, on] = weight.to(full)
                    change = LayerChange(full, None if bias is None else bias.to(full))
                    if activations is not None:
                        change.activations = activations.new_zeros(activations.shape[0], plan.n)
                        change.activations[:, on.to(activations.device)] = activations
            return change

        statistics_pass(stream, batches, decide, mode.sequential, mode.target, progress, repair.needs_inputs)
        if not mode.sequential and ranker is not None:
            result.priority = priorities
    return result

