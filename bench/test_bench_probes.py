"""Self-written probes: tokens/s of generation with each setting, side by side in one run.

The settings: sequences per `generate` call (16 with a dynamic KV cache, the sampler until now; or all
at once, the default), float32 or bfloat16 weights, transformers' dynamic or static KV cache (static: the
default). Every setting writes the same number of tokens with the same sampling (temperature 1 from BOS,
EOS suppressed) through `prunenet.calibration.probes.generate`. On the embedded model by default
(PRUNENET_PROBE_BENCH_MODEL=tiny: a tiny random LLaMA, for CI's quick pass); PRUNENET_PROBE_BENCH_TOKENS
sets the budget (default 8192, the default probe budget). With timing enabled the tokens/s of each
setting, the machine and the load average are written to bench/results/probe_speed-cpu.json.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
import torch
from tiny_models import build_model, tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from prunenet.calibration.probes import ProbePlan, generate
from prunenet.model import resolve_model

TINY = os.environ.get("PRUNENET_PROBE_BENCH_MODEL") == "tiny"
TOKENS = int(os.environ.get("PRUNENET_PROBE_BENCH_TOKENS", "256" if TINY else "8192"))
LENGTH = 32 if TINY else 128
BASELINE = "batch16-fp32"
SETTINGS = {  # name -> (sequences per call (0: all), dtype, KV cache)
    BASELINE: (16, torch.float32, None),
    "all-fp32": (0, torch.float32, None),
    "all-fp32-static": (0, torch.float32, "static"),
    "all-bf16-static": (0, torch.bfloat16, "static"),
}
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def models():
    if TINY:
        model, tokenizer = build_model("llama"), tiny_tokenizer()
        return {torch.float32: model.eval(), torch.bfloat16: build_model("llama").to(torch.bfloat16).eval()}, tokenizer
    path = resolve_model("smollm2-135m")
    loaded = {dtype: AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
              for dtype in (torch.float32, torch.bfloat16)}
    return loaded, AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_probe_generation_speed(benchmark, models, setting):
    batch, dtype, cache = SETTINGS[setting]
    loaded, tokenizer = models
    plan = ProbePlan("self", TOKENS, LENGTH, seed=0)
    calls = {"batch": batch or plan.sequences, "cache": cache}
    tokens = benchmark.pedantic(generate, args=(loaded[dtype], tokenizer, plan), kwargs=calls, rounds=2,
                                iterations=1, warmup_rounds=0)
    assert tokens.shape == (plan.sequences, LENGTH) and (tokens[:, 0] == tokenizer.bos_token_id).all()
    benchmark.group = f"probe generation, {TOKENS} tokens"
    if benchmark.stats is not None:
        RATES[setting] = round(TOKENS / benchmark.stats.stats.median, 1)


def test_write_results():
    if len(RATES) < len(SETTINGS) or TINY:
        pytest.skip("timings disabled or incomplete, or a tiny model: nothing to record")
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
              "tokens": TOKENS, "length": LENGTH, "tokens_per_s": RATES,
              f"speedup_vs_{BASELINE}": {k: round(v / RATES[BASELINE], 2) for k, v in RATES.items()}}
    Path(__file__).with_name("results").joinpath("probe_speed-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
