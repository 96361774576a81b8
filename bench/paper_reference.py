"""A straightforward, paper-faithful PruneNet: the baseline that bench/ measures prunenet against.

Written the way the paper describes the method, without prunenet's speed-ups (docs/method.md): the policy
forms the (n x n) product W A^T for every layer, every episode takes a full SVD of every sliced
matrix (and the original spectra are recomputed with it), the KS statistic is computed on the host
with scipy, rows are sampled with `torch.multinomial`, and the model is deep-copied every episode.
Numerics follow prunenet's clean choices (float32, logsigmoid, one step per episode), so both do the
same learning work and only the engineering differs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from scipy import stats


class PaperPolicy(torch.nn.Module):
    def __init__(self, n: int, h: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = torch.nn.Linear(h, n)
        self.readout = torch.nn.Parameter(torch.rand(n, 1))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Row scores (pre-sigmoid) of one layer: (W A^T + b) r, an n x n x h product."""
        return (self.proj(weight.float()) @ self.readout).squeeze(-1)


def fit_and_compress(ffn: dict[str, torch.Tensor], ratio: float, episodes: int = 20, lr: float = 1e-3,
                     gamma: float = 0.99, seed: int = 0) -> dict[str, torch.Tensor]:
    """ffn: gate, up (L, n, h) and down (L, h, n). Returns the compressed FFN of the best episode's policy."""
    gate = ffn["gate"]
    L, n, h = gate.shape
    k = int((1 - ratio) * n)
    policy = PaperPolicy(n, h, seed).to(gate.device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    best_reward, best_state = -float("inf"), None
    for _ in range(episodes):
        model = copy.deepcopy(ffn)  # the reference works on a fresh copy of the model each episode
        loss, total = 0.0, 0.0
        for layer in range(L):
            weight = model["gate"][layer]
            scores = policy(weight)
            noise = torch.logit(torch.rand(n, device=weight.device).clamp(1e-7, 1 - 1e-7))
            log_keep = F.logsigmoid(noise + scores)
            kept = torch.multinomial(log_keep.detach().exp(), k, replacement=False).sort().values
            original = torch.linalg.svd(weight.float(), full_matrices=False).S
            sliced = torch.linalg.svd(weight[kept].float(), full_matrices=False).S
            ks = stats.ks_2samp(original.cpu().numpy(), sliced.cpu().numpy()).statistic
            reward = 1.0 / max(ks, 1e-6)
            total += reward
            loss = loss - gamma**layer * reward * log_keep[kept].sum()
        if total > best_reward:
            best_reward, best_state = total, copy.deepcopy(policy.state_dict())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.load_state_dict(best_state)
    out = {"gate": [], "up": [], "down": []}
    with torch.no_grad():
        for layer in range(L):
            kept = policy(gate[layer]).topk(k).indices.sort().values
            out["gate"].append(gate[layer][kept])
            out["up"].append(ffn["up"][layer][kept])
            out["down"].append(ffn["down"][layer][:, kept])
    return {name: torch.stack(tensors) for name, tensors in out.items()}
