"""Quality table of the embedded model: every selector, with and without repair, against the original.

    python bench/quality_table.py                         # -> bench/results/quality_table.{md,json}, .png
    python bench/quality_table.py --tokens 2048 --threads 2 --seeds 0 --out /tmp/quality

Methods (`METHODS`): the default (activation-aware rows + least-squares repair, sequential statistics on
8192 probe tokens the model writes itself), the previous default (one-shot statistics, 4096 probes), rows
ranked by the Fisher information of a mask on each row (`fisher`, with the default's repair), the
paper's PruneNet policy (fit at --fit-ratio, sampled rows), random rows, and, on the first seed only, the
variants that choose the defaults: one-shot statistics, no repair, OBS rows, the fits against the original
(reconstruct, reconstruct-layer), twice the probes, the joint refinement of each FFN (refine), chat-start
probes and probes at temperature 0.7, repair of random and of PruneNet rows, largest gate-row norm. Each
method compresses every ratio in one `prunenet.compress` call; a seed changes the probes (self-written text),
the policy and random rows.
All models of a seed are evaluated in one `prunenet.eval.evaluate` call against the original on the first
--tokens tokens of the default corpus (pydoc_data.topics): perplexity, mean KL(original || compressed)
and top-1 agreement. Compressed models live in a temporary folder deleted at the end.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import prunenet
from prunenet.eval import evaluate
from prunenet.eval.table import fmt, markdown
from prunenet.eval.throughput import machine
from prunenet.model.embedded import DEFAULT_MODEL

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_LABEL = "activation + lsq (default)"
# label -> (compress options, every seed (True) or the first seed only (False))
METHODS: dict[str, tuple[dict, bool]] = {
    DEFAULT_LABEL: (dict(selector="activation", repair="lsq"), True),
    "previous default: oneshot, 4096 probes": (dict(selector="activation", repair="lsq", statistics="oneshot",
                                                    probe_tokens=4096), True),
    "fisher + lsq": (dict(selector="fisher", repair="lsq"), True),
    "prunenet (paper)": (dict(selector="prunenet", repair="none"), True),
    "random": (dict(selector="random", repair="none"), True),
    "oneshot": (dict(selector="activation", repair="lsq", statistics="oneshot"), False),
    "activation": (dict(selector="activation", repair="none"), False),
    "obs + lsq": (dict(selector="obs", repair="lsq"), False),
    "reconstruct": (dict(selector="activation", repair="lsq", statistics="reconstruct"), False),
    "reconstruct-layer": (dict(selector="activation", repair="lsq", statistics="reconstruct-layer"), False),
    "16384 probes": (dict(selector="activation", repair="lsq", probe_tokens=16384), False),
    "refine (gate/up/down trained per layer)": (dict(selector="activation", repair="refine"), False),
    "chat-start probes": (dict(selector="activation", repair="lsq", probe_start="chat"), False),
    "probes at temperature 0.7": (dict(selector="activation", repair="lsq", probe_temperature=0.7), False),
    "random + lsq": (dict(selector="random", repair="lsq"), False),
    "prunenet + lsq": (dict(selector="prunenet", repair="lsq"), False),
    "magnitude": (dict(selector="magnitude", repair="none"), False),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model folder or alias (default {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default bench/results)")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of the corpus evaluated (default 2048)")
    parser.add_argument("--window", type=int, default=256, help="tokens per window (default 256)")
    parser.add_argument("--ratios", default="0.1,0.2,0.3,0.4", help="compression ratios (default 0.1,0.2,0.3,0.4)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    parser.add_argument("--methods", help=f"semicolon-separated subset of: {'; '.join(METHODS)} (default all)")
    parser.add_argument("--fit-ratio", type=float, default=0.3, help="ratio the policy is trained at (default 0.3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--work", help="folder for the temporary compressed models (default: the system's)")
    args = parser.parse_args(argv)
    args.ratios = [float(r) for r in args.ratios.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = list(METHODS) if not args.methods else [m.strip() for m in args.methods.split(";")]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if not args.out.parent.is_dir():
        parser.error(f"parent folder of --out {str(args.out)!r} does not exist")
    return args


def compress_seed(args, work: Path, seed: int) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every method's models for one seed: ({folder: row labels}, {method: timings of its compress})."""
    made, timings = {}, {}
    for label in args.methods:
        options, every_seed = METHODS[label]
        if not every_seed and seed != args.seeds[0]:
            continue
        folder = work / f"{len(timings)}-{seed}"
        extra = dict(fit_ratio=args.fit_ratio) if options["selector"] == "prunenet" else {}
        report = prunenet.compress(args.model, folder, ratios=args.ratios, seed=seed, progress=False,
                                   **options, **extra)
        timings[label] = report["timings_s"]
        for output in report["outputs"]:
            made[output["out"]] = {"method": label, "seed": seed, "ratio": output["ratio"]}
        print(f"  {label}, seed {seed}: {sum(report['timings_s'].values()):.1f} s {report['timings_s']}", flush=True)
    return made, timings


