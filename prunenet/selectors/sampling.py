"""Seeded noise and sampling of rows without replacement, shared by the random baseline and the paper's policy.

Sampling k rows without replacement with weights p is the top k of log p + Gumbel noise: one batched
top-k for all layers. Random numbers come from a seeded CPU generator and are then moved to the device,
so a seed gives the same rows on every backend.
"""
from __future__ import annotations

import torch

import prunenet_kernels as K

_TINY = 1e-7


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """U(0, 1) kept away from 0 and 1, so that its logit and log-log stay finite."""
    return torch.rand(shape, generator=generator).clamp_(_TINY, 1 - _TINY).to(device)


def logistic_noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    """logit(eps) with eps ~ U(0, 1): the noise of the paper's noisy keep probabilities."""
    return torch.logit(uniform(shape, generator, device))


def gumbel_noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    return -torch.log(-torch.log(uniform(shape, generator, device)))


def sample_rows(log_weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k rows per layer without replacement, with probabilities proportional to exp(log_weights)."""
    return K.topk_rows(log_weights + gumbel_noise(log_weights.shape, generator, log_weights.device), k)


def all_rows(weights: torch.Tensor) -> torch.Tensor:
    """Every row of every layer of stacked matrices (L, n, h), as kept indices (L, n)."""
    L, n, _ = weights.shape
    return torch.arange(n, device=weights.device).expand(L, n).contiguous()
