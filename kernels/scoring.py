"""Fused importance scoring of every row of every layer's scored matrix.

The policy scores row i of W as alpha_i = sigmoid((W A^T + b) r)_i. Reassociated (DESIGN 3.1) that is
alpha = sigmoid(W v + c) with v = A^T r (h,) and c = b . r: one batched GEMV over the stacked
(L, n, h) weights instead of an (n x n x h) product. With eps ~ U(0, 1) and noise = logit(eps), the
noisy keep probability is p = sigmoid(noise + logit(alpha)) = sigmoid(noise + z), and log p is
computed as logsigmoid(noise + z) so that it never rounds to -inf.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(weights: torch.Tensor, direction: torch.Tensor, offset: torch.Tensor, noise: torch.Tensor | None) -> None:
    if weights.dim() != 3:
        raise ValueError(f"weights must be (L, n, h), got shape {tuple(weights.shape)}")
    if direction.shape != (weights.shape[2],):
        raise ValueError(f"direction must be ({weights.shape[2]},), got shape {tuple(direction.shape)}")
    if offset.numel() != 1:
        raise ValueError(f"offset must hold one value, got shape {tuple(offset.shape)}")
    if noise is not None and noise.shape != weights.shape[:2]:
        raise ValueError(f"noise must be {tuple(weights.shape[:2])}, got shape {tuple(noise.shape)}")


def fused_scores_torch(
    weights: torch.Tensor, direction: torch.Tensor, offset: torch.Tensor, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha, keep_prob, log_keep_prob), each (L, n) float32, differentiable in direction and offset.

    weights (L, n, h), any float dtype; direction (h,) and offset (one value) float32; noise (L, n)
    logit(eps) or None (then keep_prob is alpha).
    """
    _check(weights, direction, offset, noise)
    z = torch.matmul(weights.float(), direction.float()) + offset.float().reshape(())
    noisy = z if noise is None else z + noise.float()
    return torch.sigmoid(z), torch.sigmoid(noisy), F.logsigmoid(noisy)
