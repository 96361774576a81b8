"""The farm's jobs, where their files go, and what is already done (resumability).

Layout under the plan's output root, per model:

    <out>/<model>/scores.safetensors   what `prunenet.score` wrote (one per model)
    <out>/<model>/farm-scores.json     the key of the scoring that wrote it
    <out>/<model>/ratio-<r>/           one compressed checkpoint per ratio (`prunenet.compress`), and one
    <out>/<model>/max-kl-<x>/          per KL bound (the ratio it chose is in its records), each holding
                   prunenet.json       compress's provenance, and
                   farm-job.json       the job's key and result, written after compress succeeded
    <out>/<model>/farm-eval.json       the evaluation of the model's outputs (eval = true)

A job is done when its folder holds prunenet.json (of the same ratio or KL bound, and selector) and a
farm-job.json whose key equals the job's: the same model fingerprint, ratio or bound, and selection options
(those that can change the output: healing's only when it heals, refine's only with that repair).
Outputs and scores made from self-written probes of an earlier sampler (other text for the same options and
seed, as their probe info says) are not done either. Anything else is redone, and an existing folder is then
overwritten (compress writes atomically: the old output stays whole until the new one replaces it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write
from ..calibration.probes import from_current_sampler
from ..config import HealOptions, RefineOptions
from ..scores import stored_probe_info
from ..writer import PROVENANCE
from .plan import ModelSpec, Plan

SCORES = "scores.safetensors"
SCORES_RECORD = "farm-scores.json"
JOB_RECORD = "farm-job.json"
EVAL_RECORD = "farm-eval.json"


@dataclass(frozen=True)
class Job:
    model: ModelSpec
    target: dict  # what compress is asked for: {"ratio": r} or {"max_kl": x}
    out: Path
    key: dict
    state: str  # "done", or why it must run: "new", "changed", "incomplete"
    record: dict | None  # what farm-job.json holds when done

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def label(self) -> str:
        """"ratio 0.3" or "max_kl 0.5": the job's name within its model."""
        [(kind, value)] = self.target.items()
        return f"{kind} {value:g}"


def normalised(data: dict) -> dict:
    """`data` as it reads back from JSON (tuples become lists...), so that stored and fresh keys compare equal."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _unused(options: dict) -> set[str]:
    """The options that change nothing in an output: healing's when it does not heal, refine's with another
    repair."""
    unused = set()
    if not options.get("heal_tokens"):
        unused |= {spec.keyword for spec in HealOptions.specs()} - {"heal_tokens"}
    if options.get("repair") != "refine":
        unused |= {spec.keyword for spec in RefineOptions.specs()}
    return unused


def essential(key):
    """A key without the options that change nothing (in its own options, or in an evaluation's job keys).

    Keys are made this way, and stored keys are compared this way too, so a key written before an unused
    option changed its default, or before keys left such options out, still matches: the output is done.
    """
    if not isinstance(key, dict):
        return key
    key = dict(key)
    if isinstance(key.get("options"), dict):
        key["options"] = {k: v for k, v in key["options"].items() if k not in _unused(key["options"])}
    if isinstance(key.get("outputs"), list):
        key["outputs"] = [[out, essential(job)] for out, job in key["outputs"]]
    return key


def job_key(model: ModelSpec, target: dict, plan: Plan) -> dict:
    return essential(normalised({"model": model.fingerprint, **target, "options": plan.options}))


def scores_key(model: ModelSpec, plan: Plan) -> dict:
    return essential(normalised({"model": model.fingerprint, "options": plan.options}))


def output_folder(plan: Plan, model: ModelSpec, target: dict) -> Path:
    [(kind, value)] = target.items()
    return model.folder(plan.out) / f"{kind.replace('_', '-')}-{value:g}"


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
    """Every (model, ratio) and (model, KL bound) job of the plan, in plan order, with its state on disk."""
    jobs = []
    targets = [{"ratio": r} for r in plan.ratios] + [{"max_kl": x} for x in plan.max_kl]
    for model in plan.models:
        for target in targets:
            out = output_folder(plan, model, target)
            key = job_key(model, target, plan)
            state, record = _state(out, key, target, plan.options.get("selector"))
            jobs.append(Job(model, target, out, key, state, record))
    return jobs


def _state(out: Path, key: dict, target: dict, selector: str | None) -> tuple[str, dict | None]:
    if not out.exists():
        return "new", None
    provenance = read_record(out / PROVENANCE)
    record = read_record(out / JOB_RECORD)
    if provenance is None or record is None:
        return "incomplete", None
    if "max_kl" in target:
        made = (provenance.get("max_kl") or {}).get("max_kl") == target["max_kl"]
    else:
        made = provenance.get("ratio") == target["ratio"]
    made_as_asked = (made and provenance.get("selector") in (selector, None)
                     and from_current_sampler(provenance.get("probes")))
    if essential(record.get("key")) != key or not made_as_asked:
        return "changed", None
    return "done", record.get("result")


def scores_ready(plan: Plan, model: ModelSpec) -> bool:
    """The model's scores file exists and was written for the same fingerprint and options."""
    folder = model.folder(plan.out)
    record = read_record(folder / SCORES_RECORD)
    return ((folder / SCORES).is_file() and record is not None
            and essential(record.get("key")) == scores_key(model, plan)
            and from_current_sampler(stored_probe_info(folder / SCORES)))


def eval_key(plan: Plan, model: ModelSpec, jobs: list[Job]) -> dict:
    """An evaluation is redone when its options or any of the evaluated outputs' keys change."""
    return normalised({"model": model.fingerprint, "eval": plan.eval,
                       "outputs": [[str(job.out), job.key] for job in jobs]})
