"""Each prunenet kernel timed against its PyTorch twin (pytest-benchmark).

    pytest bench/test_bench_kernels.py --import-mode=importlib                    # time
    pytest bench/test_bench_kernels.py --import-mode=importlib --benchmark-disable  # check only

On CUDA: LLaMA-2-7B-shaped FFNs (32 layers, n=11008, h=4096, bfloat16, ratio 0.3), Triton vs twin;
act_gram: one layer's Gram over 16384 probe tokens (64 x 256) through the fused silu-gated variant (the
statistics pass runs the identity path: the same accumulation, with A read as it is instead of computed
from gate and up).
Elsewhere: a scaled-down shape (4 layers, 688 x 256, float32; act_gram over 512 tokens) and the twin
alone; the Triton cases skip (the interpreter measures Python, not the kernel). Every case checks its
result before it is timed: the twin against an independent reference, the Triton kernel against the
twin. Each benchmark's extra_info carries the machine's name and the achieved GB/s (memory-bound ops)
or TFLOP/s (matrix products).
Benchmarks are grouped by op, so the two backends of one op print side by side.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from prunenet_kernels.ops.act_gram import TORCH_ACTIVATIONS, act_gram_torch, act_gram_triton
from prunenet_kernels.ops.fused_scores import fused_scores_torch, fused_scores_triton
from prunenet_kernels.ops.kept_gram import kept_gram_torch, kept_gram_triton, use_downdate
from prunenet_kernels.ops.ks_statistic import ks_statistic_torch, ks_statistic_triton
from prunenet_kernels.ops.slice_ffn import slice_ffn_torch, slice_ffn_triton
from prunenet_kernels.ops.topk_rows import topk_rows_torch, topk_rows_triton
from prunenet_kernels.ops.topq_singular_values import topq_singular_values_torch, topq_singular_values_triton

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DEVICE_NAME = torch.cuda.get_device_name() if CUDA else "cpu"
if CUDA:
    L, N, H, DTYPE = 32, 11008, 4096, torch.bfloat16
    Q, P, TOKENS = 256, 272, 16384
else:
    L, N, H, DTYPE = 4, 688, 256, torch.float32
    Q, P, TOKENS = 32, 40, 512
K = int(0.7 * N)  # ratio 0.3: k >= h, and fewer rows dropped than kept (the downdate applies)
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not CUDA, reason="Triton is timed on CUDA only"))]


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    return torch.randn(*shape, generator=g, device=DEVICE, dtype=dtype)


def _kept() -> torch.Tensor:
    keys = _randn(L, N, seed=1)
    return keys.topk(K, dim=1).indices.sort(dim=1).values


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Case:
    """One op at the bench shape: its inputs, the two backends, a check of the twin, and the work done."""

    args: tuple
    twin: Callable
    triton: Callable
    check_twin: Callable[[object, tuple], None]
    unit: str  # "GB/s" or "TFLOP/s"
    work: float  # bytes or flops of one call
    rtol: float = 1e-3  # Triton vs twin (float32 results of float32 accumulation, different order)


def _fused_scores_case(backward: bool) -> Case:
    weights = _randn(L, N, H, dtype=DTYPE, seed=2) / H**0.5
    direction, offset, noise = _randn(H, seed=3), _randn(1, seed=4), _randn(L, N, seed=5)

    def run(fn):
        def call(w, d, o, z):
            if not backward:
                return fn(w, d, o, z)
            d, o = d.clone().requires_grad_(True), o.clone().requires_grad_(True)
            alpha, _, logp = fn(w, d, o, z)
            (logp.sum() + alpha.sum()).backward()
            return d.grad, o.grad
        return call

    def check(result, args):
        if backward:
            return  # the twin's gradients are autograd's; the Triton ones are compared with them
        w, d, o, z = args
        logits = (w.double() @ d.double()) + o.double()
        torch.testing.assert_close(result[0], torch.sigmoid(logits).float(), rtol=1e-4, atol=1e-5)
        logp = torch.nn.functional.logsigmoid(logits + z.double()).float()
        torch.testing.assert_close(result[2], logp, rtol=1e-4, atol=1e-5)

    return Case((weights, direction, offset, noise), run(fused_scores_torch), run(fused_scores_triton),
                check, "GB/s", _bytes(weights) * (2 if backward else 1))


def _topk_case() -> Case:
    keys = _randn(L, N, seed=6)

    def check(result, args):
        expected = args[0].double().topk(K, dim=1).indices.sort(dim=1).values
        assert torch.equal(result, expected)

    moved = _bytes(keys) + L * K * 8
    return Case((keys, K), topk_rows_torch, topk_rows_triton, check, "GB/s", moved)


def _gram_case(downdate: bool) -> Case:
    weights = _randn(L, N, H, dtype=DTYPE, seed=7)
    kept = _kept()
    full = kept_gram_torch(weights, torch.arange(N, device=DEVICE).expand(L, N).contiguous()) if downdate else None
    assert use_downdate(N, K, H, full) == downdate
    rows = N - K if downdate else K

    def check(result, args):
        w0 = args[0][0, args[1][0]].double()  # layer 0 in float64
        torch.testing.assert_close(result[0].double(), w0.T @ w0, rtol=1e-4, atol=1e-4 * K)

    flops = 2.0 * L * rows * H * H  # the product the twin computes; the Triton kernel does half (symmetry)
    return Case((weights, kept, full), kept_gram_torch, kept_gram_triton, check, "TFLOP/s", flops)


def _rsvd_case() -> Case:
    weights = _randn(L, N, H, dtype=DTYPE, seed=8)
    kept, omega = _kept(), _randn(L, H, P, seed=9)
    power_iters = 2

    def check(result, args):
        assert result.shape == (L, Q) and torch.isfinite(result).all()
        exact = torch.linalg.svdvals(args[0][0, args[1][0]].double())[:Q].flip(0)
        # Rayleigh-Ritz values are lower bounds of the true singular values, and not far below the top ones.
        assert (result[0].double() <= exact * (1 + 1e-4)).all()
        assert result[0, -1] >= 0.9 * exact[-1]

    # Gathered products only: (power_iters + 1) pairs W_s X, W_s^T Y and one last W_s X.
    flops = 2.0 * L * K * H * P * (2 * (power_iters + 1) + 1)
    return Case((weights, kept, omega, Q, power_iters), topq_singular_values_torch,
                topq_singular_values_triton, check, "TFLOP/s", flops, rtol=1e-2)


def _ks_case() -> Case:
    a = _randn(L, H, seed=10).sort(dim=1).values
    b = (_randn(L, H, seed=11) * 1.1 + 0.05).sort(dim=1).values

    def check(result, args):
        x, y = args[0][0].double(), args[1][0].double()
        points = torch.cat([x, y])
        cdf_x = (x[None, :] <= points[:, None]).double().mean(1)
        cdf_y = (y[None, :] <= points[:, None]).double().mean(1)
        gap = (cdf_x - cdf_y).abs()
        torch.testing.assert_close(result[0].double(), gap.max(), rtol=1e-6, atol=1e-6)

    return Case((a, b), ks_statistic_torch, ks_statistic_triton, check, "GB/s", _bytes(a, b), rtol=0)


def _slice_case() -> Case:
    gate, up = _randn(L, N, H, dtype=DTYPE, seed=12), _randn(L, N, H, dtype=DTYPE, seed=13)
    down = _randn(L, H, N, dtype=DTYPE, seed=14)
    kept = _kept()

    def check(result, args):
        assert torch.equal(result[0][-1], args[0][-1, args[3][-1]])
        assert torch.equal(result[2][-1], args[2][-1][:, args[3][-1]])

    moved = 2 * 3 * L * K * H * gate.element_size()  # read the kept rows/columns, write them
    return Case((gate, up, down, kept), slice_ffn_torch, slice_ffn_triton, check, "GB/s", moved, rtol=0)


def _act_gram_case() -> Case:
    gate_out, up_out = _randn(TOKENS, N, dtype=DTYPE, seed=15), _randn(TOKENS, N, dtype=DTYPE, seed=16)

    def fresh(fn):  # a zeroed float32 accumulator per call (its memset timed too), as the pass has per layer
        return lambda pre, up, act: fn(pre, up, act, torch.zeros(N, N, device=DEVICE))

    def check(result, args):
        a = (TORCH_ACTIVATIONS["silu"](args[0][:, :256].double()) * args[1][:, :256].double()).to(DTYPE).double()
        torch.testing.assert_close(result[:256, :256].double(), a.T @ a, rtol=1e-4, atol=1e-4 * TOKENS)
        assert torch.equal(result, result.T)

    flops = 2.0 * TOKENS * N * N  # a full A^T A; both backends compute about half of it (the upper triangle)
    return Case((gate_out, up_out, "silu"), fresh(act_gram_torch), fresh(act_gram_triton), check, "TFLOP/s", flops)


CASES = {
    "fused_scores": lambda: _fused_scores_case(backward=False),
    "fused_scores_fwd_bwd": lambda: _fused_scores_case(backward=True),
    "topk_rows": _topk_case,
    "kept_gram_direct": lambda: _gram_case(downdate=False),
    "kept_gram_downdate": lambda: _gram_case(downdate=True),
    "topq_singular_values": _rsvd_case,
    "ks_statistic": _ks_case,
    "slice_ffn": _slice_case,
    "act_gram": _act_gram_case,
}


def _assert_same(got, want, rtol: float) -> None:
    if isinstance(want, (tuple, list)):
        for g, w in zip(got, want):
            _assert_same(g, w, rtol)
    elif want is None:
        assert got is None
    elif rtol == 0 or not want.is_floating_point():
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * want.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(CASES))
def test_bench(benchmark, op, backend):
    case = CASES[op]()
    expected = case.twin(*case.args)
    case.check_twin(expected, case.args)
    fn = case.twin if backend == "torch" else case.triton
    if backend == "triton":
        _assert_same(fn(*case.args), expected, case.rtol)  # also compiles and autotunes before timing
    del expected

    def timed():
        out = fn(*case.args)
        _sync()
        return out

    benchmark.group = op
    benchmark.extra_info.update(
        device=DEVICE_NAME, backend=backend, dtype=str(DTYPE).removeprefix("torch."),
        shape=f"T={TOKENS} n={N}" if op == "act_gram" else f"L={L} n={N} h={H} k={K}", unit=case.unit,
    )
    benchmark(timed)
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.mean
        scale = 1e9 if case.unit == "GB/s" else 1e12
        benchmark.extra_info[case.unit] = round(case.work / seconds / scale, 3)
