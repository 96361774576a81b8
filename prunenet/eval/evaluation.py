"""`evaluate`: how close compressed models stay to their original, how big and how fast they are.

    from prunenet.eval import evaluate
    report = evaluate("smollm2-135m", ["./smol-30"], tokens=4096)

All options are checked (models exist, text readable, tasks known...) before any model is loaded.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..devices import resolve_device
from ..report import PhaseTimer, check_json_path, peak_rss_mb, save_report
from .answers import PROMPTS, answer_all, follows, kept_share
from .corpus import DEFAULT_CORPUS, DEFAULT_TOKENS, DEFAULT_WINDOW, check_count, default_text, read_text, token_windows
from .metrics import Original
from .models import load_model, load_tokenizer, resolve
from .tasks import parse_tasks, run_tasks, task_manager
from .throughput import ThroughputSettings, machine, measure


def evaluate(
    original: str | os.PathLike,
    compressed: Sequence[str | os.PathLike] = (),
    *,
    text: str | os.PathLike | None = None,
    tokens: int = DEFAULT_TOKENS,
    window: int = DEFAULT_WINDOW,
    throughput: ThroughputSettings | bool = True,
    tasks: str | Sequence[str] | None = None,
    task_limit: int | None = None,
    task_include_path: str | os.PathLike | None = None,
    answers: bool = False,
    device: str = "auto",
    json_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate `original` and each of `compressed` (folders or the embedded model's alias).

    Quality on the first `tokens` tokens of `text` (a UTF-8 file; default the CPython `pydoc_data.topics`
    corpus), in non-overlapping windows of `window` tokens, all models tokenized by the original's
    tokenizer: perplexity, and for compressed models the mean KL(original || compressed) of the
    next-token distributions and the fraction of positions where both predict the same top-1 token.
    `throughput`: True for the default `ThroughputSettings`, custom settings, or False to skip.
    `tasks` ("piqa,arc_easy" or a list) run through lm-eval (extra `[eval]`), at most `task_limit`
    examples each, with task YAMLs also looked up in `task_include_path`. `answers`: the short questions
    of `answers.PROMPTS` through the chat template, greedy, checked by rule (code tasks run their function).
    Returns the report (also written as JSON to `json_path` if given); `models[0]` is the original.
    """
    if isinstance(compressed, (str, os.PathLike)) or not isinstance(compressed, Sequence):
        raise TypeError(f"compressed must be a list of models, got {type(compressed).__name__} {compressed!r}")
    check_count("tokens", tokens, 2)
    check_count("window", window, 2)
    names = [original, *compressed]
    for name in names:
        resolve(name, progress)
    corpus_text = default_text() if text is None else read_text(text)
    json_path = check_json_path(json_path)
    settings = _throughput_settings(throughput)
    task_names = parse_tasks(tasks)
    if task_limit is not None:
        check_count("task_limit", task_limit, 1)
    manager = task_manager(task_names, task_include_path) if task_names else None
    dev = resolve_device(device)
    timer = PhaseTimer(dev)

    with timer.phase("load"):
        first = load_model(original, dev, progress)
        _check_context(first.model.config, window, settings)
        tokenizer = load_tokenizer(first.path, progress)
        windows = token_windows(tokenizer, corpus_text, tokens, window)
    bar = _progress(settings, len(names), len(windows) + (len(PROMPTS) if answers else 0), progress)
    with timer.phase("quality"):
        reference = Original(first.model, windows, dev, bar.update)
    models: list[dict] = []
    original_ids: list[list[int]] = []  # the original's answers as tokens, which each compressed model is fed

    def measure_all(model, stat: dict) -> None:
        """Its report entry: the quality figures, then throughput, tasks and answers, each timed."""
        entry = {"role": "compressed" if models else "original", "name": model.name, **model.info, **stat}
        with timer.phase("throughput"):
            entry["throughput"] = measure(model.model, settings, bar.update) if settings else None
        with timer.phase("tasks"):
            entry["tasks"] = run_tasks(model.model, tokenizer, task_names, manager, task_limit) if task_names else None
        if answers:
            with timer.phase("answers"):
                entry["answers"] = answer_all(model.model, tokenizer, advance=bar.update)
                ids = [answer.pop("ids") for answer in entry["answers"]]  # the report has the text
                if models:
                    entry.update(follows(model.model, tokenizer, original_ids))
                else:
                    original_ids.extend(ids)
            entry["answers_right"] = sum(a["right"] for a in entry["answers"])
            entry["answers_kept"] = kept_share(models[0]["answers"], entry["answers"]) if models else None
        models.append(entry)

    measure_all(first, reference.stats)
    del first  # one model in memory at a time from here on
    for name in compressed:
        with timer.phase("load"):
            loaded = load_model(name, dev, progress)
        with timer.phase("quality"):
            stat = reference.compare(loaded.model, loaded.name)
        measure_all(loaded, stat)
        del loaded
    bar.close()
    report = {
        "command": "eval",
        "corpus": {
            "source": DEFAULT_CORPUS if text is None else str(text),
            "tokens": sum(w.shape[1] for w in windows),
            "tokens_asked": tokens,
            "window": window,
            "windows": len(windows),
            "predicted_tokens": reference.stats["predicted_tokens"],
        },
        "machine": machine(dev),
        "throughput_settings": settings.as_dict() if settings else None,
        "tasks": task_names or None,
        "task_limit": task_limit,
        "models": models,
        "timings_s": timer.as_dict(),
        "peak_rss_mb": peak_rss_mb(),
    }
    save_report(json_path, report)
    return report


def _progress(settings: ThroughputSettings | None, models: int, steps: int, progress: bool):
    """One bar over every model's `steps` (quality windows and questions) and throughput runs, after a line
    saying what throughput runs and how to skip it."""
    from ..progress import progress_bar

    if progress and settings is not None:
        print(f"throughput of {models} model(s): {settings.describe()} (--no-throughput skips this)",
              file=sys.stderr, flush=True)
    return progress_bar(total=models * (steps + (settings.runs if settings else 0)), desc="evaluating",
                        unit="step", disable=not progress)


def _throughput_settings(throughput: ThroughputSettings | bool) -> ThroughputSettings | None:
    if isinstance(throughput, ThroughputSettings):
        return throughput.validate()
    if isinstance(throughput, bool):
        return ThroughputSettings() if throughput else None
    raise TypeError(f"throughput must be a bool or ThroughputSettings, got {type(throughput).__name__}")


def _check_context(config, window: int, settings: ThroughputSettings | None) -> None:
    """Every sequence fed to the models must fit the original's context (learned positions would fail)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return
    lengths = {"window": window}
    if settings is not None:
        lengths["prefill length"] = settings.seq_len
        lengths["decode prompt length + new tokens"] = settings.prompt_len + settings.new_tokens
    for what, length in lengths.items():
        if length > limit:
            raise ValueError(f"{what} {length} exceeds the original model's context of {limit} tokens")

