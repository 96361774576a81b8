"""Perplexity, KL(original || compressed) and top-1 agreement, from one pass over the token windows.

Per window the original runs once and then each compressed model, so memory holds one window's
log-probabilities of the original plus those of the model being compared; every statistic is summed
over predicted positions in float64 and averaged at the end (a token-weighted mean over windows).
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


def quality(models: Sequence[torch.nn.Module], names: Sequence[str], windows: Sequence[torch.Tensor],
            device: torch.device, progress: bool = False) -> list[dict]:
    """Statistics of every model; `models[0]` is the original that the others are compared with."""
    from ..progress import progress_bar

    totals = [Totals() for _ in models]
    for window in progress_bar(windows, desc="quality", unit="window", disable=not progress):
        window = window.to(device)
        targets = window[0, 1:]
        original = next_token_logprobs(models[0], window)
        totals[0].add(original, targets)
        reference = Reference.of(original)
        for model, name, total in zip(models[1:], names[1:], totals[1:]):
            logprobs = next_token_logprobs(model, window)
            if logprobs.shape != original.shape:
                raise ValueError(
                    f"model {name!r} predicts {logprobs.shape[-1]} tokens, the original {original.shape[-1]}: "
                    "they do not share a vocabulary"
                )
            total.add(logprobs, targets, reference)
            del logprobs
        del original, reference
    return [total.summary(compared=i > 0) for i, total in enumerate(totals)]
