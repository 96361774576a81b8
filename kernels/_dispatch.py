"""Backend choice for every op: Triton for CUDA tensors, the PyTorch twin elsewhere.

`PRUNENET_KERNELS=torch` forces the twins everywhere; `PRUNENET_KERNELS=triton` forces the Triton
kernels (on CPU tensors that needs `TRITON_INTERPRET=1`, set before Triton is imported).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

import torch

ENV_VAR = "PRUNENET_KERNELS"
_CHOICES = ("auto", "triton", "torch")

P = ParamSpec("P")
R = TypeVar("R")


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


class Op(Generic[P, R]):
    """One op: its Triton launcher `<name>_triton` and PyTorch twin `<name>_torch`, of one signature.

    Calling an Op runs the launcher when `use_triton` holds for its tensor arguments (every one a CUDA
    tensor, or PRUNENET_KERNELS=triton), the twin otherwise. It has the twin's signature: for type
    checkers through the ParamSpec, for `inspect.signature` and `help` through `__wrapped__`.
    """

    def __init__(self, launcher: Callable[P, R], twin: Callable[P, R]) -> None:
        self.name = twin.__name__.removesuffix("_torch")
        if (twin.__name__, launcher.__name__) != (f"{self.name}_torch", f"{self.name}_triton"):
            raise ValueError(f"an op pairs <op>_triton with <op>_torch, got {launcher.__name__} and {twin.__name__}")
        self.launcher = launcher
        self.twin = twin
        self.__doc__ = twin.__doc__
        self.__wrapped__ = twin

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        run = self.launcher if use_triton(*tensors) else self.twin
        return run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<op {self.name}>"
