"""topq_singular_values: the gathered products and the randomized SVD, Triton against the twin."""
from __future__ import annotations

import pytest
from kernel_cases import DTYPES, OUT_OF_RANGE, assert_close, gpu_only, out_of_range_kept, randn, random_kept

from prunenet_kernels.ops.topq_singular_values import (
    gathered_matmul_torch,
    gathered_matmul_triton,
    gathered_tmatmul_torch,
    gathered_tmatmul_triton,
    topq_singular_values_torch,
    topq_singular_values_triton,
)

RSVD_SHAPES = [
    pytest.param(1, 37, 20, 30, 5, id="L1-n37-h20-k30-p5"),
    pytest.param(3, 50, 24, 10, 7, id="L3-n50-h24-k10-p7"),
    pytest.param(2, 50, 24, 50, 17, id="L2-n50-h24-k=n-p17"),
    pytest.param(1, 37, 20, 1, 1, id="L1-n37-h20-k1-p1"),
    pytest.param(2, 700, 300, 490, 40, id="L2-n700-h300-k490-p40", marks=gpu_only),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L, n, h, k, p", RSVD_SHAPES)
def test_gathered_products(L, n, h, k, p, dtype):
    weights = randn(L, n, h, dtype=dtype, seed=11)
    kept = random_kept(L, n, k)
    x, y = randn(L, h, p, seed=12), randn(L, k, p, seed=13)
    assert_close(gathered_matmul_triton(weights, kept, x), gathered_matmul_torch(weights, kept, x), dtype)
    assert_close(gathered_tmatmul_triton(weights, kept, y), gathered_tmatmul_torch(weights, kept, y), dtype)


@pytest.mark.parametrize("L, n, h, k, p", [s for s in RSVD_SHAPES if s.values[4] > 1])
def test_topq_singular_values(L, n, h, k, p):
    weights = randn(L, n, h, seed=14)
    kept = random_kept(L, n, k)
    omega = randn(L, h, p, seed=15)
    q = min(p, k, h) - 1 or 1
    got = topq_singular_values_triton(weights, kept, omega, q, power_iters=1)
    want = topq_singular_values_torch(weights, kept, omega, q, power_iters=1)
    assert got.shape == (L, q)
    assert_close(got, want)


def test_gathered_products_triton_validate_inputs():
    w = randn(2, 10, 4)
    kept = random_kept(2, 10, 5)
    with pytest.raises(ValueError, match="x must be"):
        gathered_matmul_triton(w, kept, randn(2, 5, 3))
    with pytest.raises(ValueError, match="y must be"):
        gathered_tmatmul_triton(w, kept, randn(2, 4, 3))


@OUT_OF_RANGE
def test_gathered_products_triton_reject_out_of_range_indices(bad):
    with pytest.raises(ValueError, match="kept holds"):
        gathered_tmatmul_triton(randn(2, 10, 4), out_of_range_kept(bad), randn(2, 5, 3))
