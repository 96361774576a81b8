"""The row selectors, by name: adding one means one module and one entry below.

Each is a `Selector` (`base.py`): what it needs (the scored weights, or activation statistics on the
probes, after the whole model has run on them where it `uses_model`), its own options, and the keep
priority it produces.
"""
from __future__ import annotations

import torch

from .activation import ActivationSelector
from .base import Ranking, Run, Selector, StatisticsSelector, WeightSelector
from .fisher import FisherSelector
from .magnitude import MagnitudeSelector
from .obs import ObsSelector
from .policy import PolicyConfig, PolicySelector
from .policy.network import Policy
from .random import RandomSelector

SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls for cls in (ActivationSelector, ObsSelector, FisherSelector, PolicySelector, RandomSelector,
                               MagnitudeSelector)
}


def make_selector(name: str, config, seed: int = 0) -> Selector:
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}")
    return SELECTORS[name](config, seed)


def select_rows(weights: torch.Tensor, k: int, selector: str = "prunenet", policy: Policy | None = None,
                mode: str = "sample", seed: int = 0) -> torch.Tensor:
    """Kept row indices (L, k), ascending, of a weights-only selector for stacked scored matrices (L, n, h)."""
    cls = SELECTORS.get(selector)
    if cls is None or not issubclass(cls, WeightSelector):
        weight_only = [name for name, c in SELECTORS.items() if issubclass(c, WeightSelector)]
        raise ValueError(f"unknown selector {selector!r}; choose one of {', '.join(weight_only)}")
    if cls is PolicySelector:
        if policy is None:
            raise ValueError("selector 'prunenet' needs a policy")
        with_policy = PolicySelector(PolicyConfig.from_options({"selection": mode}), seed)
        with_policy.policy = policy
        return with_policy.rank(weights, [k]).rows(k)
    return cls(cls.options(), seed).rank(weights, [k]).rows(k)


__all__ = ["SELECTORS", "Ranking", "Run", "Selector", "StatisticsSelector", "WeightSelector",
           "PolicyConfig", "make_selector", "select_rows"]
