"""Every Triton kernel against its PyTorch twin, and the dispatcher.

On a machine without CUDA the kernels run in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before Triton is imported) on CPU tensors in float32, with tiny awkward shapes. The
bfloat16/float16 cases and the larger shapes need a GPU and skip themselves elsewhere. The launchers
pre-fill their outputs with NaN, so an element a kernel fails to write fails the comparison.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch
from transformers.activations import ACT2CLS, ACT2FN

import prunenet_kernels as pk
from prunenet_kernels import gram, ks, rsvd, scoring, selection, slicing

act_gram = importlib.import_module("prunenet_kernels.act_gram")  # pk.act_gram is the dispatching function

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 set before Triton is imported", allow_module_level=True)

gpu_only = pytest.mark.skipif(not CUDA, reason="needs a GPU (Triton's interpreter has no bfloat16, and is slow)")

# Relative tolerance per input dtype. Outputs are float32 from float32 accumulation in both backends,
# so only the summation order differs; the narrow dtypes also go through different matmul units.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-3, torch.float16: 2e-3}
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.bfloat16, id="bf16", marks=gpu_only),
    pytest.param(torch.float16, id="fp16", marks=gpu_only),
]


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


# ------------------------------------------------------------------------------------------------ scoring
SCORE_SHAPES = [
    pytest.param(1, 37, 20, id="L1-n37-h20"),
    pytest.param(3, 50, 24, id="L3-n50-h24"),
    pytest.param(2, 5, 70, id="L2-n5-h70"),  # h spans several column blocks
    pytest.param(4, 700, 300, id="L4-n700-h300", marks=gpu_only),
]


def _score_inputs(L, n, h, dtype, with_noise):
    weights = randn(L, n, h, dtype=dtype, seed=1) / h**0.5
    direction = randn(h, seed=2) * 3
    offset = randn(1, seed=3)
    noise = randn(L, n, seed=4) * 2 if with_noise else None
    return weights, direction, offset, noise


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_noise", [True, False], ids=["noise", "no-noise"])
@pytest.mark.parametrize("L, n, h", SCORE_SHAPES)
def test_fused_scores_forward(L, n, h, with_noise, dtype):
    args = _score_inputs(L, n, h, dtype, with_noise)
    for got, want in zip(scoring.fused_scores_triton(*args), scoring.fused_scores_torch(*args)):
        assert_close(got, want, dtype)


def test_fused_scores_saturated_logits_stay_finite():
    """Scores of +-40: alpha rounds to 0 or 1, but log p must stay finite and match logsigmoid."""
    weights = torch.tensor([[[-40.0], [-5.0], [0.0], [5.0], [40.0]]], device=DEVICE)
    direction, offset = torch.ones(1, device=DEVICE), torch.zeros(1, device=DEVICE)
    got = scoring.fused_scores_triton(weights, direction, offset)
    want = scoring.fused_scores_torch(weights, direction, offset)
    assert torch.isfinite(got[2]).all()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "used",
    [(True, True, True), (False, False, True), (True, False, False)],
    ids=["all-outputs", "logp-only", "alpha-only"],
)
@pytest.mark.parametrize("with_noise", [True, False], ids=["noise", "no-noise"])
@pytest.mark.parametrize("L, n, h", SCORE_SHAPES)
def test_fused_scores_gradients(L, n, h, with_noise, used, dtype):
    weights, direction, offset, noise = _score_inputs(L, n, h, dtype, with_noise)
    upstream = [randn(L, n, seed=10 + i) for i in range(3)]
    grads = []
    for fn in (scoring.fused_scores_triton, scoring.fused_scores_torch):
        d = direction.clone().requires_grad_(True)
        o = offset.clone().requires_grad_(True)
        outputs = fn(weights, d, o, noise)
        loss = sum((out * up).sum() for out, up, use in zip(outputs, upstream, used) if use)
        loss.backward()
        grads.append((d.grad, o.grad))
    (d_tri, o_tri), (d_ref, o_ref) = grads
    assert_close(d_tri, d_ref, dtype)
    assert_close(o_tri, o_ref, dtype)


def test_fused_scores_gives_weights_no_gradient():
    weights, direction, offset, noise = _score_inputs(2, 9, 20, torch.float32, True)
    weights.requires_grad_(True)
    direction.requires_grad_(True)
    scoring.fused_scores_triton(weights, direction, offset, noise)[2].sum().backward()
    assert weights.grad is None and direction.grad is not None and torch.isfinite(direction.grad).all()


# ---------------------------------------------------------------------------------------------- selection
def _keys(kind: str, L: int, n: int) -> torch.Tensor:
    if kind == "distinct":
        return randn(L, n, seed=5)
    if kind == "ties":  # few distinct values: the k-th largest is shared by many rows
        return (randn(L, n, seed=6) * 1.5).round()
    if kind == "constant":  # every key equal, zeros of both signs: all ties, broken by index
        keys = torch.zeros(L, n, device=DEVICE)
        keys[:, ::3] = -0.0
        return keys
    if kind == "extremes":
        values = torch.tensor([float("inf"), -float("inf"), float("nan"), 3e38, -3e38, 1.0, -1.0, 0.0])
        return values.repeat(L, n // 8 + 1)[:, :n].contiguous().to(DEVICE)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["distinct", "ties", "constant", "extremes"])
@pytest.mark.parametrize(
    "L, n, k",
    [
        pytest.param(1, 1, 1, id="L1-n1-k1"),
        pytest.param(3, 37, 1, id="L3-n37-k1"),
        pytest.param(3, 37, 12, id="L3-n37-k12"),
        pytest.param(2, 50, 50, id="L2-n50-k=n"),
        pytest.param(1, 50, 49, id="L1-n50-k49"),
        pytest.param(4, 11008, 7705, id="L4-n11008-k7705", marks=gpu_only),
    ],
)
def test_topk_rows_matches_twin_exactly(L, n, k, kind):
    keys = _keys(kind, L, n)
    got = selection.topk_rows_triton(keys, k)
    assert torch.equal(got, selection.topk_rows_torch(keys, k))


@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_rows_strided_and_narrow_keys(dtype):
    keys = (randn(3, 80, seed=7) * 2).round().to(dtype)[:, ::2]  # non-contiguous, with ties
    assert torch.equal(selection.topk_rows_triton(keys, 13), selection.topk_rows_torch(keys, 13))


# --------------------------------------------------------------------------------------------------- gram
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
    assert gram.use_downdate(n, k, h, full) == downdate
    got = gram.kept_gram_triton(weights, kept, full)
    want = gram.kept_gram_torch(weights, kept, full)
    assert got.shape == ((L, h, h) if k >= h else (L, k, k))
    assert_close(got, want, dtype)
    # Both backends compute the upper triangle and mirror it: bit-symmetric on any CPU/GPU and BLAS.
    assert torch.equal(got, got.transpose(1, 2)) and torch.equal(want, want.transpose(1, 2))


def test_kept_gram_strided_weights():
    weights = randn(2, 24, 50, seed=9).transpose(1, 2)  # (2, 50, 24), not contiguous
    kept = random_kept(2, 50, 30)
    assert_close(gram.kept_gram_triton(weights, kept), gram.kept_gram_torch(weights, kept))


def test_kept_gram_downdate_reads_the_upper_triangle_of_full_gram():
    weights = randn(1, 37, 20, seed=8)
    kept = random_kept(1, 37, 30)
    full = gram.mirror_upper_(weights.transpose(1, 2) @ weights)
    lower_nan = full.masked_fill(torch.ones(20, 20, dtype=torch.bool, device=DEVICE).tril(-1), float("nan"))
    for fn in (gram.kept_gram_triton, gram.kept_gram_torch):
        assert torch.equal(fn(weights, kept, lower_nan), fn(weights, kept, full))


# ----------------------------------------------------------------------------------------------- act_gram
ACT_GRAM_SHAPES = [
    pytest.param(1, 1, id="T1-n1"),
    pytest.param(1, 37, id="T1-n37"),
    pytest.param(37, 1, id="T37-n1"),
    pytest.param(50, 20, id="T50-n20"),
    pytest.param(130, 70, id="T130-n70"),  # T and n span several blocks (16 in the interpreter)
    pytest.param(4096, 1000, id="T4096-n1000", marks=gpu_only),
]
GATED = [pytest.param(True, id="gated"), pytest.param(False, id="plain")]


def _act_gram_inputs(T, n, gated, dtype, seed=30):
    pre = (randn(T, n, seed=seed) * 2).to(dtype)  # activations' curved part: roughly [-6, 6]
    up = randn(T, n, seed=seed + 1).to(dtype) if gated else None
    g0 = randn(n, n, seed=seed + 2)
    return pre, up, g0 + g0.T  # the accumulator starts non-zero and symmetric


def _act_gram_reference(pre, up, activation, g0):
    """float64 g0 + A^T A, with A rounded to the input dtype as both backends do."""
    a = act_gram.TORCH_ACTIVATIONS[activation](pre.double())
    if up is not None:
        a = a * up.double()
    a = a.to(pre.dtype).double()
    return (g0.double() + a.T @ a).float()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gated", GATED)
@pytest.mark.parametrize("activation", act_gram.ACTIVATIONS)
@pytest.mark.parametrize("T, n", ACT_GRAM_SHAPES)
def test_act_gram(T, n, activation, gated, dtype):
    pre, up, g0 = _act_gram_inputs(T, n, gated, dtype)
    want = _act_gram_reference(pre, up, activation, g0)
    for fn in (act_gram.act_gram_triton, act_gram.act_gram_torch):
        acc = g0.clone()
        got = fn(pre, up, activation, acc)
        assert got is acc  # accumulated in place
        assert_close(got, want, dtype)
        assert torch.equal(got, got.T)


def test_act_gram_torch_over_several_block_rows():
    """The twin fills the upper triangle in block rows of act_gram._TWIN_BLOCK columns (one at the shapes above)."""
    n = 2 * act_gram._TWIN_BLOCK + 37
    pre, up, g0 = _act_gram_inputs(9, n, True, torch.float32)
    got = act_gram.act_gram_torch(pre, up, "gelu_tanh", g0.clone())
    assert_close(got, _act_gram_reference(pre, up, "gelu_tanh", g0))
    assert torch.equal(got, got.T)


def test_act_gram_accumulates_over_calls():
    pre, up, g0 = _act_gram_inputs(70, 40, True, torch.float32)
    want = _act_gram_reference(pre, up, "silu", g0)
    for fn in (act_gram.act_gram_triton, act_gram.act_gram_torch):
        acc = g0.clone()
        for chunk in (slice(0, 33), slice(33, 34), slice(34, 70)):
            fn(pre[chunk], up[chunk], "silu", acc)
        assert_close(acc, want)


def test_act_gram_strided_inputs_and_upper_triangle_only():
    """Transposed views as pre and up; a NaN lower triangle in gram is never read (it is overwritten)."""
    pre = (randn(40, 50, seed=34) * 2).T  # (50, 40), unit stride along T
    up = randn(40, 50, seed=35).T
    g0 = randn(40, 40, seed=36)
    want = _act_gram_reference(pre, up, "gelu", gram.mirror_upper_(g0.clone()))
    for fn in (act_gram.act_gram_triton, act_gram.act_gram_torch):
        acc = g0.masked_fill(torch.ones(40, 40, dtype=torch.bool, device=DEVICE).tril(-1), float("nan"))
        fn(pre, up, "gelu", acc)
        assert_close(acc, want)


@pytest.mark.parametrize("fn", [act_gram.act_gram_triton, act_gram.act_gram_torch], ids=["triton", "torch"])
def test_act_gram_with_no_tokens_is_a_no_op(fn):
    g0 = randn(5, 5, seed=37)  # not even symmetric: left exactly as it is
    acc = g0.clone()
    assert fn(torch.zeros(0, 5, device=DEVICE), None, "silu", acc) is acc
    assert torch.equal(acc, g0)


@pytest.mark.parametrize("fn", [act_gram.act_gram_triton, act_gram.act_gram_torch], ids=["triton", "torch"])
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
    for hf_name, name in act_gram.HF_ACTIVATIONS.items():
        assert pk.activation_for(hf_name) == name
        torch.testing.assert_close(ACT2FN[hf_name](x), act_gram.TORCH_ACTIVATIONS[name](x), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ACT2FN[hf_name](x.float()), act_gram.TORCH_ACTIVATIONS[name](x.float()))
    for hf_name in set(ACT2CLS) - set(act_gram.HF_ACTIVATIONS):
        assert pk.activation_for(hf_name) is None
        theirs = ACT2FN[hf_name](x.float()).detach()  # float32: some hold float32 parameters
        for ours in act_gram.TORCH_ACTIVATIONS.values():
            assert not torch.allclose(theirs, ours(x.float()), rtol=1e-4, atol=1e-6), hf_name
    with pytest.raises(TypeError, match="int"):
        pk.activation_for(3)


# --------------------------------------------------------------------------------------------------- rsvd
RSVD_SHAPES = [
    pytest.param(1, 37, 20, 30, 5, id="L1-n37-h20-k30-p5"),
    pytest.param(3, 50, 24, 10, 7, id="L3-n50-h24-k10-p7"),
    pytest.param(2, 50, 24, 50, 17, id="L2-n50-h24-k=n-p17"),
    pytest.param(1, 37, 20, 1, 1, id="L1-n37-h20-k1-p1"),
    pytest.param(2, 700, 300, 490, 40, id="L2-n700-h300-k490-p40", marks=gpu_only),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L, n, h, k, p", RSVD_SHAPES)
def test_gathered_products(L, n, h, k, p, dtype):
    weights = randn(L, n, h, dtype=dtype, seed=11)
    kept = random_kept(L, n, k)
    x, y = randn(L, h, p, seed=12), randn(L, k, p, seed=13)
    assert_close(rsvd.gathered_matmul_triton(weights, kept, x), rsvd.gathered_matmul_torch(weights, kept, x), dtype)
    assert_close(rsvd.gathered_tmatmul_triton(weights, kept, y), rsvd.gathered_tmatmul_torch(weights, kept, y), dtype)


@pytest.mark.parametrize("L, n, h, k, p", [s for s in RSVD_SHAPES if s.values[4] > 1])
def test_topq_singular_values(L, n, h, k, p):
    weights = randn(L, n, h, seed=14)
    kept = random_kept(L, n, k)
    omega = randn(L, h, p, seed=15)
    q = min(p, k, h) - 1 or 1
    got = rsvd.topq_singular_values_triton(weights, kept, omega, q, power_iters=1)
    want = rsvd.topq_singular_values_torch(weights, kept, omega, q, power_iters=1)
    assert got.shape == (L, q)
    assert_close(got, want)


# ----------------------------------------------------------------------------------------------------- ks
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
    got = ks.ks_statistic_triton(a, b)
    assert got.shape == (L,) and got.dtype == torch.float32
    assert torch.equal(got, ks.ks_statistic_torch(a, b))


def test_ks_statistic_of_identical_and_disjoint_samples():
    a = torch.arange(10.0, device=DEVICE).reshape(1, 10)
    both = torch.cat([a, a]), torch.cat([a, a + 100])
    assert ks.ks_statistic_triton(*both).tolist() == [0.0, 1.0]


# ------------------------------------------------------------------------------------------------ slicing
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
    for got, want in zip(slicing.slice_ffn_triton(*args, kept), slicing.slice_ffn_torch(*args, kept)):
        if want is None:
            assert got is None
            continue
        assert got.is_contiguous() and got.dtype == want.dtype
        assert torch.equal(got, want)


def test_slice_ffn_strided_inputs():
    gate = randn(2, 20, 37, seed=21).transpose(1, 2)  # (2, 37, 20) with unit stride along n
    down = randn(2, 37, 20, seed=22).transpose(1, 2)  # (2, 20, 37) with unit stride along h
    kept = random_kept(2, 37, 9)
    want_all = slicing.slice_ffn_torch(gate, gate, down, kept)
    for got, want in zip(slicing.slice_ffn_triton(gate, gate, down, kept), want_all):
        assert got.is_contiguous() and torch.equal(got, want)


# --------------------------------------------------------------------------------------------- validation
def test_triton_launchers_validate_inputs():
    w = randn(2, 10, 4)
    kept = random_kept(2, 10, 5)
    with pytest.raises(ValueError, match="direction"):
        scoring.fused_scores_triton(w, torch.zeros(5, device=DEVICE), torch.zeros(1, device=DEVICE))
    with pytest.raises(ValueError, match="k=11"):
        selection.topk_rows_triton(w[:, :, 0], 11)
    with pytest.raises(TypeError, match="float"):
        selection.topk_rows_triton(w[:, :, 0], 2.0)
    with pytest.raises(ValueError, match="kept"):
        gram.kept_gram_triton(w, kept.int())
    with pytest.raises(ValueError, match="x must be"):
        rsvd.gathered_matmul_triton(w, kept, randn(2, 5, 3))
    with pytest.raises(ValueError, match="y must be"):
        rsvd.gathered_tmatmul_triton(w, kept, randn(2, 4, 3))
    with pytest.raises(ValueError, match="ks_statistic"):
        ks.ks_statistic_triton(randn(2, 3), randn(3, 3))
    with pytest.raises(ValueError, match="up must match"):
        slicing.slice_ffn_triton(w, randn(2, 10, 5), None, kept)


@pytest.mark.parametrize("bad", [-1, 10], ids=["negative", "past-the-end"])
def test_triton_launchers_reject_out_of_range_indices(bad):
    """The kernels gather without bounds checks, so the launchers check the index lists."""
    w = randn(2, 10, 4)
    kept = random_kept(2, 10, 5)
    kept[1, 2] = bad
    with pytest.raises(ValueError, match=f"kept holds indices in .*{bad}"):
        gram.kept_gram_triton(w, kept)
    with pytest.raises(ValueError, match="kept holds"):
        rsvd.gathered_tmatmul_triton(w, kept, randn(2, 5, 3))
    with pytest.raises(ValueError, match="kept holds"):
        slicing.slice_ffn_triton(None, None, randn(2, 4, 10), kept)


# --------------------------------------------------------------------------------------------- dispatcher
def _dispatch_cases():
    w = randn(1, 6, 4)
    kept = random_kept(1, 6, 5)
    a = torch.arange(4.0, device=DEVICE).reshape(1, 4)
    return {
        "fused_scores": (scoring, (w, torch.ones(4, device=DEVICE), torch.zeros(1, device=DEVICE))),
        "topk_rows": (selection, (w[:, :, 0], 2)),
        "kept_gram": (gram, (w, kept)),
        "topq_singular_values": (rsvd, (w, kept, randn(1, 4, 3), 2)),
        "ks_statistic": (ks, (a, a + 0.5)),
        "slice_ffn": (slicing, (w, None, None, kept)),
        "act_gram": (act_gram, (w[0], w[0], "silu", torch.zeros(4, 4, device=DEVICE))),
    }


@pytest.mark.parametrize("forced", ["torch", "triton"])
@pytest.mark.parametrize("op", list(_dispatch_cases()))
def test_env_var_forces_backend(monkeypatch, op, forced):
    module, args = _dispatch_cases()[op]
    calls = []
    for backend in ("torch", "triton"):
        real = getattr(module, f"{op}_{backend}")
        monkeypatch.setattr(module, f"{op}_{backend}", lambda *a, _b=backend, _f=real: calls.append(_b) or _f(*a))
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
