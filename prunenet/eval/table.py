"""Markdown tables: readable on a terminal and pasteable into a README."""
from __future__ import annotations

from collections.abc import Mapping, Sequence


def markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str | None:
    """A number with `digits` significant figures (None stays None)."""
    return None if value is None else f"{value:.{digits}g}"


def eval_table(report: Mapping) -> str:
    """One row per model of an eval report: size, quality, throughput and task scores."""
    task_names = report.get("tasks") or []
    headers = ["model", "ratio", "selector", "params (M)", "FFN", "PPL", "KL", "top-1 agree",
               "prefill tok/s", "decode tok/s", *[f"{t} acc" for t in task_names]]
    rows = []
    for model in report["models"]:
        speed = model.get("throughput") or {}
        scores = model.get("tasks") or {}
        rows.append([
            model["name"], model.get("ratio"), model.get("selector"), f"{model['parameters'] / 1e6:.2f}",
            model.get("ffn_width"), fmt(model["perplexity"], 4), fmt(model["kl"]), fmt(model["agreement"]),
            fmt(speed.get("prefill_tokens_per_s")), fmt(speed.get("decode_tokens_per_s")),
            *[fmt(scores.get(t, {}).get("acc")) for t in task_names],
        ])
    return markdown(headers, rows)


def answers_table(report: Mapping, width: int = 40) -> str:
    """One row per question: whether each model answered it right, and its answer (shortened)."""
    models = [m for m in report["models"] if m.get("answers")]
    headers = ["question", *[f"{m['name']}" for m in models]]
    rows = []
    for i, question in enumerate(models[0]["answers"]):
        cells = [question["prompt"][:width]]
        for model in models:
            entry = model["answers"][i]
            answer = " ".join(entry["answer"].split())[:width]
            cells.append(f"{'right' if entry['right'] else 'WRONG'}: {answer}".replace("|", "/"))
        rows.append(cells)
    totals = ["right", *[f"{m['answers_right']} of {len(m['answers'])}" + (
        "" if m.get("answers_kept") is None else f" (keeps {m['answers_kept']:.0%})") for m in models]]
    follows = ["same greedy token as the original, on its answers",
               *["" if m.get("answers_agreement") is None else f"{m['answers_agreement']:.1%}" for m in models]]
    return markdown(headers, rows + [totals, follows])
