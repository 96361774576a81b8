"""Which device the work runs on, and in which dtype the model's layers compute there."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" is CUDA when available, else the CPU; a device CUDA cannot serve is refused by name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


def compute_dtype(device: torch.device) -> torch.dtype:
    """float32 on the CPU (bfloat16 matmuls there are slow and inexact), bfloat16 on a GPU."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16
