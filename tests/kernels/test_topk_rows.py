"""topk_rows: the Triton selection equals the twin's, ties and extreme values included."""
from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE, DTYPES, gpu_only, randn

from prunenet_kernels.ops.topk_rows import topk_rows_torch, topk_rows_triton


def _keys(kind: str, L: int, n: int) -> torch.Tensor:
    if kind == "distinct":
        return randn(L, n, seed=5)
    if kind == "ties":  # few distinct values: the k-th largest is shared by many rows
        return (randn(L, n, seed=6) * 1.5).round()
    if kind == "constant":  # every key equal, zeros of both signs: all ties, broken by index
        keys = torch.zeros(L, n, device=DEVICE)
        keys[:, ::3] = -0.0
        return keys
    if kind == "extremes":
        values = torch.tensor([float("inf"), -float("inf"), float("nan"), 3e38, -3e38, 1.0, -1.0, 0.0])
        return values.repeat(L, n // 8 + 1)[:, :n].contiguous().to(DEVICE)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["distinct", "ties", "constant", "extremes"])
@pytest.mark.parametrize(
    "L, n, k",
    [
        pytest.param(1, 1, 1, id="L1-n1-k1"),
        pytest.param(3, 37, 1, id="L3-n37-k1"),
        pytest.param(3, 37, 12, id="L3-n37-k12"),
        pytest.param(2, 50, 50, id="L2-n50-k=n"),
        pytest.param(1, 50, 49, id="L1-n50-k49"),
        pytest.param(4, 11008, 7705, id="L4-n11008-k7705", marks=gpu_only),
    ],
)
def test_topk_rows_matches_twin_exactly(L, n, k, kind):
    keys = _keys(kind, L, n)
    got = topk_rows_triton(keys, k)
    assert torch.equal(got, topk_rows_torch(keys, k))


@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_rows_strided_and_narrow_keys(dtype):
    keys = (randn(3, 80, seed=7) * 2).round().to(dtype)[:, ::2]  # non-contiguous, with ties
    assert torch.equal(topk_rows_triton(keys, 13), topk_rows_torch(keys, 13))


def test_topk_rows_triton_validates_inputs():
    keys = randn(2, 10)
    with pytest.raises(ValueError, match="k=11"):
        topk_rows_triton(keys, 11)
    with pytest.raises(TypeError, match="float"):
        topk_rows_triton(keys, 2.0)
