"""`prunenet`: the paper's method. A policy network scores rows from the weights alone; it is trained once
by REINFORCE on a spectral reward (`fit.py`, `rewards.py`) at one ratio, then slices any ratio, sampling
rows from its keep probabilities (as the paper) or taking their top k."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

import prunenet_kernels as K

from ...atomic import check_output
from ...config import FitConfig, TrainingConfig, option
from ...ratios import check_ratio
from ..base import Ranking, Run, WeightSelector
from ..sampling import logistic_noise, sample_rows
from .fit import fit_summary, train_policy
from .network import Policy, load_policy

DEFAULT_FIT_RATIO = 0.3  # what `score` trains at when no ratio is asked: the paper's headline ratio


@dataclass(frozen=True)
class PolicyConfig(TrainingConfig):
    """The paper's selector: how its policy is trained, reused and sampled."""

    selection: Literal["sample", "topk"] = option(
        "sample", "rows sampled from the policy (the paper) or its top-k scores", slicing=True)
    fit_ratio: float | None = option(
        None, f"ratio the policy is trained at (default: the first ratio; score: {DEFAULT_FIT_RATIO})")
    policy: str | None = option(None, "use this saved policy instead of training one", slicing=True)
    policy_out: str | None = option(None, "also save the trained policy to this file", flag="--save-policy",
                                    slicing=True)

    def check(self) -> None:
        super().check()
        if self.fit_ratio is not None:
            check_ratio(self.fit_ratio)
        if self.policy is not None and self.policy_out is not None:
            raise ValueError("policy_out (--save-policy) needs a policy trained by this run, not a given policy")


def select_with_policy(weights: torch.Tensor, k: int, policy: Policy, mode: str = "sample",
                       seed: int = 0) -> torch.Tensor:
    """Kept row indices (L, k), ascending: sampled from the policy's noisy keep probabilities, or its top k."""
    generator = torch.Generator().manual_seed(seed)
    L, n, _ = weights.shape
    with torch.no_grad():
        if mode == "topk":
            # log alpha ranks rows like alpha but does not round to 1 for large scores.
            return K.topk_rows(policy.score(weights)[2], k)
        _, _, log_keep = policy.score(weights, logistic_noise((L, n), generator, weights.device))
        return sample_rows(log_keep, k, generator)


class PolicySelector(WeightSelector):
    name = "prunenet"
    help = "the paper's policy, trained by REINFORCE on the weights' spectra (weights only)"
    options = PolicyConfig
    trains_policy = True

    config: PolicyConfig

    def __init__(self, config: PolicyConfig, seed: int = 0):
        super().__init__(config, seed)
        self.policy: Policy | None = load_policy(config.policy) if config.policy is not None else None
        self.trained = False

    def stored_scores(self, path: str | Path) -> None:
        """A scores file of this selector is its policy: it ranks rows once the weights are read."""
        if self.config.policy is not None:
            raise ValueError("give at most one of scores (--scores) and policy (--policy)")
        self.policy = load_policy(path)
        return None

    def needs_training(self, ratios: list[float]) -> bool:
        # Ratio 0 keeps every row and needs no policy: no fit when it is the only ratio, unless one is asked.
        return self.policy is None and (self.config.fit_ratio is not None or any(ratios))

    def training_ratio(self, ratios: list[float]) -> float:
        if self.config.fit_ratio is not None:
            return self.config.fit_ratio
        return next((r for r in ratios if r), DEFAULT_FIT_RATIO)

    def check_outputs(self, ratios: list[float], overwrite: bool) -> None:
        if self.config.policy_out is not None:
            if not self.needs_training(ratios):
                raise ValueError("policy_out (--save-policy) needs a policy trained by this run")
            check_output(self.config.policy_out, overwrite)

    def prepare(self, weights: torch.Tensor | None, ratios: list[float], run: Run) -> None:
        assert weights is not None
        n, h = weights.shape[1], weights.shape[2]
        if self.policy is not None:
            try:
                self.policy.check_shape(n, h)
            except ValueError as exc:
                raise ValueError(f"policy {str(self.config.policy or 'from scores')!r}: {exc}") from None
        elif self.needs_training(ratios):
            training = FitConfig(**{f: getattr(self.config, f) for f in TrainingConfig.__dataclass_fields__},
                                 seed=self.seed)
            with run.timer.phase("fit"):
                self.policy = train_policy(weights, self.training_ratio(ratios), training, run.model_type,
                                           run.progress)
            self.trained = True
            if self.config.policy_out is not None:
                self.policy.save(self.config.policy_out, run.overwrite)
        if self.policy is not None:
            self.policy = self.policy.to(weights.device)

    def rank(self, weights: torch.Tensor, widths: list[int]) -> Ranking:
        assert self.policy is not None, "prepare() trains or loads the policy first"
        return Ranking(kept={k: select_with_policy(weights, k, self.policy, self.config.selection, self.seed)
                             for k in widths})

    def provenance(self) -> dict | None:
        return fit_summary(self.policy) if self.policy is not None else None

    def fit_report(self) -> dict | None:
        return fit_summary(self.policy) if self.trained and self.policy is not None else None

