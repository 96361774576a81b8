"""Quality against the probe budget: how many self-written probe tokens the default selection needs.

    python bench/probe_budget.py                      # -> bench/results/probe_budget.{json,md}
    python bench/probe_budget.py --budgets 1024,4096 --ratios 0.3 --threads 2

For each budget, `prunenet.compress(model, ratios=..., probe_tokens=budget)` with the default selector and
repair (the probes are generated once per budget, cold cache: the cache folder is a temporary one), then
one `prunenet.eval.evaluate` over all outputs on the first --tokens tokens of the default corpus. The
seconds of the probe generation and of the statistics pass are reported beside the quality.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import prunenet
from prunenet.eval import evaluate
from prunenet.eval.table import fmt, markdown
from prunenet.eval.throughput import machine
from prunenet.model import resolve_model
from prunenet.model.embedded import DEFAULT_MODEL

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--budgets", default="1024,2048,4096,8192", help="probe token budgets")
    parser.add_argument("--ratios", default="0.2,0.3", help="compression ratios")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of the corpus evaluated")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    model = str(resolve_model(args.model))  # the embedded model's cache, before the cache root moves
    work = Path(tempfile.mkdtemp(prefix="prunenet-budget-"))
    os.environ["PRUNENET_CACHE"] = str(work / "cache")  # cold probe cache for every budget
    start = time.perf_counter()
    made, timings = {}, {}
    try:
        for budget in budgets:
            report = prunenet.compress(model, work / str(budget), ratios=ratios, probe_tokens=budget, progress=False)
            timings[budget] = report["timings_s"]
            for output in report["outputs"]:
                made[output["out"]] = (budget, output["ratio"])
            print(f"budget {budget}: {report['timings_s']}", flush=True)
        evaluation = evaluate(model, list(made), tokens=args.tokens, throughput=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [{"budget": made[m["name"]][0], "ratio": made[m["name"]][1], "perplexity": m["perplexity"],
             "kl": m["kl"], "agreement": m["agreement"],
             "probes_s": timings[made[m["name"]][0]].get("probes"),
             "statistics_s": timings[made[m["name"]][0]].get("statistics")} for m in evaluation["models"][1:]]
    result = {
        "command": "python bench/probe_budget.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(torch.device("cpu")), "original": evaluation["models"][0], "rows": rows,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(exist_ok=True)
    (args.out / "probe_budget.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown(["probe tokens", "ratio", "PPL", "KL", "top-1 agree", "probes s (both ratios)",
                      "statistics s (both ratios)"],
                     [[r["budget"], r["ratio"], fmt(r["perplexity"], 4), fmt(r["kl"]), fmt(r["agreement"]),
                       fmt(r["probes_s"]), fmt(r["statistics_s"])] for r in rows])
    text = (f"# Probe budget: {args.model}\n\n`{result['command']}`; original PPL "
            f"{fmt(result['original']['perplexity'], 4)} on {args.tokens} tokens of pydoc_data.topics.\n\n{table}\n")
    (args.out / "probe_budget.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
