"""The driver: connects to Ray, submits the task graph, follows it to the end.

Per model: one scoring task; one slicing task per ratio that takes the scoring task's result (a path) as its
argument, so Ray starts it when the scores exist; with eval, one evaluation task once the model's slicing
tasks have ended. A task whose worker or node dies is retried by Ray (`max_retries`), on any node with room;
its result says which node ran it and after how many retries. An exception is not retried
(`retry_exceptions=False`): it fails the task, and through the dependency the model's other jobs, and
is reported with its one-line message. Ctrl-C cancels everything still queued or running (a cancelled
compress removes its temporary folder; outputs are renamed into place only when complete).

A killed attempt leaves its half-written temporary folder beside the output. The retry removes it when it
starts if the attempt ran on the same host and its process has ended, but a worker outlives its killed raylet
by about a second, and an attempt on another host is never this host's to judge. So when the graph has ended,
one task on every live host removes what dead processes of that host left in the model folders
(`Outcome.temporaries`: what was removed, and what is still there).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import temporaries
from ..progress import progress_bar
from . import tasks
from .jobs import EVAL_RECORD, SCORES, SCORES_RECORD, Job, essential, eval_key, read_record, scores_key, scores_ready
from .plan import ModelSpec, Plan

# The farm passes paths and small dicts between tasks, never tensors: a small object store is plenty, and
# Ray's default (30% of RAM, in /dev/shm) is not wanted on a small machine.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024
# A cancelled task stops at its next Python bytecode, which on a loaded machine can be one long tensor
# operation away; the wait ends as soon as its temporary folder is gone.
CANCEL_GRACE_S = 30.0


@dataclass
class Outcome:
    """What happened: per job (status, result, error), per model its scoring and evaluation."""
    jobs: dict[tuple[str, float], dict] = field(default_factory=dict)
    scores: dict[str, dict] = field(default_factory=dict)
    evals: dict[str, dict] = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    temporaries: dict = field(default_factory=dict)  # {"removed": [...], "left": [...]}: paths


def connect(address: str | None, cpus: int | None, gpus: int | None) -> bool:
    """Start a local Ray (or join `address`); True when this call did, so the farm shuts it down after."""
    import ray

    if ray.is_initialized():
        if address is not None or cpus is not None or gpus is not None:
            raise ValueError("Ray is already initialised in this process: address, cpus and gpus cannot apply")
        return False
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address is not None:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot connect to Ray at {address!r}: {exc}") from None
    else:
        # "local": a Ray of this farm's own, even where `ray start` left a cluster running on this machine
        # (a bare ray.init() would join that one, and refuse --cpus).
        ray.init(address="local", num_cpus=cpus, num_gpus=gpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 **options)
    return True


def gpus_per_task(plan: Plan, cluster_gpus: float) -> float:
    if plan.gpus_per_task is not None:
        return plan.gpus_per_task
    return 1.0 if cluster_gpus > 0 and str(plan.options.get("device", "auto")) != "cpu" else 0.0


def error_line(exc: BaseException) -> str:
    """The one line a user needs: the API's own message for errors in what was asked, else the type too."""
    import ray

    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None else exc
    lines = str(cause).strip().splitlines()
    message = lines[0] if lines else ""
    if isinstance(cause, (ValueError, TypeError)) and not isinstance(cause, ray.exceptions.RayError):
        return message
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


def retried(result: dict) -> str:
    """", retried N times" for a task's result that Ray retried (its worker or node died), else ""."""
    retries = result.get("retries")
    return f", retried {retries} time{'s' if retries > 1 else ''}" if retries else ""


