"""prunenet's compute ops. Each op has a Triton kernel and a PyTorch twin with the same signature.

The names exported here dispatch: Triton on CUDA tensors, the twin otherwise, and the environment
variable PRUNENET_KERNELS=torch|triton forces either. Installed as `prunenet_kernels` (never as
`kernels`, the name of a Hugging Face package that transformers probes for).

`prunenet_kernels.act_gram` is the dispatching function; its module is reached with
`from prunenet_kernels.act_gram import ...`.
"""
from __future__ import annotations

import torch

from . import act_gram as _act_gram
from . import gram, ks, rsvd, scoring, selection, slicing
from ._dispatch import backend, use_triton
from .act_gram import ACTIVATIONS, HF_ACTIVATIONS, activation_for
from .gram import dropped_rows, use_downdate

__all__ = [
    "ACTIVATIONS",
    "HF_ACTIVATIONS",
    "act_gram",
    "activation_for",
    "backend",
    "dropped_rows",
    "fused_scores",
    "kept_gram",
    "ks_statistic",
    "slice_ffn",
    "topk_rows",
    "topq_singular_values",
    "use_downdate",
    "use_triton",
]


def fused_scores(weights, direction, offset, noise=None):
    """(alpha, keep_prob, log_keep_prob) of every row of every layer; see `scoring`."""
    if use_triton(weights):
        return scoring.fused_scores_triton(weights, direction, offset, noise)
    return scoring.fused_scores_torch(weights, direction, offset, noise)


def topk_rows(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices (L, k) of the k largest keys of each layer; see `selection`."""
    if use_triton(keys):
        return selection.topk_rows_triton(keys, k)
    return selection.topk_rows_torch(keys, k)


def kept_gram(weights, kept, full_gram=None):
    """Gram matrix of the kept rows of each layer, float32; see `gram`."""
    if use_triton(weights):
        return gram.kept_gram_triton(weights, kept, full_gram)
    return gram.kept_gram_torch(weights, kept, full_gram)


def topq_singular_values(weights, kept, omega, q, power_iters=2):
    """Top q singular values of the kept rows of each layer by randomized SVD; see `rsvd`."""
    if use_triton(weights):
        return rsvd.topq_singular_values_triton(weights, kept, omega, q, power_iters)
    return rsvd.topq_singular_values_torch(weights, kept, omega, q, power_iters)


def ks_statistic(a, b):
    """Two-sample KS statistic per layer between sorted samples; see `ks`."""
    if use_triton(a):
        return ks.ks_statistic_triton(a, b)
    return ks.ks_statistic_torch(a, b)


def slice_ffn(gate, up, down, kept):
    """Kept rows of gate/up and kept columns of down, all layers in one launch; see `slicing`."""
    if use_triton(gate, up, down):
        return slicing.slice_ffn_triton(gate, up, down, kept)
    return slicing.slice_ffn_torch(gate, up, down, kept)


def act_gram(pre, up, activation, gram):
    """gram += A^T A in place (float32, bit-symmetric), A = act(pre) * up or act(pre); see `act_gram`."""
    if use_triton(pre, up, gram):
        return _act_gram.act_gram_triton(pre, up, activation, gram)
    return _act_gram.act_gram_torch(pre, up, activation, gram)
