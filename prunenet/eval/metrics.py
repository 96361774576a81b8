"""Perplexity, KL(original || compressed) and top-1 agreement over token windows.

The original runs once over every window and its log-probabilities are kept (tokens x vocabulary float32:
about 0.4 GB for 2048 tokens of a 49152-word vocabulary), so that each compressed model can then be loaded,
compared and freed in turn: memory holds those plus one model, however many models are compared. Every
statistic is summed over predicted positions in float64 and averaged at the end (a token-weighted mean
over windows).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Totals:
    """Running sums over predicted positions for one model."""

    nll: float = 0.0
    kl: float = 0.0
    agree: int = 0
    count: int = 0

    def add(self, logprobs: torch.Tensor, targets: torch.Tensor, reference: Reference | None = None) -> None:
        self.nll -= logprobs.gather(1, targets[:, None]).double().sum().item()
        self.count += targets.numel()
        if reference is not None:
            kl = (reference.probs * (reference.logprobs - logprobs)).double().sum()
            self.kl += kl.item()
            self.agree += (logprobs.argmax(dim=-1) == reference.top1).sum().item()

    def summary(self, compared: bool) -> dict:
        mean_nll = self.nll / self.count
        return {
            "perplexity": math.exp(mean_nll),
            "nll": mean_nll,
            "kl": self.kl / self.count if compared else None,
            "agreement": self.agree / self.count if compared else None,
            "predicted_tokens": self.count,
        }


@dataclass
class Reference:
    """The original model's next-token distributions for one window."""

    logprobs: torch.Tensor
    probs: torch.Tensor
    top1: torch.Tensor

    @classmethod
    def of(cls, logprobs: torch.Tensor) -> Reference:
        return cls(logprobs, logprobs.exp(), logprobs.argmax(dim=-1))


@torch.inference_mode()
def next_token_logprobs(model: torch.nn.Module, window: torch.Tensor) -> torch.Tensor:
    """(T - 1, V) float32 log-probabilities of the tokens after positions 0..T-2 of a (1, T) window."""
    logits = model(input_ids=window, use_cache=False).logits[0, :-1]
    return torch.log_softmax(logits.float(), dim=-1)


class Original:
    """The original model's next-token log-probabilities on every window, kept so that the compressed models
    can be loaded and compared one at a time, and the original's own statistics."""

    def __init__(self, model: torch.nn.Module, windows: Sequence[torch.Tensor], device: torch.device, tick=None):
        self.windows, self.device, self.tick = windows, device, tick
        totals, self.logprobs = Totals(), []
        for window in windows:
            window = window.to(device)
            logprobs = next_token_logprobs(model, window)
            totals.add(logprobs, window[0, 1:])
            self.logprobs.append(logprobs)
            if tick is not None:
                tick()
        self.stats = totals.summary(compared=False)

    def compare(self, model: torch.nn.Module, name: str) -> dict:
        """Perplexity, KL(original || `model`) and top-1 agreement of `model` on the same windows."""
        totals = Totals()
        for window, original in zip(self.windows, self.logprobs):
            window = window.to(self.device)
            logprobs = next_token_logprobs(model, window)
            if logprobs.shape != original.shape:
                raise ValueError(
                    f"model {name!r} predicts {logprobs.shape[-1]} tokens, the original {original.shape[-1]}: "
                    "they do not share a vocabulary"
                )
            totals.add(logprobs, window[0, 1:], Reference.of(original))
            del logprobs
            if self.tick is not None:
                self.tick()
        return totals.summary(compared=True)