class _Farm:
    """One run of the task graph; `Outcome` is filled as results arrive."""

    def __init__(self, plan: Plan, jobs: list[Job], progress: bool):
        import ray

        self.ray, self.plan, self.progress = ray, plan, progress
        resources = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
        self.outcome = Outcome(resources={**resources, "nodes": sum(1 for n in ray.nodes() if n["Alive"])})
        gpus = gpus_per_task(plan, self.outcome.resources.get("GPU", 0.0))
        threads = max(1, int(plan.cpus_per_task))
        self.resources = {"num_cpus": plan.cpus_per_task, "num_gpus": gpus}
        self.threads = threads
        remote = dict(max_retries=plan.retries, retry_exceptions=False, **self.resources)
        self.score_fn = ray.remote(**remote)(tasks.score_task)
        self.slice_fn = ray.remote(**remote)(tasks.slice_task)
        self.eval_fn = ray.remote(**remote)(tasks.eval_task)
        self.sweep_fn = ray.remote(num_cpus=0, max_retries=0)(tasks.sweep_task)
        self.jobs = jobs
        self.open = {m.name: [j for j in jobs if j.model == m and not j.done] for m in plan.models}
        self.pending: dict = {}
        self.bar = progress_bar(total=sum(len(v) for v in self.open.values()), unit="job", desc="farm",
                                disable=not progress)

    def say(self, line: str) -> None:
        if self.progress:
            self.bar.write(line)

    def submit(self) -> None:
        for model in self.plan.models:
            for job in self.jobs:
                if job.model == model and job.done:
                    self.outcome.jobs[(model.name, job.label)] = {"status": "skipped", "result": job.record}
            todo = self.open[model.name]
            if not todo:
                self.outcome.scores[model.name] = {"status": "not needed"}
                self._maybe_eval(model)
                continue
            folder = model.folder(self.plan.out)
            if scores_ready(self.plan, model):
                scored = read_record(folder / SCORES_RECORD)["result"]
                self.outcome.scores[model.name] = {"status": "skipped", "result": scored}
            else:
                scored = self.score_fn.remote(model.source, str(folder / SCORES), self.plan.asked,
                                              scores_key(model, self.plan), self.threads)
                self.pending[scored] = ("score", model, None)
            for job in todo:
                ref = self.slice_fn.remote(scored, model.source, job.target, str(job.out), self.plan.asked,
                                           job.key, self.threads)
                self.pending[ref] = ("slice", model, job)

    def follow(self) -> None:
        while self.pending:
            [ref], _ = self.ray.wait(list(self.pending), num_returns=1)
            kind, model, job = self.pending.pop(ref)
            try:
                value, error = self.ray.get(ref), None
            except self.ray.exceptions.RayError as exc:
                value, error = None, error_line(exc)
            getattr(self, f"_{kind}_ended")(model, job, value, error)

    def sweep(self) -> None:
        """Every live host removes the temporaries its dead processes left in the plan's model folders."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        folders = sorted(str(model.folder(self.plan.out)) for model in self.plan.models)
        hosts = {node["NodeManagerHostname"]: node["NodeID"] for node in self.ray.nodes() if node["Alive"]}
        refs = [self.sweep_fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
                .remote(folders) for node_id in hosts.values()]
        removed = []
        for ref in refs:
            try:
                removed += self.ray.get(ref)
            except self.ray.exceptions.RayError:  # the node died since: its leftovers are reported as left
                pass
        left = [str(path) for folder in folders for path in temporaries(Path(folder))]
        self.outcome.temporaries = {"removed": sorted(removed), "left": sorted(left)}
        if removed:
            self.say(f"removed {len(removed)} temporary output{'s' if len(removed) > 1 else ''} of killed attempts")
        if left:
            self.say(f"left {len(left)} temporary output{'s' if len(left) > 1 else ''} of processes that may be "
                     f"running, or of hosts no longer in the cluster: {', '.join(left)}")

    def cancel(self) -> None:
        refs = list(self.pending)
        for ref in refs:
            self.ray.cancel(ref)
        if not refs:
            return
        # Cancelled tasks get a moment to remove their temporary folders. Their refs can be ready while a
        # worker is still unwinding (a folder was seen left behind once), so the folders are waited for too.
        deadline = time.monotonic() + CANCEL_GRACE_S
        self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        folders = {model.folder(self.plan.out) for _, model, _ in self.pending.values()}
        while any(temporaries(folder) for folder in folders) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _score_ended(self, model: ModelSpec, job: None, value: dict | None, error: str | None) -> None:
        if error is None:
            self.outcome.scores[model.name] = {"status": "done", "result": value}
            self.say(f"scored  {model.name} ({value['task_s']:.1f} s{retried(value)})")
        else:
            self.outcome.scores[model.name] = {"status": "failed", "error": error}
            self.say(f"FAILED  {model.name} scoring: {error}")

    def _slice_ended(self, model: ModelSpec, job: Job, value: dict | None, error: str | None) -> None:
        self.bar.update()
        if error is None:
            self.outcome.jobs[(model.name, job.label)] = {"status": "done", "result": value}
            self.say(f"done    {model.name} {job.label}: FFN {value['ffn_width_before']} -> "
                     f"{value['ffn_width_after']}, parameters {value['parameters_before']:,} -> "
                     f"{value['parameters_after']:,} ({value['task_s']:.1f} s{retried(value)}) -> {value['out']}")
        else:
            self.outcome.jobs[(model.name, job.label)] = {"status": "failed", "error": error}
            self.say(f"FAILED  {model.name} {job.label}: {error}")
        self.open[model.name].remove(job)
        if not self.open[model.name]:
            self._maybe_eval(model)

    def _maybe_eval(self, model: ModelSpec) -> None:
        """Evaluate the model's outputs that exist, unless the same evaluation is on disk already."""
        if self.plan.eval is None:
            return
        landed = [j for j in self.jobs if j.model == model
                  and self.outcome.jobs.get((model.name, j.label), {}).get("status") in ("done", "skipped")]
        if not landed:
            self.outcome.evals[model.name] = {"status": "not run", "error": "no output to evaluate"}
            return
        key = eval_key(self.plan, model, landed)
        record_path = model.folder(self.plan.out) / EVAL_RECORD
        record = read_record(record_path)
        if record is not None and essential(record.get("key")) == key:
            self.outcome.evals[model.name] = {"status": "skipped", "result": record["result"]}
            return
        outputs = [str(j.out) for j in landed]
        ref = self.eval_fn.remote(model.source, outputs, self.plan.eval, key, str(record_path), self.threads)
        self.pending[ref] = ("eval", model, None)

    def _eval_ended(self, model: ModelSpec, job: None, value: dict | None, error: str | None) -> None:
        if error is None:
            self.outcome.evals[model.name] = {"status": "done", "result": value}
            self.say(f"evaluated {model.name}: original PPL {value['original_perplexity']:.4g} "
                     f"({value['task_s']:.1f} s{retried(value)})")
        else:
            self.outcome.evals[model.name] = {"status": "failed", "error": error}
            self.say(f"FAILED  {model.name} evaluation: {error}")


def run(plan: Plan, jobs: list[Job], *, address: str | None = None, cpus: int | None = None,
        gpus: int | None = None, progress: bool = True) -> Outcome:
    """Run the jobs that are not done on Ray; return what happened to every job."""
    import ray

    owned = connect(address, cpus, gpus)
    try:
        plan.out.mkdir(parents=True, exist_ok=True)
        farm = _Farm(plan, jobs, progress)
        try:
            farm.submit()
            farm.follow()
            farm.sweep()
        except KeyboardInterrupt:
            farm.cancel()
            raise
        finally:
            farm.bar.close()
        return farm.outcome
    finally:
        if owned:
            ray.shutdown()
