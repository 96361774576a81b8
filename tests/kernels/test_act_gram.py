"""act_gram: gram += A^T A in place, Triton against the twin and a float64 reference.

The statistics pass runs the identity path on the model's own down_proj input; the fused activation
variants (every entry of ACTIVATIONS, gated or plain) are tested alike, for callers that hold the
pre-activations. The Hugging Face names mapped to the activations are checked against transformers.
"""
from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE, DTYPES, assert_close, gpu_only, randn
from transformers.activations import ACT2CLS, ACT2FN

import prunenet_kernels as pk
from prunenet_kernels.ops._tiles import mirror_upper_
from prunenet_kernels.ops.act_gram import (
    _TWIN_BLOCK,
    ACTIVATIONS,
    HF_ACTIVATIONS,
    TORCH_ACTIVATIONS,
    act_gram_torch,
    act_gram_triton,
)

ACT_GRAM_SHAPES = [
    pytest.param(1, 1, id="T1-n1"),
    pytest.param(1, 37, id="T1-n37"),
    pytest.param(37, 1, id="T37-n1"),
    pytest.param(50, 20, id="T50-n20"),
    pytest.param(130, 70, id="T130-n70"),  # T and n span several blocks (16 in the interpreter)
    pytest.param(4096, 1000, id="T4096-n1000", marks=gpu_only),
]
GATED = [pytest.param(True, id="gated"), pytest.param(False, id="plain")]
BACKENDS = pytest.mark.parametrize("fn", [act_gram_triton, act_gram_torch], ids=["triton", "torch"])


def _act_gram_inputs(T, n, gated, dtype, seed=30):
    pre = (randn(T, n, seed=seed) * 2).to(dtype)  # activations' curved part: roughly [-6, 6]
    up = randn(T, n, seed=seed + 1).to(dtype) if gated else None
    g0 = randn(n, n, seed=seed + 2)
    return pre, up, g0 + g0.T  # the accumulator starts non-zero and symmetric


def _act_gram_reference(pre, up, activation, g0):
    """float64 g0 + A^T A, with A rounded to the input dtype as both backends do."""
    a = TORCH_ACTIVATIONS[activation](pre.double())
    if up is not None:
        a = a * up.double()
    a = a.to(pre.dtype).double()
    return (g0.double() + a.T @ a).float()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("T, n", ACT_GRAM_SHAPES)
def test_act_gram(T, n, activation, gated, dtype):
    pre, up, g0 = _act_gram_inputs(T, n, gated, dtype)
    want = _act_gram_reference(pre, up, activation, g0)
    for fn in (act_gram_triton, act_gram_torch):
        acc = g0.clone()
        got = fn(pre, up, activation, acc)
        assert got is acc  # accumulated in place
        assert_close(got, want, dtype)
        assert torch.equal(got, got.T)


def test_act_gram_torch_over_several_block_rows():
    """The twin fills the upper triangle in block rows of _TWIN_BLOCK columns (one at the shapes above)."""
    n = 2 * _TWIN_BLOCK + 37
    pre, up, g0 = _act_gram_inputs(9, n, True, torch.float32)
    got = act_gram_torch(pre, up, "gelu_tanh", g0.clone())
    assert_close(got, _act_gram_reference(pre, up, "gelu_tanh", g0))
    assert torch.equal(got, got.T)


def test_act_gram_accumulates_over_calls():
    pre, up, g0 = _act_gram_inputs(70, 40, True, torch.float32)
    want = _act_gram_reference(pre, up, "silu", g0)
    for fn in (act_gram_triton, act_gram_torch):
        acc = g0.clone()
        for chunk in (slice(0, 33), slice(33, 34), slice(34, 70)):
            fn(pre[chunk], up[chunk], "silu", acc)
        assert_close(acc, want)


def test_act_gram_strided_inputs_and_upper_triangle_only():
    """Transposed views as pre and up; a NaN lower triangle in gram is never read (it is overwritten)."""
    pre = (randn(40, 50, seed=34) * 2).T  # (50, 40), unit stride along T
    up = randn(40, 50, seed=35).T
    g0 = randn(40, 40, seed=36)
    want = _act_gram_reference(pre, up, "gelu", mirror_upper_(g0.clone()))
    for fn in (act_gram_triton, act_gram_torch):
        acc = g0.masked_fill(torch.ones(40, 40, dtype=torch.bool, device=DEVICE).tril(-1), float("nan"))
        fn(pre, up, "gelu", acc)
        assert_close(acc, want)


@BACKENDS
def test_act_gram_with_no_tokens_is_a_no_op(fn):
    g0 = randn(5, 5, seed=37)  # not even symmetric: left exactly as it is
    acc = g0.clone()
    assert fn(torch.zeros(0, 5, device=DEVICE), None, "silu", acc) is acc
    assert torch.equal(acc, g0)


@BACKENDS
def test_act_gram_rejects_bad_input(fn):
    pre, up, g = randn(6, 4), randn(6, 4), torch.zeros(4, 4, device=DEVICE)
    bad = [
        (TypeError, "pre must be a torch.Tensor", ([[1.0]], None, "silu", g)),
        (ValueError, r"pre must be \(T, n\)", (pre[0], None, "silu", g)),
        (TypeError, "pre must be float32.*float64", (pre.double(), None, "silu", g)),
        (TypeError, "up must be a torch.Tensor", (pre, 1.0, "silu", g)),
        (ValueError, r"up must match .*\(6, 3\)", (pre, up[:, :3], "silu", g)),
        (ValueError, "up must match .*float16", (pre, up.half(), "silu", g)),
        (ValueError, "activation 'swish'", (pre, up, "swish", g)),
        (TypeError, "gram must be float32, got torch.float64", (pre, up, "silu", g.double())),
        (ValueError, r"gram must be \(4, 4\).*\(5, 5\)", (pre, up, "silu", torch.zeros(5, 5, device=DEVICE))),
        (ValueError, "gram must be contiguous", (pre, up, "silu", torch.zeros(4, 8, device=DEVICE)[:, ::2])),
    ]
    for error, match, args in bad:
        with pytest.raises(error, match=match):
            fn(*args)
    assert torch.equal(g, torch.zeros_like(g))  # nothing accumulated by a refused call


def test_hf_activation_names_map_to_the_same_math():
    """Each mapped Hugging Face name computes the kernel activation it maps to (transformers' ACT2FN);
    no unmapped ACT2FN name computes any of them."""
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64)
    for hf_name, name in HF_ACTIVATIONS.items():
        assert pk.activation_for(hf_name) == name
        torch.testing.assert_close(ACT2FN[hf_name](x), TORCH_ACTIVATIONS[name](x), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ACT2FN[hf_name](x.float()), TORCH_ACTIVATIONS[name](x.float()))
    for hf_name in set(ACT2CLS) - set(HF_ACTIVATIONS):
        assert pk.activation_for(hf_name) is None
        theirs = ACT2FN[hf_name](x.float()).detach()  # float32: some hold float32 parameters
        for ours in TORCH_ACTIVATIONS.values():
            assert not torch.allclose(theirs, ours(x.float()), rtol=1e-4, atol=1e-6), hf_name
    with pytest.raises(TypeError, match="int"):
        pk.activation_for(3)
