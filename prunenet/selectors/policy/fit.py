"""Training the policy by REINFORCE on spectral rewards, all layers batched.

One episode: score every row of every layer with the noisy keep probabilities p, sample k rows per
layer (Gumbel top-k on log p), reward each layer with 1 / KS of the spectra, and take one AdamW step on
loss = -sum_l gamma^l reward_l sum_{i kept} log p_i  (+ reg_weight * KLD(alpha)).

Where this differs from the public reference, on purpose:
- logits and log-probabilities are float32 and `logsigmoid`-based: under the reference's float16
  autocast they saturate, gradients turn NaN and the scaler skips almost every step;
- one optimizer step per episode on the loss of all layers, not one per layer;
- the loss uses the same noise that chose the action (the reference draws fresh noise);
- no gradient clipping: the reference clips after `zero_grad`, where it never acts;
- the policy kept is the one whose parameters *produced* the best episode (before that episode's step).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict

import torch

from ...config import FitConfig
from ...progress import progress_bar
from ...ratios import kept_width
from ..sampling import logistic_noise, sample_rows
from .network import Policy
from .rewards import make_reward, reward_from_ks


def kld_regulariser(alpha: torch.Tensor) -> torch.Tensor:
    """The reference's "KLD" term on the row scores, summed over rows:
    -(1 - alpha) log alpha - alpha log(1 - alpha) + log 0.5 (alpha clamped away from 0 and 1)."""
    alpha = alpha.clamp(1e-7, 1 - 1e-7)
    return (-(1 - alpha) * alpha.log() - alpha * (-alpha).log1p() + math.log(0.5)).sum()


def train_policy(
    weights: torch.Tensor,
    ratio: float,
    options: FitConfig | None = None,
    model_type: str | None = None,
    progress: bool = False,
) -> Policy:
    """Fit a policy on stacked scored matrices `weights` (L, n, h); rewards are in `policy.metadata`."""
    options = (options or FitConfig()).validate()
    L, n, h = weights.shape
    k = kept_width(n, ratio)
    if k == n:
        raise ValueError(f"ratio {ratio!r} keeps all {n} rows: there is nothing to learn")
    device = weights.device
    policy = Policy(n, h, seed=options.seed).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=options.lr)
    reward_fn = make_reward(options.engine, weights, k, seed=options.seed)
    discounts = options.gamma ** torch.arange(L, dtype=torch.float32, device=device)
    generator = torch.Generator().manual_seed(options.seed)

    rewards: list[float] = []
    mean_ks: list[float] = []
    best_state: dict = {}
    best_total, best_episode = -math.inf, 0
    bar = progress_bar(range(options.episodes), desc="fit", unit="episode", disable=not progress)
    for _ in bar:
        noise = logistic_noise((L, n), generator, device)
        alpha, _, log_keep = policy.score(weights, noise)
        kept = sample_rows(log_keep.detach(), k, generator)
        ks = reward_fn.ks(kept)
        layer_rewards = reward_from_ks(ks)
        loss = -(discounts * layer_rewards * log_keep.gather(1, kept).sum(dim=1)).sum()
        if options.reg_weight:
            loss = loss + options.reg_weight * kld_regulariser(alpha)
        total = float(layer_rewards.sum())
        if total > best_total:
            best_total, best_state = total, copy.deepcopy(policy.state_dict())
            best_episode = len(rewards)
        rewards.append(total)
        mean_ks.append(float(ks.mean()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(reward=f"{total:.1f}", ks=f"{mean_ks[-1]:.4f}", refresh=False)  # drawn with the next step

    policy.load_state_dict(best_state)
    policy.metadata = {
        "model_type": model_type,
        "trained_ratio": ratio,
        "layers": L,
        "kept_width": k,
        **asdict(options),
        "reward_per_episode": rewards,
        "mean_ks_per_episode": mean_ks,
        "best_episode": best_episode,
    }
    return policy.cpu()


def fit_summary(policy: Policy) -> dict:
    """What a report and an output's provenance record of a policy's training."""
    keys = ("trained_ratio", "episodes", "engine", "reward_per_episode", "mean_ks_per_episode", "best_episode")
    return {key: policy.metadata.get(key) for key in keys}
