"""Evaluation of compressed models: quality against the original, size, speed, tasks.

    from prunenet.eval import evaluate
    report = evaluate("smollm2-135m", ["./smol-30"])       # perplexity, KL, top-1 agreement, tokens/s

Modules: `corpus` (text and windows), `models` (loading, description), `metrics` (PPL/KL/agreement),
`throughput` (prefill and decode tokens/s), `tasks` (lm-eval, extra [eval]), `spectra` and `plots`
(PNG pictures, extra [plot]), `table` (markdown), `cli` (`prunenet eval` and `prunenet plot`).
"""
from .evaluation import evaluate
from .throughput import ThroughputSettings

__all__ = ["ThroughputSettings", "evaluate"]