def summarise(rows: list[dict], original: dict) -> list[dict]:
    """One row per (method, ratio): seeds aggregated (median, min, max)."""
    summary = [{"method": "original", "ratio": 0.0, "seeds": 1, "ffn_width": original["ffn_width"],
                "parameters": original["parameters"], "perplexity_median": original["perplexity"],
                "perplexity_min": original["perplexity"], "perplexity_max": original["perplexity"],
                "kl_median": None, "agreement_median": None}]
    for method in METHODS:
        for ratio in sorted({r["ratio"] for r in rows}):
            mine = [r for r in rows if r["method"] == method and r["ratio"] == ratio]
            if not mine:
                continue
            ppl = [r["perplexity"] for r in mine]
            summary.append({
                "method": method, "ratio": ratio, "seeds": len(mine), "ffn_width": mine[0]["ffn_width"],
                "parameters": mine[0]["parameters"], "perplexity_median": statistics.median(ppl),
                "perplexity_min": min(ppl), "perplexity_max": max(ppl),
                "kl_median": statistics.median(r["kl"] for r in mine),
                "agreement_median": statistics.median(r["agreement"] for r in mine),
            })
    return summary


def summary_markdown(summary: list[dict]) -> str:
    headers = ["method", "ratio", "seeds", "FFN", "params (M)", "PPL median [min, max]", "KL median",
               "top-1 agree median"]
    rows = []
    for s in summary:
        spread = "" if s["seeds"] == 1 else f" [{fmt(s['perplexity_min'], 4)}, {fmt(s['perplexity_max'], 4)}]"
        rows.append([s["method"], s["ratio"], s["seeds"], s["ffn_width"], f"{s['parameters'] / 1e6:.1f}",
                     f"{fmt(s['perplexity_median'], 4)}{spread}", fmt(s["kl_median"]), fmt(s["agreement_median"])])
    return markdown(headers, rows)


def draw(out: Path, rows: list[dict], original: dict) -> list[str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no pictures (pip install \"prunenet[plot]\")")
        return []
    from prunenet.eval import plots

    seeded = [{**r, "selector": r["method"]} for r in rows if METHODS[r["method"]][1]]
    return [str(plots.plot_quality(seeded, out / "quality_vs_ratio.png", original))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.work is not None:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="prunenet-quality-", dir=args.work))
    rows, timings, original, corpus = [], {}, None, None
    keys = ("perplexity", "kl", "agreement", "parameters", "ffn_width")
    try:
        for seed in args.seeds:
            made, timings[seed] = compress_seed(args, work, seed)
            report = evaluate(args.model, list(made), tokens=args.tokens, window=args.window, throughput=False,
                              device=str(device))
            original, corpus = report["models"][0], report["corpus"]
            rows += [{**made[m["name"]], **{k: m[k] for k in keys}} for m in report["models"][1:]]
            print(f"seed {seed}: {len(made)} models evaluated, {time.perf_counter() - start:.0f} s so far", flush=True)
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": "python bench/quality_table.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"model": args.model, "tokens": args.tokens, "window": args.window, "ratios": args.ratios,
                     "seeds": args.seeds, "fit_ratio": args.fit_ratio,
                     "methods": {m: METHODS[m][0] for m in args.methods}},
        "corpus": corpus,
        "machine": machine(device),
        "original": original,
        "rows": rows,
        "summary": summarise(rows, original),
        "compress_timings_s": timings,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(exist_ok=True)
    result["pictures"] = draw(args.out, rows, original)
    (args.out / "quality_table.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = report_markdown(result)
    (args.out / "quality_table.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def report_markdown(result: dict) -> str:
    s, m, c = result["settings"], result["machine"], result["corpus"]
    return f"""# Quality table: {s['model']}

`{result['command']}` on {m['device_name']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads,
torch {m['torch']}); the whole run took {result['elapsed_s'] / 60:.1f} min.

Quality on the first {c['tokens']} tokens of {c['source']} ({c['windows']} windows of {c['window']}
tokens, {c['predicted_tokens']} predictions); PPL = exp(mean NLL), KL = mean KL(original || compressed)
in nats, top-1 agree = fraction of positions where the compressed model's top token is the original's.
Seeds {s['seeds']} for the methods run on every seed (a seed changes the self-written probes, the policy
and the random rows); the others on seed {s['seeds'][0]} only. Probes: the model's own text (defaults of
`prunenet compress`), no outside data. PruneNet: one fit per seed at ratio {s['fit_ratio']}. No fine-tuning.

{summary_markdown(result['summary'])}

Seconds per phase of each method's `prunenet.compress` call (every ratio in one call; probes read from the
cache when an earlier method of the seed wrote the same ones), seed {s['seeds'][0]}:

{timings_markdown(result['compress_timings_s'][s['seeds'][0]])}
"""


def timings_markdown(timings: dict[str, dict[str, float]]) -> str:
    phases: list[str] = []
    for seconds in timings.values():
        phases += [phase for phase in seconds if phase not in phases and phase != "resolve"]
    rows = [[method, *(fmt(seconds.get(phase), 3) for phase in phases), fmt(sum(seconds.values()), 3)]
            for method, seconds in timings.items()]
    return markdown(["method", *phases, "total"], rows)


if __name__ == "__main__":
    sys.exit(main())
