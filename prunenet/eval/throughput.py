"""Throughput of a loaded model on this machine: prefill and greedy decode tokens per second.

Prefill: one forward pass over a (batch, seq_len) block of token ids, no cache.
Decode: a prompt of `prompt_len` ids is prefilled into a KV cache (not timed), then `new_tokens` greedy
steps of one token each are timed. Each measurement runs once to warm up, then `repeats` times; the
median is reported. Inputs are seeded random ids: speed does not depend on the text.
"""
from __future__ import annotations

import inspect
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .corpus import check_count


@dataclass(frozen=True)
class ThroughputSettings:
    batch: int = 1
    seq_len: int = 256
    prompt_len: int = 32
    new_tokens: int = 32
    repeats: int = 3

    def validate(self) -> ThroughputSettings:
        check_count("prefill batch", self.batch, 1)
        check_count("prefill length", self.seq_len, 1)
        check_count("decode prompt length", self.prompt_len, 1)
        check_count("decode new tokens", self.new_tokens, 1)
        check_count("throughput repeats", self.repeats, 1)
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def runs(self) -> int:
        """Timed and warm-up runs of one model: prefill and decode, `repeats` + 1 each."""
        return 2 * (self.repeats + 1)

    def describe(self) -> str:
        return (f"prefill batch {self.batch} x {self.seq_len} tokens; decode {self.new_tokens} greedy tokens after a "
                f"{self.prompt_len}-token prompt; median of {self.repeats} runs after a warm-up")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(run, repeats: int, tick: Callable[[], object] | None = None) -> float:
    """Median of `repeats` calls of `run` (which returns the seconds it timed), after one warm-up call;
    `tick` is called after each call (a progress bar)."""
    def counted() -> float:
        seconds = run()
        if tick is not None:
            tick()
        return seconds

    counted()  # warm-up: allocator, kernels, caches
    return statistics.median(counted() for _ in range(repeats))


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _random_ids(model: torch.nn.Module, shape: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(model.config.vocab_size, shape, generator=generator).to(_model_device(model))


@torch.inference_mode()
def prefill_tokens_per_s(model: torch.nn.Module, settings: ThroughputSettings, seed: int = 0, tick=None) -> float:
    device = _model_device(model)
    ids = _random_ids(model, (settings.batch, settings.seq_len), seed)

    def run() -> float:
        _sync(device)
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        _sync(device)
        return time.perf_counter() - start

    return settings.batch * settings.seq_len / _median_seconds(run, settings.repeats, tick)


@torch.inference_mode()
def decode_tokens_per_s(model: torch.nn.Module, settings: ThroughputSettings, seed: int = 0, tick=None) -> float:
    device = _model_device(model)
    prompt = _random_ids(model, (1, settings.prompt_len), seed)

    # Recent transformers name the KV cache `cache` (argument and output), older ones `past_key_values`;
    # the old name still works there but warns on every step.
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def run() -> float:
        out = model(input_ids=prompt, use_cache=True)
        cache, token = out[key], out.logits[:, -1:].argmax(dim=-1)
        _sync(device)
        start = time.perf_counter()
        for _ in range(settings.new_tokens):
            out = model(input_ids=token, use_cache=True, **{key: cache})
            cache, token = out[key], out.logits[:, -1:].argmax(dim=-1)
        _sync(device)
        return time.perf_counter() - start

    return settings.new_tokens / _median_seconds(run, settings.repeats, tick)


def measure(model: torch.nn.Module, settings: ThroughputSettings, tick: Callable[[], object] | None = None) -> dict:
    """Prefill and decode tokens/s; `tick` is called after each of the `settings.runs` runs."""
    return {
        "prefill_tokens_per_s": prefill_tokens_per_s(model, settings, tick=tick),
        "decode_tokens_per_s": decode_tokens_per_s(model, settings, tick=tick),
    }


def machine(device: torch.device) -> dict:
    """What the throughput was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
