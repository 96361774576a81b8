"""The farm's report: one row per (model, ratio) job, a table for the terminal, JSON, CSV and a plot.

A row: model, ratio, status (done, skipped: an earlier run made it, failed, or in a dry run: to run),
output, FFN width and parameters before/after, seconds (the model's scoring, shared by its ratios, then
compress's phases; task_s: the slicing task's wall time), node and retries (the Ray node that ran the slicing
task and how many times Ray retried it after its worker or node died; for a skipped job, those of the run that
made it), and with `eval` perplexity, KL(original || compressed) and top-1 agreement. `resources`: the
cluster's CPUs, GPUs, memory and live nodes when the farm started. `temporaries`: the half-written folders of
killed attempts removed at the end, and any still there (of a live process, or of a host that left).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..atomic import atomic_write
from ..eval.table import fmt, markdown
from .jobs import Job
from .plan import Plan
from .runner import Outcome, retried

QUALITY = ("perplexity", "kl", "agreement")
_SIZES = ("ffn_width_before", "ffn_width_after", "parameters_before", "parameters_after")


def dry_run_summary(plan: Plan, jobs: list[Job]) -> dict:
    rows = []
    for job in jobs:
        row = _row(job, "skipped" if job.done else "to run", job.record if job.done else None)
        row["why"] = None if job.done else job.state
        rows.append(row)
    return _summary(plan, rows, {}, dry_run=True)


def summary(plan: Plan, jobs: list[Job], outcome: Outcome, wall_s: float) -> dict:
    rows = []
    for job in jobs:
        done = outcome.jobs.get((job.model.name, job.label), {"status": "failed", "error": "not run"})
        row = _row(job, done["status"], done.get("result"), done.get("error"))
        score = outcome.scores.get(job.model.name, {}).get("result")
        if score is not None and row["seconds"] is not None:
            row["seconds"] = {"score": score.get("task_s"), **row["seconds"]}
        evaluated = outcome.evals.get(job.model.name, {}).get("result")
        if evaluated is not None and str(job.out) in evaluated["outputs"]:
            row.update(evaluated["outputs"][str(job.out)])
        rows.append(row)
    models = {m.name: {"source": m.source, "fingerprint": m.fingerprint,
                       "scoring": outcome.scores.get(m.name), "eval": outcome.evals.get(m.name)}
              for m in plan.models}
    report = _summary(plan, rows, models, dry_run=False)
    report["resources"] = outcome.resources
    report["temporaries"] = outcome.temporaries
    report["wall_s"] = round(wall_s, 3)
    return report


def _row(job: Job, status: str, result: dict | None, error: str | None = None) -> dict:
    result = result or {}
    return {
        "model": job.model.name, "ratio": job.target.get("ratio", result.get("ratio")),
        "max_kl": job.target.get("max_kl"), "status": status, "output": str(job.out),
        **{key: result.get(key) for key in _SIZES},
        "seconds": dict(result["timings_s"]) if "timings_s" in result else None,
        "task_s": result.get("task_s"), "node": result.get("node"), "retries": result.get("retries"),
        "error": error, **{key: None for key in QUALITY},
    }


def _summary(plan: Plan, rows: list[dict], models: dict, dry_run: bool) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"command": "farm", "dry_run": dry_run, "plan": plan.as_dict(), "counts": counts,
            "models": models, "jobs": rows}


def table(report: dict) -> str:
    """Markdown table, one row per job; quality columns only when some job was evaluated."""
    evaluated = any(row.get("perplexity") is not None for row in report["jobs"])
    headers = ["model", "ratio", "status", "FFN", "params (M)", "score s", "slice s"]
    headers += ["PPL", "KL", "top-1 agree"] if evaluated else []
    headers += ["output / error"]
    rows = []
    for row in report["jobs"]:
        seconds = row.get("seconds") or {}
        slice_s = sum(v for k, v in seconds.items() if k != "score") if seconds else None
        cells = [
            row["model"], _ratio_cell(row),
            row["status"] + (f" ({row['why']})" if row.get("why") else "")
            + (retried(row) if row["status"] == "done" else ""),  # a skipped job's retries were an earlier run's
            _arrow(row["ffn_width_before"], row["ffn_width_after"], "{}"),
            _arrow(row["parameters_before"], row["parameters_after"], "{:.3f}", 1e6),
            fmt(seconds.get("score")), fmt(slice_s),
        ]
        if evaluated:
            cells += [fmt(row.get("perplexity"), 4), fmt(row.get("kl")), fmt(row.get("agreement"))]
        cells.append(row["error"] if row.get("error") else row["output"])
        rows.append(cells)
    lines = [markdown(headers, rows)]
    for name, model in report.get("models", {}).items():
        evaluation = model.get("eval") or {}
        if evaluation.get("result"):
            result = evaluation["result"]
            lines.append(f"{name}: original PPL {result['original_perplexity']:.4g} on {result['tokens']} tokens")
        elif evaluation.get("error"):
            lines.append(f"{name}: evaluation {evaluation['status']}: {evaluation['error']}")
    return "\n".join(lines)


def _ratio_cell(row: dict) -> str:
    """The ratio; for a KL-bound job, the bound and the ratio it chose (once known)."""
    if row.get("max_kl") is None:
        return f"{row['ratio']:g}"
    chosen = f" -> {row['ratio']:g}" if row.get("ratio") is not None else ""
    return f"max_kl {row['max_kl']:g}{chosen}"


def _arrow(before, after, pattern: str, unit: float | None = None) -> str | None:
    if before is None or after is None:
        return None
    if unit is not None:
        before, after = before / unit, after / unit
    return f"{pattern.format(before)} -> {pattern.format(after)}"


def csv_text(report: dict) -> str:
    """One line per job; seconds as one column per phase (score, then compress's phases)."""
    phases: list[str] = []
    for row in report["jobs"]:
        phases += [p for p in (row.get("seconds") or {}) if p not in phases]
    columns = ["model", "ratio", "max_kl", "status", "output", *_SIZES, *[f"{p}_s" for p in phases], "task_s", "node",
               "retries", *QUALITY, "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in report["jobs"]:
        seconds = row.get("seconds") or {}
        writer.writerow({**{c: row.get(c) for c in columns if c in row},
                         **{f"{p}_s": seconds.get(p) for p in phases}})
    return buffer.getvalue()


def check_report_path(path: str | os.PathLike | None) -> Path | None:
    """Before any work: JSON path usable; the CSV goes beside it (same name, .csv)."""
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"summary path {str(path)!r} must end in .json (the CSV is written beside it)")
    if path.is_dir() or not path.parent.is_dir():
        raise ValueError(f"summary path {str(path)!r} is a folder or its folder does not exist")
    return path


def save(report: dict, path: Path) -> Path:
    """Write the JSON to `path` and the CSV beside it; return the CSV's path."""
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(path, True, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    csv_path = path.with_suffix(".csv")
    table_text = csv_text(report)
    atomic_write(csv_path, True, lambda tmp: tmp.write_text(table_text, encoding="utf-8"))
    return csv_path


def check_plot_path(path: str | os.PathLike | None, plan: Plan) -> Path | None:
    if path is None:
        return None
    if plan.eval is None:
        raise ValueError("a quality plot (--plot) needs eval = true in the plan")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError('a quality plot (--plot) needs matplotlib: pip install "prunenet[plot]"') from None
    path = Path(path)
    if path.suffix.lower() != ".png" or not path.parent.is_dir():
        raise ValueError(f"plot path {str(path)!r} must be a .png file in an existing folder")
    return path


def plot(report: dict, path: Path) -> Path | None:
    """Perplexity, KL and top-1 agreement against ratio, one line per model (`eval.plots.plot_quality`)."""
    from ..eval.plots import plot_quality

    rows = [{"ratio": row["ratio"], "selector": row["model"], **{k: row[k] for k in QUALITY}}
            for row in report["jobs"] if row.get("perplexity") is not None]
    return plot_quality(rows, path) if rows else None
