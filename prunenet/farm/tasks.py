"""What runs inside a Ray worker: scoring a model, slicing it at one ratio, evaluating its outputs, and at the
end, once per host, removing what killed attempts left.

Plain functions (the runner wraps them with `ray.remote`), so that they import without Ray. Each sets torch's
thread count first (`_prepare_worker`): Ray sets OMP_NUM_THREADS only when it starts a worker, and reuses
workers across tasks.
Arguments and results are paths and small dicts; weights never travel through the object store.
Each records its result beside its output only after the output is complete, with where it ran (`placement`:
the Ray node, and how many times Ray had retried the task after a worker or node died).
"""
from __future__ import annotations

import time
from pathlib import Path

from ..atomic import clean_stale
from .jobs import JOB_RECORD, SCORES_RECORD, write_record


def _prepare_worker(threads: int) -> None:
    """torch's thread count, and the checkout off sys.path (Ray puts the driver's working directory there)."""
    import torch

    from ..checkout import leave_checkout_off_path

    leave_checkout_off_path()
    torch.set_num_threads(max(1, int(threads)))


def placement() -> dict:
    """The Ray node running this attempt of the task (its id), and `retries`: the attempt's number, 0 for the
    first; Ray retries a task whose worker or node died (`max_retries`). Ray has no public call for the attempt
    number (`ray.util.state` needs the dashboard); where its core worker does not give one, None."""
    import ray

    try:
        from ray._private.worker import global_worker

        retries = int(global_worker.core_worker.get_current_task_attempt_number())
    except Exception:  # a private call: absent or renamed in another Ray version
        retries = None
    return {"node": ray.get_runtime_context().get_node_id(), "retries": retries}


def score_task(source: str, scores: str, options: dict, key: dict, threads: int) -> dict:
    """`prunenet.score` once per model; a stale scores file (other options, changed model) is replaced."""
    import prunenet

    start = time.perf_counter()
    _prepare_worker(threads)
    path = Path(scores)
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / SCORES_RECORD).unlink(missing_ok=True)
    report = prunenet.score(source, out=str(path), overwrite=True, **options, progress=False)
    result = {"scores": str(path), "timings_s": report.get("timings_s", {}),
              "task_s": round(time.perf_counter() - start, 4), **placement()}
    write_record(path.parent / SCORES_RECORD, key, result)
    return result


def slice_task(scored: dict, source: str, target: dict, out: str, options: dict, key: dict, threads: int) -> dict:
    """`prunenet.compress` at one ratio or KL bound (`target`: {"ratio": r} or {"max_kl": x}) from the model's
    scores; `scored` is the scoring task's result."""
    import prunenet

    start = time.perf_counter()
    _prepare_worker(threads)
    folder = Path(out)
    folder.parent.mkdir(parents=True, exist_ok=True)
    report = prunenet.compress(source, out=str(folder), **target, scores=scored["scores"],
                               overwrite=folder.exists(), **options, progress=False)
    output = report["outputs"][0]
    result = {key_: output[key_] for key_ in
              ("out", "ratio", "ffn_width_before", "ffn_width_after", "parameters_before", "parameters_after")}
    result["max_kl"] = report["max_kl"]
    result["timings_s"] = report.get("timings_s", {})
    result["task_s"] = round(time.perf_counter() - start, 4)
    result.update(placement())
    write_record(folder / JOB_RECORD, key, result)
    return result


def eval_task(source: str, outputs: list[str], options: dict, key: dict, record: str, threads: int) -> dict:
    """`prunenet.eval.evaluate` of the original against its compressed outputs: PPL, KL, top-1 agreement."""
    from ..eval import evaluate

    start = time.perf_counter()
    _prepare_worker(threads)
    report = evaluate(source, outputs, **options, progress=False)
    original, *compressed = report["models"]
    result = {
        "original_perplexity": original["perplexity"],
        "outputs": {out: {"perplexity": m["perplexity"], "kl": m["kl"], "agreement": m["agreement"]}
                    for out, m in zip(outputs, compressed)},
        "tokens": report["corpus"]["tokens"],
        "task_s": round(time.perf_counter() - start, 4),
        **placement(),
    }
    write_record(Path(record), key, result)
    return result


def sweep_task(folders: list[str]) -> list[str]:
    """The temporary folders and files that dead processes of this host left in `folders`, removed; their paths.

    Only the host that ran a process can tell that it is dead, so the driver runs this once on every host."""
    return [str(Path(folder) / name) for folder in folders for name in clean_stale(Path(folder))]
