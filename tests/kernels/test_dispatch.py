"""The dispatch table: one Op per op file, each calling its Triton launcher or its twin."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from kernel_cases import CUDA, DEVICE, randn, random_kept

import prunenet_kernels as pk
from prunenet_kernels import _dispatch, ops
from prunenet_kernels.ops.kept_gram import kept_gram_triton
from prunenet_kernels.ops.topk_rows import topk_rows_torch


def _dispatch_cases():
    w = randn(1, 6, 4)
    kept = random_kept(1, 6, 5)
    a = torch.arange(4.0, device=DEVICE).reshape(1, 4)
    return {
        "fused_scores": (w, torch.ones(4, device=DEVICE), torch.zeros(1, device=DEVICE)),
        "topk_rows": (w[:, :, 0], 2),
        "kept_gram": (w, kept),
        "topq_singular_values": (w, kept, randn(1, 4, 3), 2),
        "ks_statistic": (a, a + 0.5),
        "slice_ffn": (w, None, None, kept),
        "act_gram": (w[0], w[0], "silu", torch.zeros(4, 4, device=DEVICE)),
    }


@pytest.mark.parametrize("forced", ["torch", "triton"])
@pytest.mark.parametrize("op", list(_dispatch_cases()))
def test_env_var_forces_backend(monkeypatch, op, forced):
    args = _dispatch_cases()[op]
    entry = pk.OPS[op]
    calls = []
    for backend, attribute in (("torch", "twin"), ("triton", "launcher")):
        real = getattr(entry, attribute)
        monkeypatch.setattr(entry, attribute, lambda *a, _b=backend, _f=real: calls.append(_b) or _f(*a))
    monkeypatch.setenv("PRUNENET_KERNELS", forced)
    result = getattr(pk, op)(*args)
    assert calls == [forced]
    assert result is not None


def test_auto_backend_follows_the_device(monkeypatch):
    monkeypatch.delenv("PRUNENET_KERNELS", raising=False)
    assert pk.backend() == "auto"
    assert pk.use_triton(torch.zeros(1, device=DEVICE)) == CUDA
    assert not pk.use_triton(torch.zeros(1))
    monkeypatch.setenv("PRUNENET_KERNELS", "cuda")
    with pytest.raises(ValueError, match="PRUNENET_KERNELS"):
        pk.backend()


def test_ops_table_holds_one_op_per_op_file():
    """Each public file of ops/ is an entry of OPS, exported under its name, pairing the file's launcher
    and twin, which share one signature (the Op's own)."""
    files = {path.stem for path in Path(ops.__file__).parent.glob("*.py") if not path.stem.startswith("_")}
    assert set(pk.OPS) == files
    for name, op in pk.OPS.items():
        assert getattr(pk, name) is op and name in pk.__all__
        assert op.launcher.__module__ == op.twin.__module__ == f"prunenet_kernels.ops.{name}"
        assert inspect.signature(op.launcher) == inspect.signature(op.twin) == inspect.signature(op)


def test_op_decides_on_every_tensor_argument(monkeypatch):
    """Positional and keyword tensors all reach use_triton; None and other values do not."""
    seen = []
    monkeypatch.setattr(_dispatch, "use_triton", lambda *tensors: seen.append(tensors) or False)
    w = randn(1, 6, 4)
    kept = random_kept(1, 6, 5)
    keys = w[:, :, 0]
    pk.slice_ffn(w, None, None, kept=kept)
    pk.topk_rows(keys, 2)
    assert [[id(t) for t in tensors] for tensors in seen] == [[id(w), id(kept)], [id(keys)]]


def test_op_pairs_a_launcher_with_the_twin_of_the_same_op():
    with pytest.raises(ValueError, match="kept_gram_triton and topk_rows_torch"):
        pk.Op(kept_gram_triton, topk_rows_torch)
