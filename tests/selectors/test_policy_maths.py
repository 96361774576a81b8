"""The maths of the paper's method and of its fast forms, each checked against the straightforward form:
policy scores, sampling rows without replacement, the KS rewards and their engines, the fit."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

import prunenet_kernels as K
from prunenet.config import FitConfig
from prunenet.ratios import kept_width
from prunenet.selectors import select_rows
from prunenet.selectors.policy.fit import kld_regulariser, train_policy
from prunenet.selectors.policy.network import Policy, load_policy
from prunenet.selectors.policy.rewards import ExactReward, TopQReward
from prunenet.selectors.sampling import all_rows, sample_rows


def _weights(L=3, n=50, h=24, seed=0):
    return torch.randn(L, n, h, generator=torch.Generator().manual_seed(seed))


def test_reassociated_scores_equal_the_paper_form_with_gradients():
    W = _weights()
    policy = Policy(50, 24, seed=1)
    noise = torch.randn(3, 50)
    alpha, keep, log_keep = policy.score(W, noise)
    A, b, r = policy.projection, policy.bias, policy.readout
    paper_z = ((W @ A.t() + b) @ r.unsqueeze(1)).squeeze(-1)  # the (n x n x h) product of the paper
    torch.testing.assert_close(alpha, torch.sigmoid(paper_z), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(keep, torch.sigmoid(noise + paper_z), rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(log_keep.sum(), (A, b, r))
    paper_grads = torch.autograd.grad(torch.nn.functional.logsigmoid(noise + paper_z).sum(), (A, b, r))
    for got, want in zip(grads, paper_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_log_keep_probability_stays_finite_where_float16_saturates():
    W = _weights() * 50  # scores far beyond the range where sigmoid rounds to exactly 1
    policy = Policy(50, 24)
    _, keep, log_keep = policy.score(W, torch.zeros(3, 50))
    assert (keep == 1).any() and torch.isfinite(log_keep).all()
    (grad,) = torch.autograd.grad(log_keep.sum(), policy.readout)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def _exact_set_probabilities(p: torch.Tensor, k: int) -> dict[tuple[int, ...], float]:
    """P(kept set) for successive sampling without replacement, by enumerating orders."""
    probs: dict[tuple[int, ...], float] = {}
    for order in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, float(p.sum())
        for i in order:
            prob *= float(p[i]) / left
            left -= float(p[i])
        key = tuple(sorted(order))
        probs[key] = probs.get(key, 0.0) + prob
    return probs


def test_gumbel_topk_matches_sampling_without_replacement():
    p = torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4])
    k, draws = 2, 60_000
    kept = sample_rows(p.log().expand(draws, -1).contiguous(), k, torch.Generator().manual_seed(0))
    expected = _exact_set_probabilities(p, k)
    counts = {key: 0 for key in expected}
    for row in kept.tolist():
        counts[tuple(row)] += 1
    observed = [counts[key] for key in expected]
    total = sum(expected.values())  # 1 up to rounding; chisquare wants equal sums exactly
    chi2 = stats.chisquare(observed, [expected[key] / total * draws for key in expected])
    assert chi2.pvalue > 1e-3, chi2
    assert max(abs(counts[key] / draws - expected[key]) for key in expected) < 0.01


def _ks_float64(W: torch.Tensor, kept: torch.Tensor) -> list[float]:
    result = []
    for layer in range(W.shape[0]):
        full = torch.linalg.svdvals(W[layer].double())
        sliced = torch.linalg.svdvals(W[layer, kept[layer]].double())
        result.append(stats.ks_2samp(full.numpy(), sliced.numpy()).statistic)
    return result


@pytest.mark.parametrize("keep", [40, 30, 12], ids=["downdate", "direct", "k<h"])
def test_exact_engine_matches_float64_svd_and_scipy_ks(keep):
    W = _weights(L=4, n=50, h=24)
    kept = select_rows(W, keep, selector="random", seed=3)
    engine = ExactReward(W)
    torch.testing.assert_close(engine.ks(kept).double(), torch.tensor(_ks_float64(W, kept), dtype=torch.float64),
                               rtol=0, atol=1e-6)
    spectra = engine.spectra(kept)
    assert spectra.shape == (4, min(keep, 24))


def test_downdate_gram_equals_direct_gram():
    W = _weights(L=2, n=60, h=16)
    kept = select_rows(W, 45, selector="random")
    full = K.kept_gram(W, all_rows(W))
    torch.testing.assert_close(K.kept_gram(W, kept, full), K.kept_gram(W, kept), rtol=1e-4, atol=1e-4)


def test_topq_engine_recovers_the_top_singular_values():
    W = _weights(L=2, n=60, h=32)
    kept = select_rows(W, 45, selector="random")
    engine = TopQReward(W, k=45, q=8, power_iters=4)
    want = torch.stack([torch.linalg.svdvals(W[layer, kept[layer]])[:8].flip(0) for layer in range(2)])
    torch.testing.assert_close(engine.spectra(kept), want, rtol=1e-3, atol=1e-3)


def test_fit_trains_the_policy_and_is_reproducible():
    W = _weights(L=3, n=50, h=24)
    options = FitConfig(episodes=4, lr=1e-2, seed=5)
    first, second = train_policy(W, 0.3, options), train_policy(W, 0.3, options)
    rewards = first.metadata["reward_per_episode"]
    assert len(rewards) == 4 and all(math.isfinite(r) and r > 0 for r in rewards)
    assert rewards == second.metadata["reward_per_episode"]
    assert torch.equal(first.projection, second.projection)
    # The kept policy is the one that produced the best episode.
    assert rewards[first.metadata["best_episode"]] == max(rewards)


def test_every_episode_after_the_first_uses_updated_parameters():
    W = _weights(L=2, n=40, h=16)
    policy = train_policy(W, 0.25, FitConfig(episodes=3, lr=0.05, seed=0))
    assert len(set(policy.metadata["mean_ks_per_episode"])) > 1


def test_kld_regulariser_is_zero_at_one_half_and_positive_elsewhere():
    assert kld_regulariser(torch.full((5,), 0.5)).abs() < 1e-6
    assert kld_regulariser(torch.tensor([0.1, 0.9])) > 0


def test_regulariser_changes_the_trained_policy():
    W = _weights(L=2, n=40, h=16)
    plain = train_policy(W, 0.25, FitConfig(episodes=3, lr=0.05))
    regularised = train_policy(W, 0.25, FitConfig(episodes=3, lr=0.05, reg_weight=10.0))
    # Episode 0 acts with the same initial policy; later episodes follow the differently updated ones.
    assert plain.metadata["mean_ks_per_episode"][0] == regularised.metadata["mean_ks_per_episode"][0]
    assert plain.metadata["mean_ks_per_episode"][1:] != regularised.metadata["mean_ks_per_episode"][1:]


def test_policy_round_trips_through_safetensors(tmp_path):
    policy = train_policy(_weights(), 0.3, FitConfig(episodes=2), model_type="llama")
    path = policy.save(tmp_path / "p.safetensors")
    loaded = load_policy(path)
    assert (loaded.n, loaded.h) == (50, 24)
    assert loaded.metadata["model_type"] == "llama" and loaded.metadata["trained_ratio"] == 0.3
    assert loaded.metadata["reward_per_episode"] == policy.metadata["reward_per_episode"]
    for name, param in policy.named_parameters():
        assert torch.equal(param, getattr(loaded, name))
    with pytest.raises(ValueError, match="exists"):
        policy.save(path)
    with pytest.raises(ValueError, match=r"\(n=50, h=24\).*\(n=60, h=24\)"):
        loaded.score(_weights(n=60))


def test_a_policy_selects_at_any_ratio():
    W = _weights()
    policy = train_policy(W, 0.3, FitConfig(episodes=2))
    for ratio in (0.1, 0.5, 0.8):
        k = kept_width(50, ratio)
        for mode in ("sample", "topk"):
            kept = select_rows(W, k, policy=policy, mode=mode)
            assert kept.shape == (3, k) and (kept.diff(dim=1) > 0).all()


def test_topk_selection_is_deterministic_and_follows_the_scores():
    W = _weights()
    policy = Policy(50, 24)
    kept = select_rows(W, 10, policy=policy, mode="topk", seed=1)
    assert torch.equal(kept, select_rows(W, 10, policy=policy, mode="topk", seed=2))
    alpha = policy.score(W)[0].detach()
    assert torch.equal(kept, alpha.topk(10, dim=1).indices.sort(dim=1).values)
