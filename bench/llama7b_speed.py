"""What the compression buys at LLaMA-2-7B shapes on this machine: prefill and decode tokens/s and weight memory of
the 7B-shaped checkpoint and its compressed outputs (default: the r = 0.3 output of bench/llama7b_shaped.py), one
after the other in one run.

    python bench/llama7b_shaped.py --scratch /tmp/llama7b      # first: writes the checkpoint and compresses it
    python bench/llama7b_speed.py --scratch /tmp/llama7b
    python bench/llama7b_speed.py --scratch /tmp/llama7b --outputs out-0.3 out-0.3-align64   # more outputs, same run

Each model is loaded whole in bfloat16 (float32 would not fit beside the page cache in 24 GB), timed by
`prunenet.eval.throughput` (prefill of 1 x --prefill tokens; --decode greedy tokens after a 32-token prompt;
median of --repeats runs after a warm-up), and freed before the next. Random weights: the speed of a matrix
product does not depend on its values. Results go to bench/results/llama7b_speed-cpu.json and .md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import torch

from prunenet.eval.throughput import ThroughputSettings, machine, measure

RESULTS = Path(__file__).with_name("results")


def timed(folder: Path, settings: ThroughputSettings) -> dict:
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    with torch.no_grad():  # into the process's own memory: weights left mapped from the files are read from the
        for parameter in model.parameters():  # page cache, or the disk once three models outgrow it, as they run
            parameter.data = parameter.data.clone()
    loaded = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    result = {"folder": str(folder), "ffn_width": model.config.intermediate_size,
              "parameters": sum(p.numel() for p in model.parameters()), "weights_gib": round(weights / 2**30, 2),
              "load_s": round(loaded, 1), **{k: round(v, 3) for k, v in measure(model, settings).items()}}
    del model
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scratch", type=Path, required=True, help="the folder bench/llama7b_shaped.py wrote")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prefill", type=int, default=128, help="prefill tokens (default 128)")
    parser.add_argument("--decode", type=int, default=8, help="greedy decode tokens (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the warm-up (default 2)")
    parser.add_argument("--outputs", nargs="+", default=["out-0.3"],
                        help="compressed folders inside --scratch, timed after the original (default out-0.3)")
    args = parser.parse_args()
    folders = [args.scratch / "llama7b-shaped", *(args.scratch / name for name in args.outputs)]
    missing = [str(f) for f in folders if not (f / "config.json").is_file()]
    if missing:
        raise SystemExit(f"no model in {', '.join(missing)}: run bench/llama7b_shaped.py --scratch {args.scratch}")
    torch.set_num_threads(args.threads)
    settings = ThroughputSettings(seq_len=args.prefill, new_tokens=args.decode, repeats=args.repeats).validate()
    load_before = os.getloadavg()
    models = [timed(folder, settings) for folder in folders]
    result = {"machine": machine(torch.device("cpu")), "settings": settings.describe(), "dtype": "bfloat16",
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "models": models}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llama7b_speed-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    original = models[0]
    rows = "\n".join(
        f"| {Path(m['folder']).name} | {m['ffn_width']} | {m['parameters'] / 1e9:.2f}B | {m['weights_gib']} GiB | "
        f"{m['prefill_tokens_per_s']:.1f} ({m['prefill_tokens_per_s'] / original['prefill_tokens_per_s']:.2f}x) | "
        f"{m['decode_tokens_per_s']:.2f} ({m['decode_tokens_per_s'] / original['decode_tokens_per_s']:.2f}x) |"
        for m in models)
    (RESULTS / "llama7b_speed-cpu.md").write_text(
        f"LLaMA-2-7B-shaped model and its compressed outputs, bfloat16, {result['machine']['device_name']}, "
        f"{args.threads} threads, load average before {load_before[0]:.2f}; {settings.describe()}.\n\n"
        "| model | FFN | parameters | weights | prefill tok/s | decode tok/s |\n|---|---|---|---|---|---|\n"
        f"{rows}\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
