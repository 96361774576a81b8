"""The `prunenet farm` command; `prunenet.cli` registers it with `add_farm_parser`."""
from __future__ import annotations

import argparse

FARM_COMMANDS = ("farm",)

FARM_EPILOG = """\
A plan (TOML):

  out = "runs"                              # outputs: runs/<model>/ratio-<r>/, scores: runs/<model>/
  models = ["./llama-a", "org/llama-b", {name = "smol", path = "smollm2-135m"}]   # folders, aliases, Hub ids
                                            # a Hub id at a revision: {path = "org/c", revision = "v1"}
  ratios = [0.1, 0.2, 0.3]
  max_kl = [0.5]                            # optional (or instead of ratios): runs/<model>/max-kl-0.5/, the
                                            # largest ratio whose KL to the original stays within 0.5 nats
  selector = "random"                       # optional; like every option below, as in prunenet compress
  eval = true                               # optional: PPL, KL, top-1 agreement per output (no throughput)
  retries = 3                               # optional: retries of a task whose worker died
  cpus_per_task = 1                         # optional; gpus_per_task (default 1 when the cluster has GPUs)

  [options]                                 # options of prunenet compress (seed, probe_tokens, ...)
  seed = 0

Per model, one scoring task, then one slicing task per ratio and per KL bound. A rerun skips every output whose job
(model fingerprint, with a Hub id's commit; ratio; options) is unchanged and redoes the rest; --dry-run
shows which. Errors in what was asked (a ratio leaving no row, a missing shard, an unsupported family)
fail that model's jobs only and are listed in the summary; the exit status is then 1.
"""


def add_farm_parser(commands) -> None:
    farm = commands.add_parser(
        "farm", help="compress many models at several ratios on Ray, resumable, with a quality table",
        description="Run a farm PLAN (TOML) on Ray: a local Ray with this machine's resources, or a cluster "
                    "(--address) whose nodes see the model folders and the output root at the same paths. "
                    'Needs pip install "prunenet[farm]".',
        epilog=FARM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    farm.add_argument("plan", help="the plan, a TOML file")
    farm.add_argument("--address", help="join a running Ray cluster: auto, or ray://HOST:PORT")
    farm.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    farm.add_argument("--gpus", type=int, help="GPUs of the local Ray (default: all of this machine's)")
    farm.add_argument("--dry-run", action="store_true", help="print what would run and what is done; run nothing")
    farm.add_argument("--json", dest="json_path", metavar="PATH",
                      help="write the summary as JSON to PATH (.json) and as CSV beside it (.csv)")
    farm.add_argument("--plot", dest="plot_path", metavar="PNG",
                      help="with eval: perplexity, KL and agreement against ratio per model (needs [plot])")
    farm.add_argument("--quiet", action="store_true", help="print nothing but errors (--json still writes the summary)")


def run_farm(args: argparse.Namespace) -> dict:
    """Run `prunenet farm`; print the summary table; exit with status 1 when a job failed."""
    from .api import farm
    from .summary import table

    report = farm(args.plan, address=args.address, cpus=args.cpus, gpus=args.gpus, dry_run=args.dry_run,
                  json_path=args.json_path, plot_path=args.plot_path, progress=not args.quiet)
    print(table(report))
    counts = ", ".join(f"{n} {status}" for status, n in report["counts"].items())
    wall = f" in {report['wall_s']:.1f} s" if "wall_s" in report else ""
    print(f"{'dry run: ' if report['dry_run'] else ''}{len(report['jobs'])} jobs: {counts}{wall}")
    for key in ("csv", "plot"):
        if report.get(key):
            print(f"wrote {report[key]}" + (f" and {args.json_path}" if key == "csv" else ""))
    if report["counts"].get("failed"):
        raise SystemExit(1)
    return report
