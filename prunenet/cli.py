"""The `prunenet` command line: compress, score, fit, info, eval, plot and farm. Mirrors the Python API in `api`;
every option's flag, type, choices and help come from the configs in `config.py`.

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
import types
import typing

from .atomic import OutputExists
from .config import CompressConfig, FitConfig, OptionSpec
from .eval.cli import EVAL_COMMANDS, add_eval_parser, run_eval
from .farm.cli import FARM_COMMANDS, add_farm_parser, run_farm
from .model.embedded import CACHE_ENV, DEFAULT_MODEL, EMBEDDED
from .progress import quiet_library_bars
from .quality_target import MAX_KL_TOKENS

EPILOG = f"""\
MODEL is a local Hugging Face folder (safetensors weights), the alias of an embedded model
({', '.join(sorted(EMBEDDED))}), or a Hugging Face Hub id (org/name): read from the local Hub cache
($HF_HUB_CACHE or $HF_HOME), else downloaded into it (config, safetensors weights, tokenizer and generation
files only; HF_HUB_OFFLINE=1 never downloads). The embedded model's first use dequantises it once (30-45 s
on 2 CPU cores) into ${CACHE_ENV}, else $XDG_CACHE_HOME/prunenet, else ~/.cache/prunenet.
"""
DESCRIPTION = ("Structured compression of LLM FFNs with no user data: rows ranked by their activations on text "
               "the model writes itself, output matrices refitted by least squares; the paper's method "
               "(PruneNet, ICLR 2025) with --selector prunenet --repair none.")
_FORMATTER = argparse.RawDescriptionHelpFormatter
# Options every command shares, shown in the last group.
_COMMON = ("seed", "device")


def _ratio_help(what: str) -> str:
    return f"{what}: fraction of FFN rows removed, in [0, 1); each layer keeps int((1 - ratio) * n) rows"


def _registry(keyword: str) -> dict | None:
    """The registered methods an option chooses among (selector, repair, statistics), if it is such an option."""
    from .calibration.driver import MODES
    from .repairs import REPAIRS
    from .selectors import SELECTORS

    return {"selector": SELECTORS, "repair": REPAIRS, "statistics": MODES}.get(keyword)


def _add_option(group, spec: OptionSpec) -> None:
    """One flag of `spec`; absent flags stay out of the namespace, so only what was given reaches the API."""
    hint = spec.hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    registry = _registry(spec.keyword)
    choices = tuple(registry) if registry is not None else spec.choices
    text = spec.help if registry is None else "; ".join(f"{name}: {method.help}" for name, method in registry.items())
    default = "" if spec.default is None else f" (default {spec.default})"
    group.add_argument(spec.flag, dest=spec.keyword, type=hint if hint in (int, float) else str, choices=choices,
                       default=argparse.SUPPRESS, help=text + default)


def _add_groups(parser: argparse.ArgumentParser, specs: list[OptionSpec]) -> None:
    """The options grouped as the methods own them: shared ones first, each selector's own after."""
    groups: dict[str, list[OptionSpec]] = {}
    for spec in specs:
        title = f"options of {spec.owner}" if spec.owner else "common" if spec.keyword in _COMMON else "method"
        groups.setdefault(title, []).append(spec)
    for title in sorted(groups, key=lambda t: (t == "common", t != "method", t)):
        group = parser.add_argument_group(title)
        for spec in groups[title]:
            _add_option(group, spec)


def _add_reporting(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the report as JSON to PATH")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing but errors: no progress bars, no summary (--json keeps the report)")


def _add_model(parser: argparse.ArgumentParser, name: str = "model") -> None:
    parser.add_argument(name, nargs="?", default=DEFAULT_MODEL,
                        help=f"model folder, alias or Hugging Face Hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--revision", help="Hub ids: the branch, tag or commit (default: the main branch)")


