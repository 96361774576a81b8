"""Symmetric Gram accumulation gram += A^T A in float32, with an optional fused activation A = act(pre) * up.

The statistics pass accumulates, per decoder layer and over all probe tokens, the Gram matrix of the
FFN's intermediate activations A (T tokens x n), the input of the output matrix (down_proj, fc2). It
hooks down_proj's input and calls the identity path, `act_gram(A, None, "identity", gram)`: the model's
forward computes A = act(gate x) * up x anyway to feed down_proj, so fusing the activation there would
save no work. Production thus runs a fused symmetric Gram accumulation: float32 accumulation of the
upper triangle only, mirrored into the lower one, so the result is bit-symmetric.

The activation variants, A = act(pre) * up (gated FFNs) or act(pre) (`up` None), serve callers that
hold the pre-activations rather than A, and are tested like the identity path. The activation is
evaluated in float32; with bfloat16/float16 inputs A is then rounded to the input dtype, as the
model's own down_proj input is, so the products run on the narrow matrix units.

The Triton kernel never materialises A: each program computes its two (T-block x n-block) tiles of A
from pre and up on the fly (plain loads of pre on the identity path), accumulates one upper-triangle
tile of A^T A over T with tl.dot (about half the products of a full A^T A), adds the tile of gram and
writes it and its mirror image (`_tiles._store_mirrored`). The twin materialises A and accumulates
the upper triangle by block rows, then mirrors it (`_tiles.mirror_upper_`). Both read only gram's
upper triangle.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._tiles import _load_square_tile, _store_mirrored, mirror_upper_
from ._triton_utils import autotune_configs

# The kernel's activations as torch functions (the twin's); each maps 0 to 0 (the kernel's masked loads rely on it).
TORCH_ACTIVATIONS = {
    "identity": lambda x: x,
    "silu": F.silu,
    "relu": torch.relu,
    "gelu": F.gelu,  # erf form
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
ACTIVATIONS = tuple(TORCH_ACTIVATIONS)

# Hugging Face activation names (config.hidden_act / hidden_activation / activation_function, the keys
# of transformers' ACT2FN) whose function is one of the kernel's. Left out because the math differs:
# quick_gelu (x sigmoid(1.702 x)), gelu_10 (clipped), relu2, relu6, leaky_relu, mish, xielu, ...
HF_ACTIVATIONS = {
    "linear": "identity",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_accurate": "gelu_tanh",
    # 0.7978845608 (x + 0.044715 x^3): sqrt(2/pi) cut to ten digits, the same float32 constant.
    "gelu_fast": "gelu_tanh",
}

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Column block of the twin: its products cover the upper triangle in block rows, (1 + 512/n) / 2 of a full
# A^T A (0.67 at n=1536: measured 0.86x the time of one full addmm at T=2048 on a shared 2-core CPU).
_TWIN_BLOCK = 512


def activation_for(hf_name: str) -> str | None:
    """The kernel activation computing Hugging Face's `hf_name` (an ACT2FN key), or None if there is none."""
    if not isinstance(hf_name, str):
        raise TypeError(f"activation name must be a str, got {type(hf_name).__name__}")
    return HF_ACTIVATIONS.get(hf_name)


