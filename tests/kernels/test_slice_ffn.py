"""slice_ffn: the Triton gather equals the twin's, for every subset of gate, up and down."""
from __future__ import annotations

import pytest
import torch
from kernel_cases import DTYPES, OUT_OF_RANGE, gpu_only, out_of_range_kept, randn, random_kept

from prunenet_kernels.ops.slice_ffn import slice_ffn_torch, slice_ffn_triton

SLICE_PRESENT = [
    pytest.param((True, True, True), id="gate-up-down"),
    pytest.param((True, False, True), id="gate-down"),
    pytest.param((True, True, False), id="gate-up"),
    pytest.param((False, False, True), id="down-only"),
    pytest.param((False, True, False), id="up-only"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("present", SLICE_PRESENT)
@pytest.mark.parametrize(
    "L, n, h, h_down, k",
    [
        pytest.param(1, 37, 20, 20, 30, id="L1-n37-h20-k30"),
        pytest.param(3, 50, 24, 24, 1, id="L3-n50-h24-k1"),
        pytest.param(2, 50, 24, 36, 50, id="L2-n50-h24-hdown36-k=n"),
        pytest.param(2, 700, 300, 300, 490, id="L2-n700-h300-k490", marks=gpu_only),
    ],
)
def test_slice_ffn_matches_twin_exactly(L, n, h, h_down, k, present, dtype):
    shapes = [(L, n, h), (L, n, h), (L, h_down, n)]  # gate, up, down
    mats = [randn(*shape, dtype=dtype, seed=18 + i) for i, shape in enumerate(shapes)]
    args = [m if use else None for m, use in zip(mats, present)]
    kept = random_kept(L, n, k)
    for got, want in zip(slice_ffn_triton(*args, kept), slice_ffn_torch(*args, kept)):
        if want is None:
            assert got is None
            continue
        assert got.is_contiguous() and got.dtype == want.dtype
        assert torch.equal(got, want)


def test_slice_ffn_strided_inputs():
    gate = randn(2, 20, 37, seed=21).transpose(1, 2)  # (2, 37, 20) with unit stride along n
    down = randn(2, 37, 20, seed=22).transpose(1, 2)  # (2, 20, 37) with unit stride along h
    kept = random_kept(2, 37, 9)
    want_all = slice_ffn_torch(gate, gate, down, kept)
    for got, want in zip(slice_ffn_triton(gate, gate, down, kept), want_all):
        assert got.is_contiguous() and torch.equal(got, want)


def test_slice_ffn_triton_validates_inputs():
    with pytest.raises(ValueError, match="up must match"):
        slice_ffn_triton(randn(2, 10, 4), randn(2, 10, 5), None, random_kept(2, 10, 5))


@OUT_OF_RANGE
def test_slice_ffn_triton_rejects_out_of_range_indices(bad):
    with pytest.raises(ValueError, match="kept holds"):
        slice_ffn_triton(None, None, randn(2, 4, 10), out_of_range_kept(bad))
