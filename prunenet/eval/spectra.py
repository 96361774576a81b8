"""Singular values of every layer's scored FFN matrix, read from a checkpoint.

These are the spectra whose KS distance is PruneNet's reward: comparing a compressed model's spectra
with the original's shows what the selection preserved.
"""
from __future__ import annotations

import os

import torch

import prunenet_kernels as K

from ..model import open_model
from ..model.ffn_map import SlicePlan, load_scored


def scored_spectra(model: str | os.PathLike) -> torch.Tensor:
    """(L, min(n, h)) singular values of each layer's scored matrix, ascending, float32 on CPU."""
    checkpoint, family = open_model(model)
    weights = load_scored(checkpoint, SlicePlan(checkpoint, family), torch.device("cpu"))
    return torch.linalg.svdvals(weights.double()).flip(-1).float()


def ks_per_layer(original: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
    """(L,) two-sample KS statistic between the spectra of each layer (1 / the per-layer reward)."""
    if original.shape[0] != compressed.shape[0]:
        raise ValueError(f"spectra of {original.shape[0]} and {compressed.shape[0]} layers cannot be compared")
    return K.ks_statistic(original, compressed)
