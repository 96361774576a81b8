"""`prunenet.farm(plan)`: many models x ratios on Ray, one scoring per model, resumable, with a summary."""
from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping

from .jobs import plan_jobs
from .plan import Plan, load_plan
from .summary import check_plot_path, check_report_path, dry_run_summary, plot, save, summary


def farm(
    plan: str | os.PathLike | Mapping | Plan,
    *,
    address: str | None = None,
    cpus: int | None = None,
    gpus: int | None = None,
    dry_run: bool = False,
    json_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run a farm plan (a TOML file or a dict; see `prunenet.farm.plan`) and return its summary.

    Without `address` (and outside an existing Ray session) a local Ray is started with `cpus`/`gpus` (default:
    the machine's) and shut down at the end; `address` ("auto", "ray://host:port") joins a running cluster,
    whose nodes must see the model folders and the output root at the same paths. Jobs already done (see
    `prunenet.farm.jobs`) are skipped; `dry_run` only reports what would run. `json_path` gets the summary as
    JSON and a CSV beside it; `plot_path` (.png, extra [plot], needs eval) the quality against ratio per model.
    The plan, the report paths and the Ray options are all checked before any work starts.
    """
    plan = load_plan(plan)
    for name, value in (("cpus", cpus), ("gpus", gpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{name}={value!r} must be a non-negative int")
    if address is not None and (not isinstance(address, str) or not address):
        raise ValueError(f"address {address!r} must be 'auto' or a Ray address such as ray://host:10001")
    if address is not None and (cpus is not None or gpus is not None):
        raise ValueError("cpus (--cpus) and gpus (--gpus) size a local Ray; a cluster at --address has its own")
    json_path = check_report_path(json_path)
    plot_path = check_plot_path(plot_path, plan)
    if not dry_run and importlib.util.find_spec("ray") is None:
        raise ValueError('the farm runs on Ray: pip install "prunenet[farm]"')
    jobs = plan_jobs(plan)
    if dry_run:
        report = dry_run_summary(plan, jobs)
    else:
        from . import runner

        start = time.perf_counter()
        outcome = runner.run(plan, jobs, address=address, cpus=cpus, gpus=gpus, progress=progress)
        report = summary(plan, jobs, outcome, time.perf_counter() - start)
        if plot_path is not None:
            written = plot(report, plot_path)
            report["plot"] = str(written) if written else None
    if json_path is not None:
        report["csv"] = str(json_path.with_suffix(".csv"))
        save(report, json_path)
    return report
