"""Which FFN rows each layer keeps: the PruneNet policy (sampled or top-k) or a baseline.

Sampling k rows without replacement with weights p is done as the top k of log p + Gumbel noise
(DESIGN 3.2), one batched top-k for all layers. Random numbers come from a seeded CPU generator and
are then moved to the device, so a seed gives the same rows on every backend.
"""
from __future__ import annotations

import math

import torch

import prunenet_kernels as K

from .defaults import BASELINES, WEIGHT_SELECTORS
from .policy import Policy

SELECTORS = WEIGHT_SELECTORS
MODES = ("sample", "topk")
_TINY = 1e-7


def check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"ratio must be a number, got {type(ratio).__name__}")
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise ValueError(f"ratio {ratio!r} is outside [0, 1)")
    return float(ratio)


def kept_width(n: int, ratio: float, align: int | None = None) -> int:
    """Rows kept per layer: int((1 - ratio) n) as in the paper, optionally rounded to a multiple of `align`.

    Alignment rounds to the nearest multiple (at least one multiple, at most n), so that the compressed
    FFN runs on fast matmul shapes; the report states the width actually kept.
    """
    check_ratio(ratio)
    k = int((1.0 - ratio) * n + 1e-9)  # the epsilon absorbs float error such as (1 - 0.71) * 100
    if k < 1:
        raise ValueError(f"ratio {ratio!r} leaves no row of {n}")
    if align is not None:
        if isinstance(align, bool) or not isinstance(align, int) or not 1 <= align <= n:
            raise ValueError(f"align={align!r} must be an int in [1, FFN width {n}]")
        k = min(n, max(align, align * round(k / align)))
    return k


def all_rows(weights: torch.Tensor) -> torch.Tensor:
    """Every row of every layer of stacked matrices (L, n, h), as kept indices (L, n)."""
    L, n, _ = weights.shape
    return torch.arange(n, device=weights.device).expand(L, n).contiguous()


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).clamp_(_TINY, 1 - _TINY).to(device)


def logistic_noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    """logit(eps) with eps ~ U(0, 1): the noise of the paper's noisy keep probabilities."""
    return torch.logit(_uniform(shape, generator, device))


def gumbel_noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    return -torch.log(-torch.log(_uniform(shape, generator, device)))


def sample_rows(log_weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k rows per layer without replacement, with probabilities proportional to exp(log_weights)."""
    return K.topk_rows(log_weights + gumbel_noise(log_weights.shape, generator, log_weights.device), k)


def row_priority(weights: torch.Tensor, selector: str, seed: int = 0) -> torch.Tensor:
    """Keep priority (L, n) of a baseline: uniform noise ("random", seeded) or the row's L2 norm ("magnitude")."""
    if selector == "random":
        return _uniform(weights.shape[:2], torch.Generator().manual_seed(seed), weights.device)
    if selector == "magnitude":
        return weights.float().norm(dim=2)
    raise ValueError(f"selector {selector!r} has no weight-only priority; baselines: {', '.join(BASELINES)}")


def select_rows(
    weights: torch.Tensor,
    k: int,
    selector: str = "prunenet",
    policy: Policy | None = None,
    mode: str = "sample",
    seed: int = 0,
) -> torch.Tensor:
    """Kept row indices (L, k), ascending, for stacked scored matrices `weights` (L, n, h)."""
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    if mode not in MODES:
        raise ValueError(f"unknown selection mode {mode!r}; choose one of {', '.join(MODES)}")
    if selector in BASELINES:
        return K.topk_rows(row_priority(weights, selector, seed), k)
    generator = torch.Generator().manual_seed(seed)
    L, n, _ = weights.shape
    if policy is None:
        raise ValueError("selector 'prunenet' needs a policy")
    with torch.no_grad():
        if mode == "topk":
            # log alpha ranks rows like alpha but does not round to 1 for large scores.
            return K.topk_rows(policy.score(weights)[2], k)
        _, _, log_keep = policy.score(weights, logistic_noise((L, n), generator, weights.device))
        return sample_rows(log_keep, k, generator)
