"""The `prunenet` command line: fit, compress, info, eval and plot. Mirrors the Python API in `pipeline`.

Errors in what the user asked for (bad ratio, missing shard, wrong policy shape, existing output...)
print one line and exit with status 2; nothing is written.
"""
from __future__ import annotations

import argparse
import json
import sys

from .embedded import CACHE_ENV, DEFAULT_MODEL, EMBEDDED
from .eval.cli import EVAL_COMMANDS, add_eval_parser, run_eval

EPILOG = f"""\
MODEL is a local Hugging Face folder (safetensors weights) or the alias of an embedded model
({', '.join(sorted(EMBEDDED))}); the embedded model is dequantised once into a cache folder
(${CACHE_ENV}, default ~/.cache/prunenet).
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
                       help="reward engine: exact full-spectrum KS (default) or topq randomized SVD (faster, "
                            "a different statistic)")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the report as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


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
    comp.add_argument("--selector", choices=("prunenet", "random", "magnitude"), default="prunenet",
                      help="prunenet (default), or a baseline: random rows, or rows of largest L2 norm")
    comp.add_argument("--selection", choices=("sample", "topk"), default="sample",
                      help="prunenet rows: sampled from the policy (the paper, default) or its top-k scores")
    comp.add_argument("--align", type=int, help="round the kept FFN width to the nearest multiple (e.g. 64)")
    comp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_fit_options(comp)
    _add_common(comp)

    inf = commands.add_parser("info", help="describe a model or a saved policy",
                              description="Print what a model folder/alias or a policy file holds, as JSON.")
    inf.add_argument("target", nargs="?", default=DEFAULT_MODEL, help="model folder, alias, or policy .safetensors")
    add_eval_parser(commands)
    return parser


def _print_fit(fit: dict | None) -> None:
    if not fit:
        return
    rewards = fit["reward_per_episode"]
    print(f"fit: {fit['episodes']} episodes at ratio {fit['trained_ratio']}, engine {fit['engine']}; "
          f"total reward first {rewards[0]:.1f}, best {max(rewards):.1f} (episode {fit['best_episode']}), "
          f"mean KS best {min(fit['mean_ks_per_episode']):.4f}")


def _print_timings(report: dict) -> None:
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in report["timings_s"].items())
    print(f"time: {phases}; peak RSS {report['peak_rss_mb']:.0f} MiB")


def run(args: argparse.Namespace) -> dict:
    if args.command in EVAL_COMMANDS:
        return run_eval(args)
    from . import pipeline

    progress = not getattr(args, "quiet", False)
    if args.command == "info":
        report = pipeline.info(args.target)
        print(json.dumps(report, indent=2))
        return report
    common = dict(seed=args.seed, device=args.device, json_path=args.json_path, progress=progress,
                  episodes=args.episodes, lr=args.lr, gamma=args.gamma, reg_weight=args.reg_weight,
                  engine=args.engine, overwrite=args.overwrite)
    if args.command == "fit":
        report = pipeline.fit(args.model, args.ratio, out=args.out, **common).report
        _print_fit(report["fit"])
        if args.out:
            print(f"policy saved to {args.out}")
    else:
        report = pipeline.compress(
            args.model, args.out, args.ratio, ratios=args.ratios, policy=args.policy, fit_ratio=args.fit_ratio,
            selector=args.selector, selection=args.selection, align=args.align, policy_out=args.policy_out,
            **common,
        )
        _print_fit(report["fit"])
        for result in report["outputs"]:
            print(f"ratio {result['ratio']}: FFN {result['ffn_width_before']} -> {result['ffn_width_after']}, "
                  f"parameters {result['parameters_before']:,} -> {result['parameters_after']:,}; "
                  f"written to {result['out']}")
    _print_timings(report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, TypeError) as exc:
        print(f"prunenet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunenet: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    return 0
