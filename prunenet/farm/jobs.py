"""The farm's jobs, where their files go, and what is already done (resumability).

Layout under the plan's output root, per model:

    <out>/<model>/scores.safetensors   what `prunenet.score` wrote (one per model)
    <out>/<model>/farm-scores.json     the key of the scoring that wrote it
    <out>/<model>/ratio-<r>/           one compressed checkpoint per ratio (`prunenet.compress`), holding
                   prunenet.json       compress's provenance, and
                   farm-job.json       the job's key and result, written after compress succeeded
    <out>/<model>/farm-eval.json       the evaluation of the model's outputs (eval = true)

A job is done when its folder holds prunenet.json (of the same ratio and selector) and a farm-job.json whose
key equals the job's: the same model fingerprint, ratio and selection options. Anything else is redone, and
an existing folder is then overwritten (compress writes atomically: the old output stays whole until the new
one replaces it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write
from ..writer import PROVENANCE
from .plan import ModelSpec, Plan

SCORES = "scores.safetensors"
SCORES_RECORD = "farm-scores.json"
JOB_RECORD = "farm-job.json"
EVAL_RECORD = "farm-eval.json"


@dataclass(frozen=True)
class Job:
    model: ModelSpec
    ratio: float
    out: Path
    key: dict
    state: str  # "done", or why it must run: "new", "changed", "incomplete"
    record: dict | None  # what farm-job.json holds when done

    @property
    def done(self) -> bool:
        return self.state == "done"


def normalised(data: dict) -> dict:
    """`data` as it reads back from JSON (tuples become lists...), so that stored and fresh keys compare equal."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def job_key(model: ModelSpec, ratio: float, plan: Plan) -> dict:
    return normalised({"model": model.fingerprint, "ratio": ratio, "options": plan.options})


def scores_key(model: ModelSpec, plan: Plan) -> dict:
    return normalised({"model": model.fingerprint, "options": plan.options})


def output_folder(plan: Plan, model: ModelSpec, ratio: float) -> Path:
    return model.folder(plan.out) / f"ratio-{ratio:g}"


def read_record(path: Path) -> dict | None:
    """A farm record (JSON object), or None when missing or unreadable (then the work is redone)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_record(path: Path, key: dict, result: dict) -> None:
    text = json.dumps({"key": key, "result": result}, indent=2) + "\n"
    atomic_write(path, True, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def plan_jobs(plan: Plan) -> list[Job]:
    """Every (model, ratio) job of the plan, in plan order, with its state on disk."""
    jobs = []
    for model in plan.models:
        for ratio in plan.ratios:
            out = output_folder(plan, model, ratio)
            key = job_key(model, ratio, plan)
            state, record = _state(out, key, ratio, plan.options.get("selector"))
            jobs.append(Job(model, ratio, out, key, state, record))
    return jobs


def _state(out: Path, key: dict, ratio: float, selector: str | None) -> tuple[str, dict | None]:
    if not out.exists():
        return "new", None
    provenance = read_record(out / PROVENANCE)
    record = read_record(out / JOB_RECORD)
    if provenance is None or record is None:
        return "incomplete", None
    made_as_asked = provenance.get("ratio") == ratio and provenance.get("selector") in (selector, None)
    if record.get("key") != key or not made_as_asked:
        return "changed", None
    return "done", record.get("result")


def scores_ready(plan: Plan, model: ModelSpec) -> bool:
    """The model's scores file exists and was written for the same fingerprint and options."""
    folder = model.folder(plan.out)
    record = read_record(folder / SCORES_RECORD)
    return (folder / SCORES).is_file() and record is not None and record.get("key") == scores_key(model, plan)


def eval_key(plan: Plan, model: ModelSpec, jobs: list[Job]) -> dict:
    """An evaluation is redone when its options or any of the evaluated outputs' keys change."""
    return normalised({"model": model.fingerprint, "eval": plan.eval,
                       "outputs": [[str(job.out), job.key] for job in jobs]})
