"""Least-squares repair of the output matrix after its columns are sliced (ridge regression on the probes).

With A (tokens x n) the inputs of the output matrix W (h x n, down_proj / fc2) and K the kept columns, the
refit W' (h x k) minimises ||T - A_K W'^T||^2 + lambda ||W' - W[:, K]||^2, with the target T = A W^T (the
layer's own output) unless a pass against the original model gives another:

    W' = (T^T A_K + lambda W[:, K]) (G[K, K] + lambda I)^-1,   G = A^T A,   T^T A_K = W G[:, K] for T = A W^T,

solved by Cholesky in float32, as a correction of the plain slice. The ridge pulls W' towards plain
slicing, not towards zero: the probes are a few thousand tokens of the model's own text, and a fit free
to move far from W matches them and loses on other text (measured: with the zero-pull ridge of the plain
formula, pydoc perplexity got worse than without repair). With G = I it is exactly plain slicing. Where W
has a bias b, the bias is refitted too, from the activations' sums s = A^T 1 and token count t (the
constant input 1 joins the kept features, and b' is pulled towards b). lambda is `RIDGE` times the mean
of diag G[K, K].
"""
from __future__ import annotations

import torch

import prunenet_kernels as K

from .base import Refit, Repair

RIDGE = 0.1


def refit_output(
    weight: torch.Tensor,
    gram: torch.Tensor,
    kept: torch.Tensor,
    bias: torch.Tensor | None = None,
    sums: torch.Tensor | None = None,
    count: int = 0,
    target_cross: torch.Tensor | None = None,
    target_sums: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W', b'): the kept columns of `weight` (h, n) refitted on `gram` (n, n); float32 results.

    `bias` (h,) needs `sums` (n,) and `count` (tokens) of the same activations as `gram`. The fit
    reproduces the layer's own output A W^T + b unless a target T is given, as `target_cross` A^T T
    (n, h) and, with a bias, `target_sums` T^T 1 (h,).
    """
    if weight.dim() != 2 or gram.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"weight {tuple(weight.shape)} and gram {tuple(gram.shape)} do not match")
    if kept.dim() != 1 or kept.numel() == 0:
        raise ValueError(f"kept must be a non-empty 1-D index, got shape {tuple(kept.shape)}")
    if bias is not None and (sums is None or count <= 0):
        raise ValueError("refitting a bias needs the activations' sums and token count")
    if target_cross is not None and target_cross.shape != (weight.shape[1], weight.shape[0]):
        raise ValueError(f"target_cross {tuple(target_cross.shape)} does not match weight {tuple(weight.shape)}")
    if target_cross is not None and bias is not None and target_sums is None:
        raise ValueError("refitting a bias against a target needs the target's sums")
    w, g = weight.float(), gram.float()
    dropped = K.dropped_rows(kept.cpu()[None], w.shape[1])[0]
    system = g[kept][:, kept]  # G[K, K]
    prior = w[:, kept]  # what the ridge pulls towards: the plain slice
    s = None  # the activations' sums, where a bias is refitted
    if bias is not None:
        assert sums is not None  # checked above
        s = sums.float()
        # Features [a_K, 1]: the system gains the sums and the count; the prior gains the bias.
        system = torch.cat([torch.cat([system, s[kept, None]], 1),
                            torch.cat([s[kept], torch.tensor([float(count)], dtype=g.dtype)])[None]], 0)
        prior = torch.cat([prior, bias.float()[:, None]], 1)
    # Solved as a correction of the prior: W' = P + (R - P S)(S + lambda I)^-1 with R the right side and S
    # the system, the same as (R + lambda P)(S + lambda I)^-1. For the layer's own output the residual
    # R - P S is W[:, D] G[D, K] (D the dropped columns; with a bias, W[:, D] s_D beside it): smaller than
    # W G[:, K] to form, and exactly zero when nothing is dropped, which is what lets the solve run in float32.
    if target_cross is None:  # the layer's own output T = A W^T + 1 b^T
        cross = g[dropped][:, kept]
        if s is not None:
            cross = torch.cat([cross, s[dropped, None]], 1)
        residual = w[:, dropped] @ cross
    else:
        rhs = target_cross.float()[kept].T  # T^T A_K
        if s is not None and target_sums is not None:
            rhs = torch.cat([rhs, target_sums.float()[:, None]], 1)
        residual = rhs - prior @ system
    ridge = RIDGE * system.diagonal()[: kept.numel()].mean().clamp_min(1e-12)
    system.diagonal().add_(ridge)
    factor = torch.linalg.cholesky(system)
    del system
    solved = prior + torch.cholesky_solve(residual.T, factor).T  # the system is symmetric
    if bias is None:
        return solved, None
    return solved[:, :-1].contiguous(), solved[:, -1].contiguous()


class LeastSquaresRepair(Repair):
    name = "lsq"
    help = ("refit the kept columns of every output matrix (down_proj, fc2) and its bias by ridge least squares "
            "on the probes, for any selector")
    needs_statistics = True

    def refit(self, output, stats, kept):
        bias = None if output.bias is None else output.bias.cpu()
        return Refit(*refit_output(output.weight.cpu(), stats.gram.cpu(), kept, bias, stats.sums.cpu(), stats.count,
                                   _cpu(stats.target_cross), _cpu(stats.target_sums)))


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.cpu()
