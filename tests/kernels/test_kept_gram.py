"""kept_gram: direct and downdated Gram matrices of the kept rows, Triton against the twin, bit-symmetric."""
from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE, DTYPES, OUT_OF_RANGE, assert_close, gpu_only, out_of_range_kept, randn, random_kept

from prunenet_kernels.ops._tiles import mirror_upper_
from prunenet_kernels.ops.kept_gram import kept_gram_torch, kept_gram_triton, use_downdate

GRAM_CASES = [
    # (L, n, h, k, give full_gram, expect downdate)
    pytest.param(1, 37, 20, 30, False, False, id="L1-n37-h20-k30-direct"),
    pytest.param(1, 37, 20, 30, True, True, id="L1-n37-h20-k30-downdate"),
    pytest.param(3, 50, 24, 50, True, True, id="L3-n50-h24-k=n-downdate-none-dropped"),
    pytest.param(3, 50, 24, 24, False, False, id="L3-n50-h24-k=h-direct"),
    pytest.param(2, 50, 24, 24, True, False, id="L2-n50-h24-k24-more-dropped-than-kept"),
    pytest.param(3, 50, 24, 10, True, False, id="L3-n50-h24-k10-k<h"),
    pytest.param(1, 37, 20, 1, False, False, id="L1-n37-h20-k1"),
    pytest.param(2, 40, 36, 25, False, False, id="L2-n40-h36-k25-k<h"),
    pytest.param(2, 700, 300, 490, True, True, id="L2-n700-h300-k490-downdate", marks=gpu_only),
    pytest.param(2, 700, 300, 200, False, False, id="L2-n700-h300-k200-k<h", marks=gpu_only),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L, n, h, k, give_full, downdate", GRAM_CASES)
def test_kept_gram(L, n, h, k, give_full, downdate, dtype):
    weights = randn(L, n, h, dtype=dtype, seed=8)
    kept = random_kept(L, n, k)
    full = weights.float().transpose(1, 2) @ weights.float() if give_full else None
    assert use_downdate(n, k, h, full) == downdate
    got = kept_gram_triton(weights, kept, full)
    want = kept_gram_torch(weights, kept, full)
    assert got.shape == ((L, h, h) if k >= h else (L, k, k))
    assert_close(got, want, dtype)
    # Both backends compute the upper triangle and mirror it: bit-symmetric on any CPU/GPU and BLAS.
    assert torch.equal(got, got.transpose(1, 2)) and torch.equal(want, want.transpose(1, 2))


def test_kept_gram_strided_weights():
    weights = randn(2, 24, 50, seed=9).transpose(1, 2)  # (2, 50, 24), not contiguous
    kept = random_kept(2, 50, 30)
    assert_close(kept_gram_triton(weights, kept), kept_gram_torch(weights, kept))


def test_kept_gram_downdate_reads_the_upper_triangle_of_full_gram():
    weights = randn(1, 37, 20, seed=8)
    kept = random_kept(1, 37, 30)
    full = mirror_upper_(weights.transpose(1, 2) @ weights)
    lower_nan = full.masked_fill(torch.ones(20, 20, dtype=torch.bool, device=DEVICE).tril(-1), float("nan"))
    for fn in (kept_gram_triton, kept_gram_torch):
        assert torch.equal(fn(weights, kept, lower_nan), fn(weights, kept, full))


def test_kept_gram_triton_validates_inputs():
    with pytest.raises(ValueError, match="kept"):
        kept_gram_triton(randn(2, 10, 4), random_kept(2, 10, 5).int())


@OUT_OF_RANGE
def test_kept_gram_triton_rejects_out_of_range_indices(bad):
    with pytest.raises(ValueError, match=f"kept holds indices in .*{bad}"):
        kept_gram_triton(randn(2, 10, 4), out_of_range_kept(bad))
