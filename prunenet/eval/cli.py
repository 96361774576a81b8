"""The `prunenet eval` and `prunenet plot` commands; `prunenet.cli` registers them with `add_eval_parser`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .answers import CODE_TIMEOUT_S, PROMPTS
from .corpus import DEFAULT_CORPUS, DEFAULT_TOKENS, DEFAULT_WINDOW, check_count
from .throughput import ThroughputSettings

EVAL_COMMANDS = ("eval", "plot")
_DEFAULT_SPEED = ThroughputSettings()

EVAL_EPILOG = f"""\
Quality: the first --tokens tokens of the text (default {DEFAULT_TOKENS} of CPython's {DEFAULT_CORPUS}
corpus), tokenized by ORIGINAL's tokenizer, in non-overlapping windows of --window tokens; each window is
evaluated on its own. PPL = exp(mean next-token NLL); KL = mean KL(original || compressed) of next-token
distributions, in nats; top-1 agree = fraction of positions where both models predict the same token.
Throughput: prefill tokens/s of one forward pass over a (--prefill-batch, --prefill-len) block; decode
tokens/s of --decode-tokens greedy steps with a KV cache after a --decode-prompt token prompt; median of
--repeats runs after a warm-up, on this machine (its name and thread count are in the JSON).
Models are loaded in float32 with AutoModelForCausalLM.from_pretrained, on CUDA if available.
"""

PLOT_EPILOG = """\
spectra.png: per layer, the CDF of the singular values of the scored FFN matrix (the spectra whose KS
distance is PruneNet's reward), original vs each compressed model, with the KS distances in the titles.
rewards.png: total reward per episode of each fit report (the JSON of `prunenet fit/compress --json`).
quality.png: perplexity, KL and top-1 agreement against ratio from a quality-table JSON
(bench/quality_table.py) or an eval report (`prunenet eval --json`) of models compressed by prunenet.
"""


def add_eval_parser(commands) -> None:
    """Register `eval` and `plot` on the sub-command set of the `prunenet` parser."""
    formatter = argparse.RawDescriptionHelpFormatter
    ev = commands.add_parser(
        "eval", help="perplexity, KL, agreement, size and speed of compressed models vs the original",
        description="Compare COMPRESSED models with ORIGINAL (folders or the embedded model's alias).",
        epilog=EVAL_EPILOG, formatter_class=formatter)
    ev.add_argument("original", help="the uncompressed model (its tokenizer is used for all)")
    ev.add_argument("compressed", nargs="*", help="compressed models to compare with it")
    ev.add_argument("--text", metavar="FILE", help=f"UTF-8 text file to evaluate on (default: {DEFAULT_CORPUS})")
    ev.add_argument("--tokens", type=int, default=DEFAULT_TOKENS,
                    help=f"tokens of the text evaluated (default {DEFAULT_TOKENS})")
    ev.add_argument("--window", type=int, default=DEFAULT_WINDOW, help=f"tokens per window (default {DEFAULT_WINDOW})")
    speed = ev.add_argument_group("throughput")
    speed.add_argument("--no-throughput", action="store_true",
                       help="skip the speed measurements (with the defaults, most of the run time on a CPU)")
    speed.add_argument("--prefill-batch", type=int, default=_DEFAULT_SPEED.batch,
                       help=f"prefill batch size (default {_DEFAULT_SPEED.batch})")
    speed.add_argument("--prefill-len", type=int, default=_DEFAULT_SPEED.seq_len,
                       help=f"prefill sequence length (default {_DEFAULT_SPEED.seq_len})")
    speed.add_argument("--decode-prompt", type=int, default=_DEFAULT_SPEED.prompt_len,
                       help=f"prompt tokens before decoding (default {_DEFAULT_SPEED.prompt_len})")
    speed.add_argument("--decode-tokens", type=int, default=_DEFAULT_SPEED.new_tokens,
                       help=f"greedy tokens decoded and timed (default {_DEFAULT_SPEED.new_tokens})")
    speed.add_argument("--repeats", type=int, default=_DEFAULT_SPEED.repeats,
                       help=f"timed runs per measurement, median reported (default {_DEFAULT_SPEED.repeats})")
    speed.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    tasks = ev.add_argument_group("lm-eval tasks (needs pip install \"prunenet[eval]\")")
    tasks.add_argument("--tasks", help="comma-separated lm-eval tasks, e.g. piqa,arc_easy,hellaswag,winogrande")
    tasks.add_argument("--task-limit", type=int, help="at most this many examples per task (for quick checks)")
    tasks.add_argument("--task-include", metavar="DIR", help="folder of extra task YAML files")
    ev.add_argument("--answers", action="store_true",
                    help=f"also ask every model {len(PROMPTS)} short questions (facts, sums, small code tasks, "
                         "summaries) through its chat template, greedy, checked by rule; code answers are run in a "
                         f"separate Python process with a {CODE_TIMEOUT_S:g} s limit. Prints them side by side")
    ev.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    ev.add_argument("--json", dest="json_path", metavar="PATH", help="write the report as JSON to PATH")
    ev.add_argument("--quiet", action="store_true",
                    help="print nothing but errors: no progress bars, no table (--json keeps the report)")

    plot = commands.add_parser(
        "plot", help="PNG pictures: spectra CDFs, reward per episode, quality vs ratio (needs matplotlib)",
        description="Draw PNG pictures into --out (needs pip install \"prunenet[plot]\"). Give at least one "
                    "of --spectra, --fit-report, --quality.",
        epilog=PLOT_EPILOG, formatter_class=formatter)
    plot.add_argument("--out", required=True, metavar="DIR",
                      help="folder for the PNG files (made if missing, with its parents)")
    plot.add_argument("--spectra", nargs="+", metavar="MODEL",
                      help="ORIGINAL then one or more COMPRESSED models -> spectra.png")
    plot.add_argument("--fit-report", nargs="+", metavar="JSON", help="fit/compress reports -> rewards.png")
    plot.add_argument("--quality", metavar="JSON", help="quality-table JSON or eval report -> quality.png")


def run_eval(args: argparse.Namespace) -> dict:
    """Run `prunenet eval` or `prunenet plot` from parsed arguments; print a summary; return the report."""
    if args.command == "plot":
        return _run_plot(args)
    import torch

    from .evaluation import evaluate
    from .table import answers_table, eval_table

    if args.threads is not None:
        torch.set_num_threads(check_count("threads", args.threads, 1))
    settings = None if args.no_throughput else ThroughputSettings(
        args.prefill_batch, args.prefill_len, args.decode_prompt, args.decode_tokens, args.repeats)
    report = evaluate(
        args.original, args.compressed, text=args.text, tokens=args.tokens, window=args.window,
        throughput=settings or False, tasks=args.tasks, task_limit=args.task_limit,
        task_include_path=args.task_include, answers=args.answers, device=args.device, json_path=args.json_path,
        progress=not args.quiet,
    )
    corpus = report["corpus"]
    print(f"corpus: {corpus['source']}, {corpus['tokens']} tokens in {corpus['windows']} windows of "
          f"{corpus['window']}; {report['machine']['device_name']}, {report['machine']['torch_threads']} threads")
    if settings:
        print(f"throughput: {settings.describe()}")
    print(eval_table(report))
    if args.answers:
        print(answers_table(report))
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report["timings_s"].items())
    print(f"time: {phases}; peak RSS {report['peak_rss_mb']:.0f} MiB")
    return report


def _run_plot(args: argparse.Namespace) -> dict:
    from . import plots
    from .spectra import scored_spectra

    if not (args.spectra or args.fit_report or args.quality):
        raise ValueError("plot needs at least one of --spectra, --fit-report, --quality")
    if args.spectra is not None and len(args.spectra) < 2:
        raise ValueError(f"--spectra {args.spectra!r} needs ORIGINAL and at least one COMPRESSED model")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r} is not a folder")
    reports = {path: _read_json(path) for path in [*(args.fit_report or []), *([args.quality] if args.quality else [])]}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot make --out {args.out!r}: {exc}") from None
    written = []
    if args.spectra:
        original, *compressed = args.spectra
        spectra = {Path(name).name or name: scored_spectra(name) for name in compressed}
        written.append(plots.plot_spectra(scored_spectra(original), spectra, out / "spectra.png"))
    if args.fit_report:
        series = {Path(path).stem: plots.rewards_of(reports[path]) for path in args.fit_report}
        written.append(plots.plot_rewards(series, out / "rewards.png"))
    if args.quality:
        rows, original = plots.quality_rows(reports[args.quality])
        written.append(plots.plot_quality(rows, out / "quality.png", original))
    for path in written:
        print(f"wrote {path}")
    return {"command": "plot", "written": [str(p) for p in written]}


def _read_json(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"report {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"report {path!r} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"report {path!r} is not a JSON object")
    return data
