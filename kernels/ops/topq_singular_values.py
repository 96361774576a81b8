"""Batched randomized SVD of the kept rows: the top q singular values of every layer.

Range finder on the row space of W_s = W[kept] (k x h): Y = W_s^T (W_s Omega), power iterations with
QR re-orthonormalisation, then the singular values of W_s Q from the small (p x p) eigenproblem of
(W_s Q)^T (W_s Q). The only heavy work is the two gather-fused products W_s X and W_s^T Y; QR and the
small eigenproblem are batched library calls.

The Triton products read W_s straight from W through the index list (`_tiles._load_kept_tile`); float32
operands (x, y, and W upcast if narrower) with IEEE float32 dot products, so that they match the twins.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from ._tiles import _load_kept_tile
from ._triton_utils import autotune_configs, check_indices, nan_buffer

MatMul = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _check_weights_kept(weights: torch.Tensor, kept: torch.Tensor) -> None:
    if weights.dim() != 3:
        raise ValueError(f"weights must be (L, n, h), got shape {tuple(weights.shape)}")
    L = weights.shape[0]
    if kept.dim() != 2 or kept.shape[0] != L or kept.dtype != torch.int64:
        raise ValueError(f"kept must be int64 (L={L}, k), got {kept.dtype} {tuple(kept.shape)}")


def _check(weights: torch.Tensor, kept: torch.Tensor, omega: torch.Tensor, q: int, power_iters: int) -> None:
    _check_weights_kept(weights, kept)
    L, n, h = weights.shape
    if omega.dim() != 3 or omega.shape[:2] != (L, h):
        raise ValueError(f"omega must be ({L}, {h}, p), got shape {tuple(omega.shape)}")
    p = omega.shape[2]
    if not 1 <= q <= min(p, kept.shape[1], h):
        raise ValueError(f"q={q} must be in [1, min(p={p}, k={kept.shape[1]}, h={h})]")
    if power_iters < 0:
        raise ValueError(f"power_iters={power_iters} must be >= 0")


def gathered_matmul_torch(weights: torch.Tensor, kept: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W[l, kept[l]] @ x[l]: (L, k, h) x (L, h, p) -> (L, k, p) float32."""
    rows = torch.gather(weights, 1, kept.unsqueeze(-1).expand(-1, -1, weights.shape[2])).float()
    return rows @ x.float()


