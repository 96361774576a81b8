"""Selection and repair that see activations: rows ranked, and output matrices refitted, on the probes.

`select_on_probes` runs the statistics pass once (one-shot: every ratio from the original model's
activations) or once per ratio (sequential: each layer sees the compressed layers before it) and returns,
per ratio, the kept rows of every layer and the refitted output matrices to write in place of plain
slices. Rows come from the statistics (`activation`, `obs`) or are given by another selector (the
paper's policy, random, magnitude), which then gets the same repair.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

import prunenet_kernels as K

from .activation_selection import activation_priority, obs_priority
from .activation_stats import LayerStats, OutputMatrix, statistics_pass
from .checkpoint import DTYPES
from .defaults import RANKERS
from .layer_stream import LayerStream
from .repair import refit_output
from .writer import SlicePlan



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


def select_on_probes(
    stream: LayerStream,
    batches: list[torch.Tensor],
    plan: SlicePlan,
    widths: dict[float, int],
    ranker: str | None,
    given: dict[float, torch.Tensor] | None,
    repair: str,
    statistics: str,
    progress: bool = False,
    rank_down_to: int | None = None,
) -> ProbeSelection:
    """Kept rows and refitted output matrices per ratio; `widths` maps each ratio to its kept width.

    Rows come from `ranker` (one of RANKERS) on the statistics, or from `given` (ratio -> (L, k)).
    `rank_down_to`: the smallest width a greedy ranker (obs) ranks down to; default the smallest of `widths`.
    """
    if (ranker is None) == (given is None) or ranker not in (None, *RANKERS):
        raise ValueError(f"rows come either from a ranker ({', '.join(RANKERS)}) or from given rows; got "
                         f"ranker={ranker!r} and {'some' if given is not None else 'no'} given rows")
    names = output_names(plan, stream.checkpoint.weight_map)
    result = ProbeSelection()
    rounds = [widths] if statistics == "oneshot" else [{r: k} for r, k in widths.items()]
    for round_widths in rounds:
        for r, k in round_widths.items():
            result.replacements[r] = {}
            result.kept[r] = torch.empty(stream.num_layers, k, dtype=torch.long)
        priorities = torch.empty(stream.num_layers, plan.n)

        def decide(index: int, stats: LayerStats, output: OutputMatrix):
            if ranker is not None:
                down_to = rank_down_to or min(round_widths.values())
                priorities[index] = _priority(ranker, stats, output, down_to).cpu()
            change = None
            for r, k in round_widths.items():
                if ranker is not None:
                    kept = K.topk_rows(priorities[index : index + 1], k)[0]
                else:
                    kept = given[r][index].cpu()
                result.kept[r][index] = kept
                weight, bias = output.weight[:, kept.to(output.weight.device)], output.bias
                if repair == "lsq":
                    weight, bias = refit_output(output.weight.cpu(), stats.gram.cpu(), kept, _cpu(output.bias),
                                                stats.sums.cpu(), stats.count)
                    weight_name, bias_name = names[index]
                    # Held until written: in the stored dtype, not float32 (a bf16 model's halve).
                    result.replacements[r][weight_name] = weight.to(_stored_dtype(stream.checkpoint, weight_name))
                    if bias_name is not None:
                        result.replacements[r][bias_name] = bias.to(_stored_dtype(stream.checkpoint, bias_name))
                if statistics == "sequential":  # the layer the next ones see: dropped columns zero
                    full = torch.zeros_like(output.weight)
                    full[:, kept.to(full.device)] = weight.to(full)
                    change = (full, None if bias is None else bias.to(full))
            return change

        statistics_pass(stream, batches, decide, sequential=statistics == "sequential", progress=progress)
        if statistics == "oneshot" and ranker is not None:
            result.priority = priorities
    return result


def _priority(selector: str, stats: LayerStats, output: OutputMatrix, smallest_width: int) -> torch.Tensor:
    if selector == "activation":
        return activation_priority(stats.gram, output.weight)
    return obs_priority(stats.gram.cpu(), output.weight.cpu(), smallest_width)


def _stored_dtype(checkpoint, name: str) -> torch.dtype:
    return DTYPES[checkpoint.headers[checkpoint.weight_map[name]][name][0]]


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.cpu()
