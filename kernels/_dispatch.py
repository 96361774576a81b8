"""Backend choice for every op: Triton for CUDA tensors, the PyTorch twin elsewhere.

`PRUNENET_KERNELS=torch` forces the twins everywhere; `PRUNENET_KERNELS=triton` forces the Triton
kernels (on CPU tensors that needs `TRITON_INTERPRET=1`, set before Triton is imported).
"""
from __future__ import annotations

import os

import torch

ENV_VAR = "PRUNENET_KERNELS"
_CHOICES = ("auto", "triton", "torch")


def backend() -> str:
    """The forced backend, or "auto"."""
    choice = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"{ENV_VAR}={choice!r}: expected one of {', '.join(_CHOICES)}")
    return choice


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether an op called on `tensors` should run its Triton kernel."""
    choice = backend()
    if choice != "auto":
        return choice == "triton"
    given = [t for t in tensors if t is not None]
    return bool(given) and all(t.is_cuda for t in given)
