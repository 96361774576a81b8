"""End to end: fit (20 episodes) plus compress of a LLaMA-2-7B-shaped random FFN stack, prunenet against
the straightforward paper-faithful implementation in `paper_reference.py`, in one run on one machine.

Shapes: 32 layers of 11008 x 4096 in bf16 on a GPU; on CPU a scaled-down 8 x 1376 x 512 (one eighth of
each dimension) in float32. Override with PRUNENET_BENCH_SHAPE=L,n,h and PRUNENET_BENCH_EPISODES=E
(CI uses a tiny shape with `--benchmark-disable`). With timing enabled, the results (device name,
seconds, speed-up) are written to bench/results/end_to_end-<device>.json.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import paper_reference
import pytest
import torch

import prunenet_kernels as K
from prunenet.config import FitConfig
from prunenet.ratios import kept_width
from prunenet.selectors import select_rows
from prunenet.selectors.policy.fit import train_policy

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DEVICE_NAME = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
DEFAULT_SHAPE = (32, 11008, 4096) if DEVICE.type == "cuda" else (8, 1376, 512)
SHAPE = tuple(int(x) for x in os.environ["PRUNENET_BENCH_SHAPE"].split(",")) if os.environ.get(
    "PRUNENET_BENCH_SHAPE") else DEFAULT_SHAPE
EPISODES = int(os.environ.get("PRUNENET_BENCH_EPISODES", "20"))
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
RATIO = 0.3
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def ffn() -> dict[str, torch.Tensor]:
    L, n, h = SHAPE
    g = torch.Generator(device=DEVICE).manual_seed(0)
    make = lambda *shape: (torch.randn(*shape, generator=g, device=DEVICE) / h**0.5).to(DTYPE)
    return {"gate": make(L, n, h), "up": make(L, n, h), "down": make(L, h, n)}


def prunenet_fit_and_compress(ffn: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What `prunenet compress` does, in memory: fit, select, one slicing launch for all layers."""
    gate = ffn["gate"] if DEVICE.type == "cuda" else ffn["gate"].float()
    policy = train_policy(gate, RATIO, FitConfig(episodes=EPISODES)).to(DEVICE)
    kept = select_rows(gate, kept_width(gate.shape[1], RATIO), policy=policy)
    gate_k, up_k, down_k = K.slice_ffn(ffn["gate"], ffn["up"], ffn["down"], kept)
    return {"gate": gate_k, "up": up_k, "down": down_k, "kept": kept}


def reference_fit_and_compress(ffn: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return paper_reference.fit_and_compress(ffn, RATIO, episodes=EPISODES)


def _synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["prunenet", "paper_reference"])
def test_fit_and_compress(benchmark, ffn, impl):
    run = prunenet_fit_and_compress if impl == "prunenet" else reference_fit_and_compress
    L, n, h = SHAPE
    k = kept_width(n, RATIO)

    def timed():
        start = time.perf_counter()
        out = run(ffn)
        _synchronize()
        TIMES[impl] = time.perf_counter() - start
        return out

    benchmark.group = f"fit+compress {L}x{n}x{h} {DTYPE} {EPISODES} episodes on {DEVICE_NAME}"
    out = benchmark.pedantic(timed, rounds=1, iterations=1)
    assert out["gate"].shape == (L, k, h) and out["up"].shape == (L, k, h) and out["down"].shape == (L, h, k)
    if "kept" in out:  # the slicing kernel wrote exactly the kept rows and columns
        rows = out["kept"].unsqueeze(-1)
        assert torch.equal(out["gate"], torch.gather(ffn["gate"], 1, rows.expand(-1, -1, h)))
        assert torch.equal(out["down"], torch.gather(ffn["down"], 2, out["kept"].unsqueeze(1).expand(-1, h, -1)))
    benchmark.extra_info.update({"device": DEVICE_NAME, "shape": SHAPE, "episodes": EPISODES, "seconds": TIMES[impl]})
    if len(TIMES) == 2:
        speedup = TIMES["paper_reference"] / TIMES["prunenet"]
        benchmark.extra_info["speedup_vs_reference"] = speedup
        print(f"\nfit+compress {SHAPE} on {DEVICE_NAME}: prunenet {TIMES['prunenet']:.2f} s, "
              f"paper reference {TIMES['paper_reference']:.2f} s, speed-up {speedup:.1f}x")
        if not benchmark.disabled:
            path = Path(__file__).with_name("results") / f"end_to_end-{DEVICE_NAME.replace(' ', '_')}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps({"device": DEVICE_NAME, "shape": SHAPE, "dtype": str(DTYPE),
                                        "episodes": EPISODES, "ratio": RATIO, "seconds": TIMES,
                                        "speedup": speedup}, indent=2) + "\n")
