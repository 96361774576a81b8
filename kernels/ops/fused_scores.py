"""Fused importance scoring of every row of every layer's scored matrix.

The policy scores row i of W as alpha_i = sigmoid((W A^T + b) r)_i. Reassociated, (W A^T + b) r =
W (A^T r) + (b . r), that is alpha = sigmoid(z), z = W v + c with v = A^T r (h,) and c = b . r: one
batched GEMV over the stacked (L, n, h) weights instead of an (n x n x h) product. With eps ~ U(0, 1) and
noise = logit(eps), the noisy keep probability is p = sigmoid(noise + logit(alpha)) = sigmoid(noise + z),
and log p is computed as logsigmoid(noise + z) so that it never rounds to -inf.

The Triton version is one kernel forward (GEMV + offset + sigmoid + noise + sigmoid + logsigmoid) and
one backward kernel for the gradient of `direction`: each program sums dz[r] * W[r, :] over a fixed
group of rows into its own row of a (groups, h) buffer, which torch then sums: deterministic, no atomics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._triton_utils import INTERPRET, autotune_configs, nan_buffer

# Rows of one layer that one backward program reduces into one partial row of d_direction; a multiple
# of every BLOCK_N of the backward kernel's configs.
_BWD_ROWS_PER_PROGRAM = 16 if INTERPRET else 512
# Row-block x column-block tiles tried on a GPU, by both the forward and the backward kernel.
_GPU_CONFIGS = [
    {"BLOCK_N": 16, "BLOCK_H": 256},
    {"BLOCK_N": 32, "BLOCK_H": 128},
    {"BLOCK_N": 64, "BLOCK_H": 128, "num_warps": 8},
]


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


@triton.jit
def _sigmoid_parts(x):
    """(sigmoid(x), logsigmoid(x)) without overflow: both from t = exp(-|x|) in (0, 1].

    logsigmoid = min(x, 0) - log1p(t), log1p by the log(u) * t / (u - 1) trick (Triton has no log1p):
    accurate where t is below float32 epsilon, so a large x gives -exp(-x) rather than 0."""
    t = tl.exp(-tl.abs(x))
    u = 1.0 + t
    sig = tl.where(x >= 0, 1.0 / u, t / u)
    log1p_t = tl.where(u == 1.0, t, tl.log(u) * (t / tl.where(u == 1.0, 1.0, u - 1.0)))
    return sig, tl.minimum(x, 0.0) - log1p_t


@triton.autotune(
    configs=autotune_configs(
        _GPU_CONFIGS,
        {"BLOCK_N": 16, "BLOCK_H": 16},
    ),
    key=["n", "h"],
)
@triton.jit
def _fused_scores_kernel(
    w_ptr, dir_ptr, off_ptr, noise_ptr, alpha_ptr, p_ptr, logp_ptr,
    n, h,
    stride_wl, stride_wn, stride_wh, stride_d, stride_nl, stride_nn,
    HAS_NOISE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """Rows [i0, i0 + BLOCK_N) of one layer; outputs are contiguous (L, n). Tile starts enter as scalar
    64-bit pointer offsets and per-element offsets stay int32 (64-bit tiles double the registers)."""
    i0 = tl.program_id(0).to(tl.int64) * BLOCK_N
    layer = tl.program_id(1).to(tl.int64)
    r = tl.arange(0, BLOCK_N)
    row_mask = r < n - i0
    row_ptr = w_ptr + layer * stride_wl + i0 * stride_wn + r * stride_wn
    cols = tl.arange(0, BLOCK_H)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for h0 in range(0, h, BLOCK_H):
        col_mask = cols < h - h0
        w = tl.load(row_ptr[:, None] + (h0 + cols[None, :]) * stride_wh,
                    mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)
        d = tl.load(dir_ptr + (h0 + cols) * stride_d, mask=col_mask, other=0.0).to(tl.float32)
        acc += tl.sum(w * d[None, :], axis=1)
    z = acc + tl.load(off_ptr).to(tl.float32)
    noisy = z
    if HAS_NOISE:
        noise_ptr += layer * stride_nl + i0 * stride_nn
        noisy = z + tl.load(noise_ptr + r * stride_nn, mask=row_mask, other=0.0).to(tl.float32)
    alpha, _ = _sigmoid_parts(z)
    p, logp = _sigmoid_parts(noisy)
    out = layer * n + i0 + r
    tl.store(alpha_ptr + out, alpha, mask=row_mask)
    tl.store(p_ptr + out, p, mask=row_mask)
    tl.store(logp_ptr + out, logp, mask=row_mask)


@triton.autotune(
    configs=autotune_configs(
        _GPU_CONFIGS,
        {"BLOCK_N": 8, "BLOCK_H": 16},
    ),
    key=["n", "h"],
)
@triton.jit
def _fused_scores_bwd_kernel(
    w_ptr, alpha_ptr, p_ptr, ga_ptr, gp_ptr, gl_ptr, part_dir_ptr, part_off_ptr,
    n, h, rows_per_program,
    stride_wl, stride_wn, stride_wh, stride_part,
    HAS_GA: tl.constexpr, HAS_GP: tl.constexpr, HAS_GL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """Partial sums over rows [i0, i0 + rows_per_program) of one layer, written to row g of the buffers:
    part_dir[g, cols] = sum_r dz[r] W[r, cols], part_off[g] = sum_r dz[r], with
    dz = g_alpha alpha (1 - alpha) + g_p p (1 - p) + g_logp (1 - p) recomputed from the saved outputs."""
    pid_g = tl.program_id(0).to(tl.int64)
    h0 = tl.program_id(1).to(tl.int64) * BLOCK_H
    layer = tl.program_id(2).to(tl.int64)
    group = layer * tl.num_programs(0) + pid_g
    i0 = pid_g * rows_per_program
    w_ptr += layer * stride_wl + i0 * stride_wn + h0 * stride_wh
    vec = layer * n + i0  # offset of row i0 in the contiguous (L, n) saved outputs and incoming grads
    cols = tl.arange(0, BLOCK_H)
    col_mask = cols < h - h0
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc_off = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for r0 in range(0, rows_per_program, BLOCK_N):
        r = r0 + tl.arange(0, BLOCK_N)
        row_mask = r < n - i0  # rows_per_program is a multiple of every BLOCK_N: no row of the next group
        p = tl.load(p_ptr + vec + r, mask=row_mask, other=0.0)
        dz = tl.zeros((BLOCK_N,), dtype=tl.float32)
        if HAS_GA:
            alpha = tl.load(alpha_ptr + vec + r, mask=row_mask, other=0.0)
            dz += tl.load(ga_ptr + vec + r, mask=row_mask, other=0.0).to(tl.float32) * alpha * (1.0 - alpha)
        if HAS_GP:
            dz += tl.load(gp_ptr + vec + r, mask=row_mask, other=0.0).to(tl.float32) * p * (1.0 - p)
        if HAS_GL:
            dz += tl.load(gl_ptr + vec + r, mask=row_mask, other=0.0).to(tl.float32) * (1.0 - p)
        dz = tl.where(row_mask, dz, 0.0)
        acc_off += dz
        w = tl.load(w_ptr + r[:, None] * stride_wn + cols[None, :] * stride_wh,
                    mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(w * dz[:, None], axis=0)
    tl.store(part_dir_ptr + group * stride_part + h0 + cols, acc, mask=col_mask)
    if h0 == 0:
        tl.store(part_off_ptr + group, tl.sum(acc_off, axis=0))


class _FusedScores(torch.autograd.Function):
    """Triton forward and backward; gradients flow to direction and offset only (weights and noise get None)."""

    @staticmethod
    def forward(ctx, weights, direction, offset, noise):
        L, n, h = weights.shape
        alpha, p, logp = (nan_buffer((L, n), torch.float32, weights.device) for _ in range(3))
        noise_arg = alpha if noise is None else noise
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), L)  # noqa: E731
        _fused_scores_kernel[grid](
            weights, direction, offset, noise_arg, alpha, p, logp,
            n, h,
            *weights.stride(), direction.stride(0), noise_arg.stride(0), noise_arg.stride(1),
            HAS_NOISE=noise is not None,
        )
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(weights, alpha, p)
        ctx.direction_dtype = direction.dtype
        ctx.offset_shape, ctx.offset_dtype = offset.shape, offset.dtype
        return alpha, p, logp

    @staticmethod
    def backward(ctx, g_alpha, g_p, g_logp):
        weights, alpha, p = ctx.saved_tensors
        needs_direction, needs_offset = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if (g_alpha is None and g_p is None and g_logp is None) or not (needs_direction or needs_offset):
            return None, None, None, None
        L, n, h = weights.shape
        groups_per_layer = triton.cdiv(n, _BWD_ROWS_PER_PROGRAM)
        part_dir = nan_buffer((L * groups_per_layer, h), torch.float32, weights.device)
        part_off = nan_buffer((L * groups_per_layer,), torch.float32, weights.device)
        grads = [None if g is None else g.contiguous() for g in (g_alpha, g_p, g_logp)]
        grid = lambda meta: (groups_per_layer, triton.cdiv(h, meta["BLOCK_H"]), L)  # noqa: E731
        _fused_scores_bwd_kernel[grid](
            weights, alpha, p, *(alpha if g is None else g for g in grads), part_dir, part_off,
            n, h, _BWD_ROWS_PER_PROGRAM,
            *weights.stride(), part_dir.stride(0),
            HAS_GA=grads[0] is not None, HAS_GP=grads[1] is not None, HAS_GL=grads[2] is not None,
        )
        d_direction = part_dir.sum(0).to(ctx.direction_dtype) if needs_direction else None
        d_offset = part_off.sum().reshape(ctx.offset_shape).to(ctx.offset_dtype) if needs_offset else None
        return None, d_direction, d_offset, None


def fused_scores_triton(
    weights: torch.Tensor, direction: torch.Tensor, offset: torch.Tensor, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton twin of `fused_scores_torch`: same outputs, gradients to direction and offset."""
    _check(weights, direction, offset, noise)
    return _FusedScores.apply(weights, direction, offset, noise)
