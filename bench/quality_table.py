"""Quality table of the embedded model: PruneNet against random rows and largest-norm rows.

    python bench/quality_table.py                         # -> bench/results/quality_table.{md,json}, *.png
    python bench/quality_table.py --tokens 4096 --threads 2 --out /tmp/quality

For each seed s: `prunenet.compress(model, ratios=RATIOS, seed=s)` (one fit at --fit-ratio with the
default options, then one model per ratio) and random rows with seed s; largest-norm rows once (they
do not depend on a seed). Every compressed model of a seed is evaluated in one `prunenet.eval.evaluate`
call against the original on the first --tokens tokens of the default corpus: perplexity, mean
KL(original || compressed), top-1 agreement, parameters. Throughput depends only on the shapes, so it is
measured once per FFN width (original, PruneNet seed 0 at each ratio) plus PruneNet seed 0 at ratio 0.3
with the kept width rounded to a multiple of --align. Compressed models live in a temporary folder that
is deleted at the end; only the small result files are kept. Pictures need matplotlib.
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
from prunenet.embedded import DEFAULT_MODEL
from prunenet.eval import ThroughputSettings, evaluate
from prunenet.eval.models import load_model
from prunenet.eval.spectra import scored_spectra
from prunenet.eval.table import fmt, markdown
from prunenet.eval.throughput import machine, measure

RESULTS = Path(__file__).resolve().parent / "results"
ALIGN_RATIO = 0.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model folder or alias (default {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default bench/results)")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of the corpus evaluated (default 2048)")
    parser.add_argument("--window", type=int, default=256, help="tokens per window (default 256)")
    parser.add_argument("--ratios", default="0.1,0.2,0.3,0.4", help="compression ratios (default 0.1,0.2,0.3,0.4)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of prunenet and random (default 0,1,2)")
    parser.add_argument("--fit-ratio", type=float, default=0.3, help="ratio the policy is trained at (default 0.3)")
    parser.add_argument("--align", type=int, default=64, help="alignment compared at ratio 0.3 (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per throughput measurement (default 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--work", help="folder for the temporary compressed models (default: the system's)")
    args = parser.parse_args(argv)
    args.ratios = [float(r) for r in args.ratios.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if ALIGN_RATIO not in args.ratios:
        parser.error(f"--ratios must include {ALIGN_RATIO} (the ratio of the alignment comparison)")
    if not args.out.parent.is_dir():
        parser.error(f"parent folder of --out {str(args.out)!r} does not exist")
    return args


def compress_seed(args, work: Path, seed: int) -> tuple[dict[str, dict], dict | None]:
    """Compress with every selector for one seed: {folder: provenance}, and the fit report of prunenet."""
    made = {}
    common = dict(ratios=args.ratios, seed=seed, progress=False)
    policy = work / f"policy-{seed}.safetensors"
    report = prunenet.compress(args.model, work / f"prunenet-{seed}", fit_ratio=args.fit_ratio,
                               policy_out=policy, **common)
    for output in report["outputs"]:
        made[output["out"]] = {"selector": "prunenet", "seed": seed, "ratio": output["ratio"], "align": None}
    if seed == args.seeds[0]:
        aligned = work / f"prunenet-{seed}-align{args.align}"
        prunenet.compress(args.model, aligned, ALIGN_RATIO, policy=policy, align=args.align, seed=seed,
                          progress=False)
        made[str(aligned)] = {"selector": "prunenet", "seed": seed, "ratio": ALIGN_RATIO, "align": args.align}
    selectors = ["random"] + (["magnitude"] if seed == args.seeds[0] else [])
    for selector in selectors:
        out = prunenet.compress(args.model, work / f"{selector}-{seed}", selector=selector, **common)
        for output in out["outputs"]:
            made[output["out"]] = {"selector": selector, "seed": seed if selector == "random" else None,
                                   "ratio": output["ratio"], "align": None}
    return made, report


def quality_rows(report: dict, made: dict[str, dict]) -> list[dict]:
    keys = ("perplexity", "kl", "agreement", "parameters", "ffn_width")
    return [{**made[m["name"]], **{k: m[k] for k in keys}} for m in report["models"][1:]]


def throughput_of(paths: dict[str, str], settings: ThroughputSettings, device: torch.device) -> dict[str, dict]:
    """{label: tokens/s} for each model folder, loaded one at a time."""
    speeds = {}
    for label, path in paths.items():
        loaded = load_model(path, device)
        speeds[label] = {"ffn_width": loaded.info["ffn_width"], **measure(loaded.model, settings)}
        del loaded
    return speeds


def summarise(rows: list[dict], original: dict, speeds: dict[str, dict]) -> list[dict]:
    """One row per (selector, ratio): seeds aggregated (median, min, max), throughput of that width."""
    by_width = {s["ffn_width"]: s for label, s in speeds.items() if "align" not in label}
    summary = [{"selector": "original", "ratio": 0.0, "seeds": 1, "ffn_width": original["ffn_width"],
                "parameters": original["parameters"], "perplexity_median": original["perplexity"],
                "perplexity_min": original["perplexity"], "perplexity_max": original["perplexity"],
                "kl_median": None, "agreement_median": None, **_speed(by_width.get(original["ffn_width"]))}]
    for selector in ("prunenet", "random", "magnitude"):
        for ratio in sorted({r["ratio"] for r in rows}):
            mine = [r for r in rows if r["selector"] == selector and r["ratio"] == ratio and r["align"] is None]
            if not mine:
                continue
            ppl = [r["perplexity"] for r in mine]
            summary.append({
                "selector": selector, "ratio": ratio, "seeds": len(mine), "ffn_width": mine[0]["ffn_width"],
                "parameters": mine[0]["parameters"], "perplexity_median": statistics.median(ppl),
                "perplexity_min": min(ppl), "perplexity_max": max(ppl),
                "kl_median": statistics.median(r["kl"] for r in mine),
                "agreement_median": statistics.median(r["agreement"] for r in mine),
                **_speed(by_width.get(mine[0]["ffn_width"])),
            })
    return summary


def _speed(speed: dict | None) -> dict:
    speed = speed or {}
    return {"prefill_tokens_per_s": speed.get("prefill_tokens_per_s"), "decode_tokens_per_s": speed.get("decode_tokens_per_s")}


def summary_markdown(summary: list[dict]) -> str:
    headers = ["selector", "ratio", "seeds", "FFN", "params (M)", "PPL median [min, max]", "KL median",
               "top-1 agree median", "prefill tok/s", "decode tok/s"]
    rows = []
    for s in summary:
        spread = "" if s["seeds"] == 1 else f" [{fmt(s['perplexity_min'], 4)}, {fmt(s['perplexity_max'], 4)}]"
        rows.append([s["selector"], s["ratio"], s["seeds"], s["ffn_width"], f"{s['parameters'] / 1e6:.1f}",
                     f"{fmt(s['perplexity_median'], 4)}{spread}", fmt(s["kl_median"]), fmt(s["agreement_median"]),
                     fmt(s["prefill_tokens_per_s"]), fmt(s["decode_tokens_per_s"])])
    return markdown(headers, rows)


def align_markdown(align: dict) -> str:
    rows = [[a["label"], a["ffn_width"], fmt(a["prefill_tokens_per_s"]), fmt(a["decode_tokens_per_s"]),
             fmt(a["perplexity"], 4)] for a in align.values()]
    return markdown(["model (seed 0, ratio 0.3)", "FFN", "prefill tok/s", "decode tok/s", "PPL"], rows)


def draw(out: Path, rows, original, fits, spectra) -> list[str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no pictures (pip install \"prunenet[plot]\")")
        return []
    from prunenet.eval import plots

    base = spectra.pop("original")
    return [
        str(plots.plot_quality([r for r in rows if r["align"] is None], out / "quality_vs_ratio.png", original)),
        str(plots.plot_rewards(fits, out / "rewards.png")),
        str(plots.plot_spectra(base, spectra, out / f"spectra_ratio{ALIGN_RATIO}.png")),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    settings = ThroughputSettings(repeats=args.repeats)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="prunenet-quality-", dir=args.work))
    rows, fits, original = [], {}, None
    spectra = {"original": scored_spectra(args.model)}
    try:
        for seed in args.seeds:
            made, fit_report = compress_seed(args, work, seed)
            fits[f"seed {seed}"] = fit_report["fit"]["reward_per_episode"]
            report = evaluate(args.model, list(made), tokens=args.tokens, window=args.window, throughput=False,
                              device=str(device))
            original = report["models"][0]
            corpus = report["corpus"]
            rows += quality_rows(report, made)
            print(f"seed {seed}: {len(made)} models evaluated, {time.perf_counter() - start:.0f} s so far", flush=True)
            if seed == args.seeds[0]:
                for path, info in made.items():
                    if info["ratio"] == ALIGN_RATIO and info["align"] is None:
                        spectra[info["selector"]] = scored_spectra(path)
                widths = {"original": args.model}
                widths.update({f"prunenet r={i['ratio']}" + (f" align {i['align']}" if i["align"] else ""): p
                               for p, i in made.items() if i["selector"] == "prunenet"})
                speeds = throughput_of(widths, settings, device)
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarise(rows, original, speeds)
    align = {}
    for label in (f"prunenet r={ALIGN_RATIO}", f"prunenet r={ALIGN_RATIO} align {args.align}"):
        aligned = "align" in label
        ppl = next(r["perplexity"] for r in rows if r["selector"] == "prunenet" and r["seed"] == args.seeds[0]
                   and r["ratio"] == ALIGN_RATIO and (r["align"] is not None) == aligned)
        align[label] = {"label": label, "perplexity": ppl, **speeds[label]}
    elapsed = time.perf_counter() - start
    result = {
        "command": "python bench/quality_table.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"model": args.model, "tokens": args.tokens, "window": args.window, "ratios": args.ratios,
                     "seeds": args.seeds, "fit_ratio": args.fit_ratio, "align": args.align,
                     "throughput": settings.as_dict()},
        "corpus": corpus,
        "machine": machine(device),
        "original": original,
        "rows": rows,
        "summary": summary,
        "throughput": speeds,
        "align": align,
        "fits": fits,
        "elapsed_s": round(elapsed, 1),
    }
    args.out.mkdir(exist_ok=True)
    result["pictures"] = draw(args.out, rows, original, fits, spectra)
    (args.out / "quality_table.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = report_markdown(result)
    (args.out / "quality_table.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def report_markdown(result: dict) -> str:
    s, m, c = result["settings"], result["machine"], result["corpus"]
    t = s["throughput"]
    return f"""# Quality table: {s['model']}

`{result['command']}` on {m['device_name']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads,
torch {m['torch']}); the whole run took {result['elapsed_s'] / 60:.1f} min.

Quality on the first {c['tokens']} tokens of {c['source']} ({c['windows']} windows of {c['window']}
tokens, {c['predicted_tokens']} predictions); PPL = exp(mean NLL), KL = mean KL(original || compressed)
in nats, top-1 agree = fraction of positions where the compressed model's top token is the original's.
PruneNet: one fit per seed at ratio {s['fit_ratio']} (default options), sampled rows, seeds {s['seeds']};
random rows: seeds {s['seeds']}; magnitude (largest gate-row norm): deterministic. No fine-tuning.
Throughput (measured once per FFN width, on PruneNet seed {s['seeds'][0]}): prefill of {t['batch']} x
{t['seq_len']} tokens; greedy decode of {t['new_tokens']} tokens with a KV cache after a {t['prompt_len']}-token
prompt; median of {t['repeats']} runs after a warm-up.

{summary_markdown(result['summary'])}

Kept width rounded to a multiple of {s['align']} (`--align {s['align']}`) at ratio {ALIGN_RATIO}:

{align_markdown(result['align'])}
"""


if __name__ == "__main__":
    sys.exit(main())
