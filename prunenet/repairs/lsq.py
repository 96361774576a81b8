"""Least-squares repair of the output matrix after its columns are sliced (ridge regression on the probes).

With A (tokens x n) the inputs of the output matrix W (h x n, down_proj / fc2) and K the kept columns, the
refit W' (h x k) minimises ||T - A_K W'^T||^2 + lambda ||W' - W[:, K]||^2, with the target T = A W^T (the
layer's own output) unless a pass against the original model gives another:

    W' = (T^T A_K + lambda W[:, K]) (G[K, K] + lambda I)^-1,   G = A^T A,   T^T A_K = W G[:, K] for T = A W^T,

solved by Cholesky. The ridge pulls W' towards plain slicing, not towards zero: the probes are a few
thousand tokens of the model's own text, and a fit free to move far from W matches them and loses on
other text (measured: with the zero-pull ridge of the plain formula, pydoc perplexity got worse than
without repair). With G = I it is exactly plain slicing. Where W has a bias b, the bias is refitted too,
from the activations' sums s = A^T 1 and token count t (the constant input 1 joins the kept features, and
b' is pulled towards b). lambda is `RIDGE` times the mean of diag G[K, K].
"""
from __future__ import annotations

import torch

from .base import Repair

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
    w, g = weight.double(), gram.double()
    if target_cross is None:  # the layer's own output T = A W^T + 1 b^T
        rhs = w @ g[:, kept]  # T^T A_K
        if bias is not None and sums is not None:
            rhs += bias.double()[:, None] * sums.double()[kept][None]
            target_sums = w @ sums.double() + bias.double() * count
    else:
        rhs = target_cross.double()[kept].T
    system = g[kept][:, kept]  # G[K, K]
    if bias is not None and sums is not None and target_sums is not None:
        s = sums.double()
        # Features [a_K, 1]: the system gains the sums and the count; the right side gains T^T 1.
        system = torch.cat([torch.cat([system, s[kept, None]], 1),
                            torch.cat([s[kept], torch.tensor([float(count)], dtype=g.dtype)])[None]], 0)
        rhs = torch.cat([rhs, target_sums.double()[:, None]], 1)
    ridge = RIDGE * system.diagonal()[: kept.numel()].mean().clamp_min(1e-12)
    system = system + ridge * torch.eye(system.shape[0], dtype=g.dtype)
    prior = w[:, kept] if bias is None else torch.cat([w[:, kept], bias.double()[:, None]], 1)
    rhs = rhs + ridge * prior  # the pull towards plain slicing
    factor = torch.linalg.cholesky(system)
    solved = torch.cholesky_solve(rhs.T, factor).T  # rhs system^-1 (the system is symmetric)
    if bias is None:
        return solved.float(), None
    return solved[:, :-1].float(), solved[:, -1].float()


class LeastSquaresRepair(Repair):
    name = "lsq"
    help = ("refit the kept columns of every output matrix (down_proj, fc2) and its bias by ridge least squares "
            "on the probes, for any selector")
    needs_statistics = True

    def refit(self, output, stats, kept):
        bias = None if output.bias is None else output.bias.cpu()
        return refit_output(output.weight.cpu(), stats.gram.cpu(), kept, bias, stats.sums.cpu(), stats.count,
                            _cpu(stats.target_cross), _cpu(stats.target_sums))


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.cpu()
