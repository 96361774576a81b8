"""The PruneNet policy: one small network, shared by all layers, that scores FFN rows from weights alone.

Parameters (paper notation): A (n x h) and b (n) of a linear map, r (n). Row scores of a layer's
scored matrix W (n x h) are alpha = sigmoid((W A^T + b) r). They are computed reassociated
as sigmoid(W v + c) with v = A^T r and c = b . r: exactly the same function, O(n h) instead of
O(n^2 h). Initialisation follows the public reference (an `nn.Linear(h, n)`'s default, r ~ U[0, 1)).

A policy is saved as one safetensors file; its JSON metadata (shape, model type, training options and
rewards) sits in the file's header under the key "prunenet". Nothing is pickled.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import prunenet_kernels as K

from ...atomic import atomic_write

METADATA_KEY = "prunenet"
FORMAT = "prunenet-policy/1"


class Policy(torch.nn.Module):
    def __init__(self, n: int, h: int, seed: int = 0, metadata: dict | None = None):
        super().__init__()
        for name, value in (("n", n), ("h", h)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"policy {name}={value!r} must be a positive int")
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(h)
        self.projection = torch.nn.Parameter(torch.empty(n, h).uniform_(-bound, bound, generator=generator))  # A
        self.bias = torch.nn.Parameter(torch.empty(n).uniform_(-bound, bound, generator=generator))  # b
        self.readout = torch.nn.Parameter(torch.rand(n, generator=generator))  # r
        self.metadata: dict = dict(metadata or {})

    @property
    def n(self) -> int:
        return self.projection.shape[0]

    @property
    def h(self) -> int:
        return self.projection.shape[1]

    def reassociated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(v, c) = (A^T r, b . r): the whole policy collapses to one direction and one offset."""
        return self.projection.t() @ self.readout, self.bias @ self.readout

    def score(self, weights: torch.Tensor, noise: torch.Tensor | None = None):
        """(alpha, keep_prob, log_keep_prob) for stacked scored matrices `weights` (L, n, h)."""
        self.check_shape(weights.shape[1], weights.shape[2])
        direction, offset = self.reassociated()
        return K.fused_scores(weights, direction, offset.reshape(1), noise)

    def check_shape(self, n: int, h: int) -> None:
        if (n, h) != (self.n, self.h):
            raise ValueError(
                f"policy was trained for FFN shape (n={self.n}, h={self.h}) but the model has (n={n}, h={h})"
            )

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        path = Path(path)
        metadata = {"format": FORMAT, "n": self.n, "h": self.h, **self.metadata}
        tensors = {name: p.detach().to("cpu", torch.float32).contiguous() for name, p in self.named_parameters()}
        atomic_write(
            path, overwrite,
            lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)}),
        )
        return path


def load_policy(path: str | os.PathLike) -> Policy:
    """Read a policy saved by `Policy.save`; a file that is not one gives a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"policy file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:
        raise ValueError(f"{str(path)!r} is not a prunenet policy file: {exc}") from None
    if METADATA_KEY not in header:
        raise ValueError(f"{str(path)!r} is a safetensors file but not a prunenet policy "
                         f"(no {METADATA_KEY!r} metadata)")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} has corrupt policy metadata: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} has policy format {metadata.get('format')!r}, expected {FORMAT!r}")
    policy = Policy(int(metadata["n"]), int(metadata["h"]), metadata=metadata)
    try:
        policy.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(f"{str(path)!r} holds tensors that do not fit its stated shape: {exc}") from None
    policy.metadata = {k: v for k, v in metadata.items() if k not in ("format", "n", "h")}
    return policy
