"""Spectral rewards: 1 / KS between the singular values of each original and sliced scored matrix.

Engines:
- `exact` (default): singular values from the Gram matrix of the kept rows (a float32 downdate of
  the full Gram when fewer rows are dropped than kept) and `eigvalsh`; the same KS as a float64 SVD.
- `topq`: the top q singular values by batched randomized SVD. A different statistic (KS over the
  top q ranks only): it ranks actions like `exact` but its values differ; see the docs for fidelity.
Original spectra are computed once per engine, i.e. once per fit.
"""
from __future__ import annotations

import torch

import prunenet_kernels as K

from ..sampling import all_rows

# A KS of 0 (nothing dropped) would give an infinite reward.
_MIN_KS = 1e-6


def reward_from_ks(ks: torch.Tensor) -> torch.Tensor:
    return 1.0 / ks.clamp_min(_MIN_KS)


def spectrum_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Singular values, ascending, from Gram matrices (L, m, m)."""
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()


class SpectralReward:
    """KS between `self.original` and `self.spectra(kept)`; subclasses say how spectra are computed."""

    original: torch.Tensor

    def spectra(self, kept: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ks(self, kept: torch.Tensor) -> torch.Tensor:
        return K.ks_statistic(self.original, self.spectra(kept))

    def __call__(self, kept: torch.Tensor) -> torch.Tensor:
        return reward_from_ks(self.ks(kept))


class ExactReward(SpectralReward):
    """Full-spectrum KS via Gram matrices and eigvalsh.

    Work goes in chunks of `layers_per_chunk` layers: the gathered rows, the kept Gram matrices and the
    eigensolver's workspace of all layers at once would add as much memory again as the weights."""

    name = "exact"

    def __init__(self, weights: torch.Tensor, layers_per_chunk: int = 8):
        self.weights = weights
        self.chunks = [slice(i, i + layers_per_chunk) for i in range(0, weights.shape[0], layers_per_chunk)]
        self.full_gram = torch.cat([K.kept_gram(weights[c], all_rows(weights[c])) for c in self.chunks])
        self.original = torch.cat([spectrum_from_gram(self.full_gram[c]) for c in self.chunks])

    def spectra(self, kept: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            spectrum_from_gram(K.kept_gram(self.weights[c], kept[c], self.full_gram[c])) for c in self.chunks
        ])


class TopQReward(SpectralReward):
    """KS over the top q singular values from a batched randomized SVD (same probes for every call)."""

    name = "topq"

    def __init__(self, weights: torch.Tensor, k: int, q: int = 256, oversample: int = 8, power_iters: int = 2,
                 seed: int = 0):
        L, n, h = weights.shape
        self.weights = weights
        self.q = max(1, min(q, h, k))
        self.power_iters = power_iters
        p = min(self.q + oversample, h)
        generator = torch.Generator().manual_seed(seed)
        self.omega = torch.randn(L, h, p, generator=generator).to(weights.device)
        self.original = self._top(all_rows(weights))

    def _top(self, kept: torch.Tensor) -> torch.Tensor:
        return K.topq_singular_values(self.weights, kept, self.omega, self.q, self.power_iters)

    def spectra(self, kept: torch.Tensor) -> torch.Tensor:
        return self._top(kept)


def make_reward(engine: str, weights: torch.Tensor, k: int, seed: int = 0) -> SpectralReward:
    """The reward of engine `engine` (the `engine` option of the policy's training)."""
    if engine == "exact":
        return ExactReward(weights)
    if engine == "topq":
        return TopQReward(weights, k, seed=seed)
    raise ValueError(f"unknown reward engine {engine!r}; choose one of exact, topq")
