"""ks_statistic: the Triton statistic equals the twin's exactly."""
from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE, gpu_only, randn

from prunenet_kernels.ops.ks_statistic import ks_statistic_torch, ks_statistic_triton


def _sorted_sample(L: int, size: int, seed: int, ties: bool) -> torch.Tensor:
    values = randn(L, size, seed=seed)
    if ties:
        values = (values * 2).round()
    return values.sort(dim=1).values


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize(
    "L, m, p",
    [
        pytest.param(1, 1, 1, id="L1-m1-p1"),
        pytest.param(3, 20, 13, id="L3-m20-p13"),
        pytest.param(2, 37, 50, id="L2-m37-p50"),
        pytest.param(1, 5, 40, id="L1-m5-p40"),
        pytest.param(4, 4096, 4096, id="L4-m4096-p4096", marks=gpu_only),
    ],
)
def test_ks_statistic_matches_twin_exactly(L, m, p, ties):
    a = _sorted_sample(L, m, 16, ties)
    b = _sorted_sample(L, p, 17, ties) * 1.3 + 0.25
    b = b.sort(dim=1).values
    got = ks_statistic_triton(a, b)
    assert got.shape == (L,) and got.dtype == torch.float32
    assert torch.equal(got, ks_statistic_torch(a, b))


def test_ks_statistic_of_identical_and_disjoint_samples():
    a = torch.arange(10.0, device=DEVICE).reshape(1, 10)
    both = torch.cat([a, a]), torch.cat([a, a + 100])
    assert ks_statistic_triton(*both).tolist() == [0.0, 1.0]


def test_ks_statistic_triton_validates_inputs():
    with pytest.raises(ValueError, match="ks_statistic"):
        ks_statistic_triton(randn(2, 3), randn(3, 3))
