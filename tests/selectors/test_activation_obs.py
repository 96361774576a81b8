"""The selectors that rank rows on activation statistics: `activation` and `obs` (optimal brain surgeon)."""
from __future__ import annotations

import pytest
import torch
from helpers import correlated_activations

from prunenet.selectors.activation import activation_priority
from prunenet.selectors.obs import obs_priority


@pytest.mark.parametrize("ranker", ["activation", "obs"])
def test_rankers_find_the_rows_that_carry_the_output(ranker):
    n, planted = 30, torch.tensor([2, 7, 11, 19, 23, 29])
    a = correlated_activations(500, n, seed=3) * 0.05
    a[:, planted] *= 40  # these rows are active ...
    w = torch.randn(12, n, generator=torch.Generator().manual_seed(4))
    gram = a.T @ a
    if ranker == "activation":
        priority = activation_priority(gram, w)
    else:
        priority = obs_priority(gram, w, smallest_width=len(planted))
    assert set(priority.topk(len(planted)).indices.tolist()) == set(planted.tolist())


def test_obs_ranking_is_nested_and_validated():
    a, w = correlated_activations(300, 20, seed=5), torch.randn(8, 20)
    priority = obs_priority(a.T @ a, w, smallest_width=4)
    assert priority.shape == (20,) and priority.unique().numel() == 20
    with pytest.raises(ValueError, match="smallest_width"):
        obs_priority(a.T @ a, w, smallest_width=0)
