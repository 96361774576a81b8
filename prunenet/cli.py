"""The `prunenet` command line: fit, compress, info, eval and plot. Mirrors the Python API in `pipeline`.

Errors in what the user asked for (bad ratio, missing shard, wrong policy shape, existing output...)
print one line and exit with status 2; nothing is written.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys

from . import defaults as D
from .checkpoint import OUTPUT_DTYPES, OutputExists
from .embedded import CACHE_ENV, DEFAULT_MODEL, EMBEDDED
from .eval.cli import EVAL_COMMANDS, add_eval_parser, run_eval
from .farm.cli import FARM_COMMANDS, add_farm_parser, run_farm

EPILOG = f"""\
MODEL is a local Hugging Face folder (safetensors weights) or the alias of an embedded model
({', '.join(sorted(EMBEDDED))}); its first use dequantises it once (30-45 s on 2 CPU cores) into the cache
folder ${CACHE_ENV}, else $XDG_CACHE_HOME/prunenet, else ~/.cache/prunenet.
"""


def _ratio_help(what: str) -> str:
    return f"{what}: fraction of FFN rows removed, in [0, 1); each layer keeps int((1 - ratio) * n) rows"


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("policy training (DESIGN section 1)")
    group.add_argument("--episodes", type=int, default=20, help="REINFORCE episodes (default 20)")
    group.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    group.add_argument("--gamma", type=float, default=0.99, help="per-layer reward discount (default 0.99)")
    group.add_argument("--reg-weight", type=float, default=0.0,
                       help="weight of the reference's KLD regulariser on row scores (default 0: off)")
    group.add_argument("--engine", choices=("exact", "topq"), default="exact",
                       help="reward engine: exact full-spectrum KS (default), or topq: KS of the top 256 "
                            "singular values by randomized SVD, a different statistic meant for GPUs and wide "
                            "models; slower than exact on CPU (README, Reward engines)")


def _add_selection_options(parser: argparse.ArgumentParser, slicing: bool) -> None:
    group = parser.add_argument_group("row selection (README, Quality)")
    group.add_argument("--selector", choices=D.SELECTORS, default=D.DEFAULT_SELECTOR,
                       help=f"activation: rows ranked by ||a_i|| ||down[:, i]|| on probe text; obs: greedy "
                            f"structured OBS on the probes' activations; prunenet: the paper's policy (weights "
                            f"only); random / magnitude: baselines (default {D.DEFAULT_SELECTOR})")
    group.add_argument("--probes", default="self",
                       help="probe text: self (default: the model writes its own, no data needed) or a "
                            "UTF-8 text file / JSONL file with a \"text\" field per line")
    group.add_argument("--probe-tokens", type=int, default=D.DEFAULT_PROBE_TOKENS,
                       help=f"probe token budget (default {D.DEFAULT_PROBE_TOKENS})")
    group.add_argument("--probe-length", type=int,
                       help=f"tokens per probe sequence (default {D.DEFAULT_PROBE_LENGTH}, or the model's "
                            "context if shorter)")
    if slicing:
        group.add_argument("--repair", choices=D.REPAIRS, default=D.DEFAULT_REPAIR,
                           help="lsq: refit the kept columns of every output matrix (down_proj, fc2) by ridge "
                                f"least squares on the probes, for any selector; none (default {D.DEFAULT_REPAIR})")
        group.add_argument("--statistics", choices=D.STATISTICS, default=D.DEFAULT_STATISTICS,
                           help="oneshot: every layer's statistics from the original model (one pass serves "
                                "every ratio); sequential: each layer sees the compressed layers before it "
                                f"(one pass per ratio) (default {D.DEFAULT_STATISTICS})")
        group.add_argument("--scores", help="a scores file written by `prunenet score`: rank no rows again")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the report as JSON to PATH")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing but errors: no progress bars, no summary (--json keeps the report)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunenet",
        description="Calibration-free compression of LLM FFNs by policy learning (PruneNet, ICLR 2025).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = commands.add_parser("fit", help="train a policy once; reuse it at any ratio", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="Train a PruneNet policy on MODEL's FFN weights (no data needed).")
    fit.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model folder or alias (default {DEFAULT_MODEL})")
    fit.add_argument("--ratio", type=float, default=0.3, help=_ratio_help("ratio trained at (default 0.3)"))
    fit.add_argument("--out", help="save the policy to this .safetensors file")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_fit_options(fit)
    _add_common(fit)

    comp = commands.add_parser(
        "compress", help="slice FFN rows and write a standard checkpoint", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress MODEL into a checkpoint that AutoModelForCausalLM.from_pretrained loads. "
                    "Without --policy, a policy is trained first (once, even for several ratios).")
    comp.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model folder or alias (default {DEFAULT_MODEL})")
    comp.add_argument("--out", required=True,
                      help="output folder; with --ratios, a folder holding ratio-R/ for each ratio")
    which = comp.add_mutually_exclusive_group(required=True)
    which.add_argument("--ratio", type=float, help=_ratio_help("compression ratio"))
    which.add_argument("--ratios", help="several ratios, comma-separated (e.g. 0.1,0.2,0.3), from one fit")
    comp.add_argument("--policy", help="use this saved policy instead of training one")
    comp.add_argument("--fit-ratio", type=float, help="ratio the policy is trained at (default: the first ratio)")
    comp.add_argument("--save-policy", dest="policy_out", help="also save the trained policy to this file")
    _add_selection_options(comp, slicing=True)
    comp.add_argument("--selection", choices=("sample", "topk"), default="sample",
                      help="prunenet rows: sampled from the policy (the paper, default) or its top-k scores")
    comp.add_argument("--align", type=int, help="round the kept FFN width to the nearest multiple (e.g. 64)")
    comp.add_argument("--dtype", choices=tuple(OUTPUT_DTYPES), default="auto",
                      help="dtype of the output's floating-point tensors (default auto: each as stored in "
                           "MODEL); it changes only what is written, never which rows are kept")
    comp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_fit_options(comp)
    _add_common(comp)

    sco = commands.add_parser(
        "score", help="rank MODEL's rows once into a file; compress --scores slices it at any ratio",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank every FFN row of MODEL once (probes + statistics, or a policy fit for the prunenet "
                    "selector) and save the ranking; `compress --scores FILE` then slices any ratio from it.")
    sco.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model folder or alias (default {DEFAULT_MODEL})")
    sco.add_argument("--out", required=True, help="the scores file to write (.safetensors)")
    sco.add_argument("--fit-ratio", type=float, help="prunenet selector: ratio the policy is trained at (default 0.3)")
    sco.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_selection_options(sco, slicing=False)
    _add_fit_options(sco)
    _add_common(sco)

    inf = commands.add_parser("info", help="describe a model or a saved policy",
                              description="Print what a model folder/alias or a policy file holds, as JSON.")
    inf.add_argument("target", nargs="?", default=DEFAULT_MODEL, help="model folder, alias, or policy .safetensors")
    add_eval_parser(commands)
    add_farm_parser(commands)
    return parser


def _print_fit(fit: dict | None) -> None:
    if not fit:
        return
    rewards = fit["reward_per_episode"]
    print(f"fit: {fit['episodes']} episodes at ratio {fit['trained_ratio']}, engine {fit['engine']}; "
          f"total reward first {rewards[0]:.1f}, best {max(rewards):.1f} (episode {fit['best_episode']}), "
          f"mean KS best {min(fit['mean_ks_per_episode']):.4f}")


def _print_probes(probes: dict | None) -> None:
    if probes:
        origin = "cached" if probes.get("cached") else f"{probes['seconds']:.1f} s"
        print(f"probes: {probes['sequences']} x {probes['length']} tokens from {probes['source']} ({origin}); "
              f"distinct-token share {probes['distinct_share_mean']:.2f} (min {probes['distinct_share_min']:.2f})")


def _print_timings(report: dict) -> None:
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in report["timings_s"].items())
    print(f"time: {phases}; peak RSS {report['peak_rss_mb']:.0f} MiB")


def run(args: argparse.Namespace) -> dict:
    if args.command in EVAL_COMMANDS:
        return run_eval(args)
    if args.command in FARM_COMMANDS:
        return run_farm(args)
    from . import pipeline

    progress = not getattr(args, "quiet", False)
    if args.command == "info":
        report = pipeline.info(args.target)
        print(json.dumps(report, indent=2))
        return report
    common = dict(seed=args.seed, device=args.device, json_path=args.json_path, progress=progress,
                  episodes=args.episodes, lr=args.lr, gamma=args.gamma, reg_weight=args.reg_weight,
                  engine=args.engine, overwrite=args.overwrite)
    selection = dict(selector=args.selector, probes=args.probes, probe_tokens=args.probe_tokens,
                     probe_length=args.probe_length) if args.command in ("score", "compress") else {}
    if args.command == "fit":
        report = pipeline.fit(args.model, args.ratio, out=args.out, **common).report
        _print_fit(report["fit"])
        if args.out:
            print(f"policy saved to {args.out}")
    elif args.command == "score":
        report = pipeline.score(args.model, args.out, fit_ratio=args.fit_ratio, **selection, **common)
        _print_fit(report.get("fit"))
        _print_probes(report.get("probes"))
        print(f"scores ({args.selector}) saved to {args.out}")
    else:
        report = pipeline.compress(
            args.model, args.out, args.ratio, ratios=args.ratios, policy=args.policy, fit_ratio=args.fit_ratio,
            selection=args.selection, align=args.align, dtype=args.dtype, repair=args.repair,
            statistics=args.statistics, scores=args.scores, **selection,
            policy_out=args.policy_out,
            **common,
        )
        _print_fit(report["fit"])
        _print_probes(report.get("probes"))
        for result in report["outputs"]:
            print(f"ratio {result['ratio']}: FFN {result['ffn_width_before']} -> {result['ffn_width_after']}, "
                  f"parameters {result['parameters_before']:,} -> {result['parameters_after']:,}; "
                  f"written to {result['out']}")
    _print_timings(report)
    return report


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def _silenced(quiet: bool):
    """--quiet: what a run prints (summaries, every library's progress bars, warnings and log lines) goes
    nowhere; `main` prints errors after the run has ended."""
    if not quiet:
        yield
        return
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(_Discard()), contextlib.redirect_stderr(_Discard()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _silenced(getattr(args, "quiet", False)):
            run(args)
    except OutputExists as exc:
        print(f"prunenet: error: output {str(exc.path)!r} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"prunenet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunenet: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    return 0
