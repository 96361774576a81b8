"""Zero-shot tasks (PIQA, ARC, HellaSwag, ...) through lm-eval's Python API, on already loaded models.

Needs the optional extra `pip install "prunenet[eval]"`. Task names are checked against lm-eval's task
index (built-in tasks plus the YAML files under `include_path`) before any model runs. The datasets of
built-in tasks come from the Hugging Face hub (or its cache); a local task (a YAML with
`dataset_path: json` and `dataset_kwargs: {data_files: ...}`) runs offline.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

INSTALL = 'pip install "prunenet[eval]"'


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """Task names from "piqa,arc_easy" or a list; [] for None."""
    if tasks is None:
        return []
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    if not all(isinstance(t, str) for t in tasks):
        raise TypeError(f"tasks must be names (str), got {list(tasks)!r}")
    names = [t.strip() for t in tasks if t.strip()]
    if not names:
        raise ValueError(f"tasks {tasks!r} names no task")
    if len(set(names)) != len(names):
        raise ValueError(f"tasks {names!r} repeat a name")
    return names


def task_manager(names: list[str], include_path: str | os.PathLike | None = None):
    """lm-eval's TaskManager, after checking that it knows every name in `names`.

    When `include_path` alone defines every name, lm-eval's ~15,000 built-in task files are not indexed
    (that takes 10 s or more): local tasks then load in well under a second.
    """
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ValueError(f"tasks {names!r} need lm-eval: {INSTALL}") from None
    if include_path is not None:
        if not os.path.isdir(include_path):
            raise ValueError(f"task folder (include_path) {str(include_path)!r} does not exist")
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(name in local.all_tasks for name in names):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {unknown!r}; `lm-eval ls tasks` lists them")
    return manager


def run_tasks(
    model: torch.nn.Module,
    tokenizer,
    names: list[str],
    manager,
    limit: int | None = None,
    batch_size: int = 1,
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} for one model, e.g. {"piqa": {"acc": 0.61, "acc_stderr": 0.01, ...}}.

    lm-eval's metric keys carry a filter suffix ("acc,none"); the default filter's is dropped.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit, log_samples=False)
    results = {}
    for task, metrics in output["results"].items():
        results[task] = {
            key.removesuffix(",none"): float(value)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
    return results
