"""prunenet's compute ops, one file per op in `ops/`, each a Triton kernel with a PyTorch twin.

Every op file `ops/<op>.py` defines its `@triton.jit` kernel(s), the launcher `<op>_triton` and the
twin `<op>_torch` of the same signature. The names exported here are `Op` objects of the table `OPS`:
calling one runs the launcher when every tensor argument is a CUDA tensor and the twin otherwise;
the environment variable PRUNENET_KERNELS=torch|triton forces either. Installed as
`prunenet_kernels` (never as `kernels`, the name of a Hugging Face package that transformers probes for).

`act_gram` accumulates gram += A^T A (float32, upper triangle computed and mirrored, so bit-symmetric).
The statistics pass calls its identity path, `act_gram(A, None, "identity", gram)`, on the model's own
down_proj input: the forward computes A = act(gate x) * up x anyway, so fusing the activation there
would save no work. The fused activation variants (`ACTIVATIONS`, `activation_for`) are for callers
that hold the pre-activations.
"""
from __future__ import annotations

from typing import Any

from ._dispatch import Op, backend, use_triton
from .ops.act_gram import ACTIVATIONS, HF_ACTIVATIONS, act_gram_torch, act_gram_triton, activation_for
from .ops.fused_scores import fused_scores_torch, fused_scores_triton
from .ops.kept_gram import dropped_rows, kept_gram_torch, kept_gram_triton, use_downdate
from .ops.ks_statistic import ks_statistic_torch, ks_statistic_triton
from .ops.slice_ffn import slice_ffn_torch, slice_ffn_triton
from .ops.topk_rows import topk_rows_torch, topk_rows_triton
from .ops.topq_singular_values import topq_singular_values_torch, topq_singular_values_triton

__all__ = [
    "ACTIVATIONS",
    "HF_ACTIVATIONS",
    "OPS",
    "Op",
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

# (alpha, keep_prob, log_keep_prob) of every row of every layer: fused GEMV + sigmoid + noise, Triton backward.
fused_scores = Op(fused_scores_triton, fused_scores_torch)
# Sorted indices (L, k) of the k largest keys of each layer (Gumbel top-k sampling when the keys carry noise).
topk_rows = Op(topk_rows_triton, topk_rows_torch)
# Gram matrix of the kept rows of each layer, float32, gather-fused; a downdate of the full Gram when cheaper.
kept_gram = Op(kept_gram_triton, kept_gram_torch)
# Top q singular values of the kept rows of each layer, by batched randomized SVD.
topq_singular_values = Op(topq_singular_values_triton, topq_singular_values_torch)
# Two-sample Kolmogorov-Smirnov statistic per layer between sorted samples.
ks_statistic = Op(ks_statistic_triton, ks_statistic_torch)
# Kept rows of gate/up and kept columns of down, all layers in one launch.
slice_ffn = Op(slice_ffn_triton, slice_ffn_torch)
# gram += A^T A in place (float32, bit-symmetric); A = act(pre) * up, act(pre), or pre itself ("identity").
act_gram = Op(act_gram_triton, act_gram_torch)

OPS: dict[str, Op[..., Any]] = {
    op.name: op for op in (fused_scores, topk_rows, kept_gram, topq_singular_values, ks_statistic, slice_ffn, act_gram)
}
