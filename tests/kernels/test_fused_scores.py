"""fused_scores: the Triton forward and backward against the twin."""
from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE, DTYPES, assert_close, gpu_only, randn

from prunenet_kernels.ops.fused_scores import fused_scores_torch, fused_scores_triton

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
    for got, want in zip(fused_scores_triton(*args), fused_scores_torch(*args)):
        assert_close(got, want, dtype)


def test_fused_scores_saturated_logits_stay_finite():
    """Scores of +-40: alpha rounds to 0 or 1, but log p must stay finite and match logsigmoid."""
    weights = torch.tensor([[[-40.0], [-5.0], [0.0], [5.0], [40.0]]], device=DEVICE)
    direction, offset = torch.ones(1, device=DEVICE), torch.zeros(1, device=DEVICE)
    got = fused_scores_triton(weights, direction, offset)
    want = fused_scores_torch(weights, direction, offset)
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
    for fn in (fused_scores_triton, fused_scores_torch):
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
    fused_scores_triton(weights, direction, offset, noise)[2].sum().backward()
    assert weights.grad is None and direction.grad is not None and torch.isfinite(direction.grad).all()


def test_fused_scores_triton_validates_inputs():
    with pytest.raises(ValueError, match="direction"):
        fused_scores_triton(randn(2, 10, 4), torch.zeros(5, device=DEVICE), torch.zeros(1, device=DEVICE))
