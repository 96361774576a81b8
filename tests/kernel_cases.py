"""What the kernel tests (tests/kernels/) share: device, dtypes and their tolerances, inputs, the GPU mark.

Every Triton kernel is tested against its PyTorch twin. On a machine without CUDA the kernels run in
Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported) on CPU
tensors in float32, with tiny awkward shapes. The bfloat16/float16 cases and the larger shapes carry
`gpu_only`: the `gpu` mark (`pytest -m gpu` selects them) and a skip where there is no GPU. The
launchers pre-fill their outputs with NaN, so an element a kernel fails to write fails the comparison.

Importing this module skips the importing test module where the kernels cannot run at all. It lives
here, on the `tests` path entry, not in tests/kernels/: a `kernels` package would resolve to the
source folder of `prunenet_kernels` (or, as a regular package, pass for Hugging Face's `kernels`).
"""
from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 set before Triton is imported", allow_module_level=True)

gpu_only = (
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason="needs a GPU (Triton's interpreter has no bfloat16, and is slow)"),
)

# Relative tolerance per input dtype. Outputs are float32 from float32 accumulation in both backends,
# so only the summation order differs; the narrow dtypes also go through different matmul units.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-3, torch.float16: 2e-3}
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.bfloat16, id="bf16", marks=gpu_only),
    pytest.param(torch.float16, id="fp16", marks=gpu_only),
]

# Index lists with one entry outside [0, 10): the kernels gather without bounds checks, so the
# launchers must refuse them.
OUT_OF_RANGE = pytest.mark.parametrize("bad", [-1, 10], ids=["negative", "past-the-end"])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
    """Elementwise, relative to the largest magnitude of `expected` (sums of mixed signs lose their own scale)."""
    tol = TOLERANCE[dtype]
    scale = expected.abs().max().item() if expected.numel() else 1.0
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1e-30))


def random_kept(L: int, n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(L)]).to(DEVICE)


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)


def out_of_range_kept(bad: int) -> torch.Tensor:
    """kept (2, 5) rows of n=10 with kept[1, 2] = bad, for `OUT_OF_RANGE` tests."""
    kept = random_kept(2, 10, 5)
    kept[1, 2] = bad
    return kept
