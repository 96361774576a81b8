"""How faithfully the fast `topq` reward engine ranks actions compared with the `exact` engine.

For each weight set (the embedded SmolLM2's 30 scored matrices; LLaMA-2-7B-shaped random matrices,
scaled down on CPU), draw N actions the way a fit does (a policy with a random start, its noisy keep
probabilities, Gumbel top-k), reward each with both engines, and report the Spearman correlation of
the total reward over actions, the mean per-layer Spearman, and the time per reward call.

    python bench/engine_fidelity.py --actions 200 --out bench/results/engine_fidelity.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from scipy import stats

from prunenet.model import open_model
from prunenet.model.ffn_map import SlicePlan, load_scored
from prunenet.ratios import kept_width
from prunenet.selectors.policy.network import Policy
from prunenet.selectors.policy.rewards import make_reward
from prunenet.selectors.sampling import logistic_noise, sample_rows


def sample_actions(weights: torch.Tensor, k: int, count: int) -> list[torch.Tensor]:
    """Actions from several randomly started policies, each sampled with fresh noise."""
    L, n, h = weights.shape
    generator = torch.Generator().manual_seed(0)
    actions = []
    for i in range(count):
        policy = Policy(n, h, seed=i // 10).to(weights.device)
        with torch.no_grad():
            _, _, log_keep = policy.score(weights, logistic_noise((L, n), generator, weights.device))
        actions.append(sample_rows(log_keep, k, generator))
    return actions


def fidelity(weights: torch.Tensor, ratio: float, count: int) -> dict:
    k = kept_width(weights.shape[1], ratio)
    actions = sample_actions(weights, k, count)
    rewards, seconds = {}, {}
    for engine in ("exact", "topq"):
        reward = make_reward(engine, weights, k)
        start = time.perf_counter()
        rewards[engine] = torch.stack([reward(kept).cpu() for kept in actions])  # (actions, L)
        seconds[engine] = (time.perf_counter() - start) / count
    total = {e: r.sum(dim=1).numpy() for e, r in rewards.items()}
    per_layer = [stats.spearmanr(rewards["exact"][:, layer], rewards["topq"][:, layer]).statistic
                 for layer in range(weights.shape[0])]
    return {
        "shape": list(weights.shape), "ratio": ratio, "actions": count,
        "spearman_total_reward": float(stats.spearmanr(total["exact"], total["topq"]).statistic),
        "spearman_per_layer_mean": float(torch.tensor(per_layer).nanmean()),
        "spearman_per_layer_min": float(torch.tensor(per_layer).nan_to_num(2).min()),
        "exact_reward_spread": float(total["exact"].std()),
        "seconds_per_reward": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actions", type=int, default=200)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--random-shape", default=None,
                        help="L,n,h of the random matrices (default 32,11008,4096 on GPU, 4,2752,1024 on CPU)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or 'x86_64'})"
    shape = args.random_shape or ("32,11008,4096" if device.type == "cuda" else "4,2752,1024")
    L, n, h = (int(x) for x in shape.split(","))

    checkpoint, family = open_model("smollm2-135m")
    smollm = load_scored(checkpoint, SlicePlan(checkpoint, family), device)
    random = (torch.randn(L, n, h, generator=torch.Generator().manual_seed(0)) / h**0.5).to(device)
    results = {"device": device_name}
    for name, weights in (("smollm2-135m", smollm), ("random-llama-shaped", random)):
        results[name] = fidelity(weights, args.ratio, args.actions)
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