def gathered_tmatmul_torch(weights: torch.Tensor, kept: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W[l, kept[l]]^T @ y[l]: (L, h, k) x (L, k, p) -> (L, h, p) float32."""
    rows = torch.gather(weights, 1, kept.unsqueeze(-1).expand(-1, -1, weights.shape[2])).float()
    return rows.transpose(1, 2) @ y.float()


def randomized_singular_values(
    weights: torch.Tensor,
    kept: torch.Tensor,
    omega: torch.Tensor,
    q: int,
    power_iters: int,
    matmul: MatMul,
    tmatmul: MatMul,
) -> torch.Tensor:
    """The algorithm, parameterised by the two gather-fused products (twin or Triton)."""
    _check(weights, kept, omega, q, power_iters)
    y = tmatmul(weights, kept, matmul(weights, kept, omega.float()))
    for _ in range(power_iters):
        basis = torch.linalg.qr(y).Q
        y = tmatmul(weights, kept, matmul(weights, kept, basis))
    basis = torch.linalg.qr(y).Q
    projected = matmul(weights, kept, basis)
    eig = torch.linalg.eigvalsh(projected.transpose(1, 2) @ projected)
    return eig[:, -q:].clamp_min(0).sqrt()


def topq_singular_values_torch(
    weights: torch.Tensor, kept: torch.Tensor, omega: torch.Tensor, q: int, power_iters: int = 2
) -> torch.Tensor:
    """Top q singular values (L, q) ascending of weights[l, kept[l]]; omega (L, h, p >= q) is the test matrix."""
    return randomized_singular_values(
        weights, kept, omega, q, power_iters, gathered_matmul_torch, gathered_tmatmul_torch
    )


@triton.autotune(
    configs=autotune_configs(
        [
            {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4},
            {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 8},
            {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "num_warps": 8},
        ],
        {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16},
    ),
    key=["size_m", "inner", "p"],
)
@triton.jit
def _gathered_matmul_kernel(
    w_ptr, idx_ptr, x_ptr, out_ptr,
    size_m, inner, p, k, h,
    stride_wl, stride_wn, stride_wh, stride_il, stride_ik,
    stride_xl, stride_xk, stride_xp, stride_ol, stride_om, stride_op,
    TRANSPOSED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[l] = A @ x[l] with A = W_s (k x h), or W_s^T (h x k) when TRANSPOSED; float32."""
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    layer = tl.program_id(2).to(tl.int64)
    w_ptr += layer * stride_wl
    idx_ptr += layer * stride_il
    m0 = pid_m * BLOCK_M
    n0 = pid_n * BLOCK_N
    x_ptr += layer * stride_xl + n0 * stride_xp
    t = tl.arange(0, BLOCK_K)
    j = tl.arange(0, BLOCK_N)
    j_ok = j < p - n0
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t0 in range(0, inner, BLOCK_K):
        a = _load_kept_tile(w_ptr, idx_ptr, stride_wn, stride_wh, stride_ik, m0, t0, k, h, BLOCK_M, BLOCK_K, TRANSPOSED)
        x = tl.load(x_ptr + t0 * stride_xk + t[:, None] * stride_xk + j[None, :] * stride_xp,
                    mask=(t[:, None] < inner - t0) & j_ok[None, :], other=0.0)
        acc = tl.dot(a.to(tl.float32), x.to(tl.float32), acc, input_precision="ieee")
    i = tl.arange(0, BLOCK_M)
    out_ptr += layer * stride_ol + m0 * stride_om + n0 * stride_op
    mask = (i[:, None] < size_m - m0) & j_ok[None, :]
    tl.store(out_ptr + i[:, None] * stride_om + j[None, :] * stride_op, acc, mask=mask)


def _gathered_product(weights: torch.Tensor, kept: torch.Tensor, x: torch.Tensor, transposed: bool) -> torch.Tensor:
    _check_weights_kept(weights, kept)
    L, n, h = weights.shape
    check_indices(kept, n)
    k = kept.shape[1]
    size_m, inner = (h, k) if transposed else (k, h)
    if x.dim() != 3 or x.shape[:2] != (L, inner):
        name = "y" if transposed else "x"
        raise ValueError(f"{name} must be ({L}, {inner}, p), got shape {tuple(x.shape)}")
    p = x.shape[2]
    out = nan_buffer((L, size_m, p), torch.float32, weights.device)
    grid = lambda meta: (triton.cdiv(size_m, meta["BLOCK_M"]), triton.cdiv(p, meta["BLOCK_N"]), L)  # noqa: E731
    _gathered_matmul_kernel[grid](
        weights, kept, x, out,
        size_m, inner, p, k, h,
        *weights.stride(), *kept.stride(), *x.stride(), *out.stride(),
        TRANSPOSED=transposed,
    )
    return out


def gathered_matmul_triton(weights: torch.Tensor, kept: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Triton twin of `gathered_matmul_torch`: W[l, kept[l]] @ x[l] -> (L, k, p) float32, W_s never materialised."""
    return _gathered_product(weights, kept, x, transposed=False)


def gathered_tmatmul_triton(weights: torch.Tensor, kept: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Triton twin of `gathered_tmatmul_torch`: W[l, kept[l]]^T @ y[l] -> (L, h, p) float32."""
    return _gathered_product(weights, kept, y, transposed=True)


def topq_singular_values_triton(
    weights: torch.Tensor, kept: torch.Tensor, omega: torch.Tensor, q: int, power_iters: int = 2
) -> torch.Tensor:
    """Triton twin of `topq_singular_values_torch`: the same algorithm over the Triton gathered products."""
    return randomized_singular_values(
        weights, kept, omega, q, power_iters, gathered_matmul_triton, gathered_tmatmul_triton
    )