class _Parser(argparse.ArgumentParser):
    """Bad flags and values fail as every other bad input does: one `prunenet: error:` line, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("prunenet").strip()
        self.exit(2, f"prunenet: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunenet", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_FORMATTER)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    comp = commands.add_parser(
        "compress", help="slice FFN rows and write a standard checkpoint", epilog=EPILOG, formatter_class=_FORMATTER,
        description="Compress MODEL into a checkpoint that AutoModelForCausalLM.from_pretrained loads. By default "
                    "the model writes its own probe text, and layer by layer, each after the ones before it are "
                    "compressed (one pass per ratio), rows are ranked by their activations on it and the output "
                    "matrix is refitted on it. --heal-tokens then trains each output towards the original on the "
                    "original's own text; --max-kl picks the ratio from a KL bound. The paper's policy: "
                    "--selector prunenet (trained first unless --policy is given).")
    _add_model(comp)
    comp.add_argument("--out", required=True,
                      help="output folder; with --ratios, a folder holding ratio-R/ for each ratio")
    which = comp.add_mutually_exclusive_group(required=True)
    which.add_argument("--ratio", type=float, help=_ratio_help("compression ratio"))
    which.add_argument("--ratios", help="several ratios, comma-separated (e.g. 0.1,0.2,0.3), from one ranking")
    which.add_argument("--max-kl", type=float, metavar="NATS",
                       help="the largest ratio whose mean KL(original || compressed) on held-out text the original "
                            "writes itself stays within NATS, by bisection over widths (~6 compressions and "
                            "evaluations; needs the original and one compressed model whole in memory, float32)")
    comp.add_argument("--max-kl-tokens", type=int, default=MAX_KL_TOKENS,
                      help=f"with --max-kl: held-out tokens the KL is measured on (default {MAX_KL_TOKENS})")
    comp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_groups(comp, CompressConfig.specs())
    _add_reporting(comp)

    sco = commands.add_parser(
        "score", help="rank MODEL's rows once into a file; compress --scores slices it at any ratio",
        epilog=EPILOG, formatter_class=_FORMATTER,
        description="Rank every FFN row of MODEL once (probes + statistics; for the fisher selector, gradients "
                    "of the whole model on the probes; a policy fit for the prunenet selector) and save the "
                    "ranking; `compress --scores FILE` then slices any ratio from it.")
    _add_model(sco)
    sco.add_argument("--out", required=True, help="the scores file to write (.safetensors)")
    sco.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_groups(sco, [spec for spec in CompressConfig.specs() if not spec.slicing])
    _add_reporting(sco)

    fit = commands.add_parser("fit", help="train the paper's policy once; reuse it at any ratio", epilog=EPILOG,
                              formatter_class=_FORMATTER,
                              description="Train a PruneNet policy on MODEL's FFN weights (no data needed); "
                                          "compress --selector prunenet --policy FILE slices with it.")
    _add_model(fit)
    fit.add_argument("--ratio", type=float, default=0.3, help=_ratio_help("ratio trained at (default 0.3)"))
    fit.add_argument("--out", help="save the policy to this .safetensors file")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_groups(fit, FitConfig.specs())
    _add_reporting(fit)

    inf = commands.add_parser("info", help="describe a model or a saved policy",
                              description="Print what a model folder/alias or a policy file holds, as JSON.")
    _add_model(inf, "target")
    add_eval_parser(commands)
    add_farm_parser(commands)
    return parser


def given_options(args: argparse.Namespace, config: type) -> dict:
    """The options the command line gave (absent flags are not in the namespace)."""
    return {spec.keyword: getattr(args, spec.keyword) for spec in config.specs() if hasattr(args, spec.keyword)}


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
    from . import api

    if args.command == "info":
        report = api.info(args.target, args.revision)
        print(json.dumps(report, indent=2))
        return report
    progress = not args.quiet
    outputs = dict(revision=args.revision, overwrite=args.overwrite, json_path=args.json_path, progress=progress)
    if args.command == "fit":
        report = api.fit(args.model, args.ratio, out=args.out, **outputs, **given_options(args, FitConfig)).report
        _print_fit(report["fit"])
        if args.out:
            print(f"policy saved to {args.out}")
    elif args.command == "score":
        report = api.score(args.model, args.out, **outputs, **given_options(args, CompressConfig))
        _print_fit(report.get("fit"))
        _print_probes(report.get("probes"))
        print(f"scores ({report['selector']}) saved to {args.out}")
    else:
        report = api.compress(args.model, args.out, args.ratio, ratios=args.ratios, max_kl=args.max_kl,
                              max_kl_tokens=args.max_kl_tokens, **outputs, **given_options(args, CompressConfig))
        _print_fit(report["fit"])
        _print_probes(report.get("probes"))
        if report["max_kl"] is not None:
            checked = ", ".join(f"{c['ffn_width']}: {c['kl']:.4f}" for c in report["max_kl"]["checked"])
            print(f"max_kl {report['max_kl']['max_kl']}: width -> KL checked {checked}")
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
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, its one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    quiet_library_bars()
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