def _check(pre: torch.Tensor, up: torch.Tensor | None, activation: str, gram: torch.Tensor) -> None:
    given = {"pre": pre, "gram": gram} | ({} if up is None else {"up": up})
    for name, t in given.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if pre.dim() != 2:
        raise ValueError(f"pre must be (T, n), got shape {tuple(pre.shape)}")
    if pre.dtype not in _DTYPES:
        raise TypeError(f"pre must be float32, bfloat16 or float16, got {pre.dtype}")
    if up is not None and (up.shape != pre.shape or up.dtype != pre.dtype or up.device != pre.device):
        raise ValueError(f"up must match pre ({pre.dtype} {tuple(pre.shape)} on {pre.device}), "
                         f"got {up.dtype} {tuple(up.shape)} on {up.device}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    n = pre.shape[1]
    if gram.dtype != torch.float32:
        raise TypeError(f"gram must be float32, got {gram.dtype}")
    if gram.shape != (n, n) or gram.device != pre.device:
        raise ValueError(f"gram must be ({n}, {n}) on {pre.device}, got {tuple(gram.shape)} on {gram.device}")
    if not gram.is_contiguous():
        raise ValueError(f"gram must be contiguous, got strides {gram.stride()}")


def act_gram_torch(pre: torch.Tensor, up: torch.Tensor | None, activation: str, gram: torch.Tensor) -> torch.Tensor:
    """gram += A^T A in place and return gram; A = act(pre) * up, or act(pre) when `up` is None.

    pre, up: (T, n) of one float dtype; activation: one of ACTIVATIONS; gram: (n, n) float32,
    contiguous, symmetric (only its upper triangle is read; the lower one is overwritten by its mirror
    image). T == 0 leaves gram as it is.
    """
    _check(pre, up, activation, gram)
    if pre.shape[0] == 0:
        return gram
    a = TORCH_ACTIVATIONS[activation](pre.float())
    if up is not None:
        a = a * up.float()
    a = a.to(pre.dtype).float()  # the kernel's rounding of A to the input dtype (none for float32)
    n = a.shape[1]
    for i0 in range(0, n, _TWIN_BLOCK):  # block rows of the upper triangle only, as the kernel (syrk-like)
        i1 = min(i0 + _TWIN_BLOCK, n)
        gram[i0:i1, i0:].addmm_(a[:, i0:i1].T, a[:, i0:])
    return mirror_upper_(gram)


@triton.jit
def _activation(x, ACTIVATION: tl.constexpr):
    """ACTIVATION of a float32 tile, in forms with no cancellation: 1 + tanh(z) = 2 sigmoid(2z)."""
    if ACTIVATION == "silu":
        y = x / (1.0 + tl.exp(-x))
    elif ACTIVATION == "relu":
        y = tl.where(x < 0.0, 0.0, x)  # NaN stays NaN, as in torch.relu
    elif ACTIVATION == "gelu":
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACTIVATION == "gelu_tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        y = x / (1.0 + tl.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x)))
    else:
        y = x
    return y


@triton.jit
def _activated_tile(pre_ptrs, up_ptrs, mask, ACTIVATION: tl.constexpr, GATED: tl.constexpr):
    """A tile of A = act(pre) * up (or act(pre)), zero where masked, rounded to pre's dtype."""
    a = _activation(tl.load(pre_ptrs, mask=mask, other=0.0).to(tl.float32), ACTIVATION)
    if GATED:
        a = a * tl.load(up_ptrs, mask=mask, other=0.0).to(tl.float32)
    return a.to(pre_ptrs.dtype.element_ty)


@triton.autotune(
    configs=autotune_configs(
        [
            {"BLOCK": 64, "BLOCK_T": 64, "num_warps": 4},
            {"BLOCK": 128, "BLOCK_T": 32, "num_warps": 8},
            {"BLOCK": 128, "BLOCK_T": 64, "num_warps": 8},
        ],
        {"BLOCK": 16, "BLOCK_T": 16},
    ),
    key=["T", "n"],
    restore_value=["g_ptr"],  # autotuning runs the kernel several times; it accumulates in place
)
@triton.jit
def _act_gram_kernel(
    pre_ptr, up_ptr, g_ptr,
    T, n,
    stride_pt, stride_pn, stride_ut, stride_un, stride_gm, stride_gn,
    ACTIVATION: tl.constexpr, GATED: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """g[m0:, n0:] += A[:, m0:]^T A[:, n0:] for the tile (pid_m, pid_n) with pid_m <= pid_n, and its
    mirror image; programs below the diagonal exit. Operand pointers advance by BLOCK_T rows a step
    (64-bit pointer arithmetic, so T * n may exceed 2^31)."""
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    if pid_m > pid_n:
        return
    m0 = pid_m * BLOCK
    n0 = pid_n * BLOCK
    i = tl.arange(0, BLOCK)
    t = tl.arange(0, BLOCK_T)
    m_ok = i < n - m0
    n_ok = i < n - n0
    # A^T rows m0.. as a (BLOCK x BLOCK_T) tile, A columns n0.. as a (BLOCK_T x BLOCK) tile.
    pre_m = pre_ptr + m0 * stride_pn + i[:, None] * stride_pn + t[None, :] * stride_pt
    up_m = up_ptr + m0 * stride_un + i[:, None] * stride_un + t[None, :] * stride_ut
    pre_n = pre_ptr + n0 * stride_pn + t[:, None] * stride_pt + i[None, :] * stride_pn
    up_n = up_ptr + n0 * stride_un + t[:, None] * stride_ut + i[None, :] * stride_un
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t_ok = t < T - t0
        a_mt = _activated_tile(pre_m, up_m, m_ok[:, None] & t_ok[None, :], ACTIVATION, GATED)
        a_n = _activated_tile(pre_n, up_n, t_ok[:, None] & n_ok[None, :], ACTIVATION, GATED)
        acc = tl.dot(a_mt, a_n, acc, input_precision="ieee")
        pre_m += BLOCK_T * stride_pt
        pre_n += BLOCK_T * stride_pt
        up_m += BLOCK_T * stride_ut
        up_n += BLOCK_T * stride_ut
    tile = _load_square_tile(g_ptr, m0, n0, n, stride_gm, stride_gn, BLOCK) + acc
    _store_mirrored(g_ptr, tile, m0, n0, n, stride_gm, stride_gn, BLOCK)


def act_gram_triton(pre: torch.Tensor, up: torch.Tensor | None, activation: str, gram: torch.Tensor) -> torch.Tensor:
    """Triton twin of `act_gram_torch`: one launch, A never materialised."""
    _check(pre, up, activation, gram)
    T, n = pre.shape
    if T == 0 or n == 0:
        return gram
    gated = up is not None
    u = up if gated else pre  # never read when not gated
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK"]), triton.cdiv(n, meta["BLOCK"]))  # noqa: E731
    _act_gram_kernel[grid](
        pre, u, gram, T, n, *pre.stride(), *u.stride(), *gram.stride(),
        ACTIVATION=activation, GATED=gated,
    )
    return gram
