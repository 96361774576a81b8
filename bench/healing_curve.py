"""Quality after self-distillation healing against the healing budget, on the embedded model.

    prunenet compress smollm2-135m --ratios 0.2,0.3,0.5 --out /tmp/heal/default --quiet
    python bench/healing_curve.py --teacher ~/.cache/prunenet/smollm2-135m-bfloat16   # the original's folder

Teacher: the original (its bf16 cache folder, loaded in float32). Students: the default compressed models
in --students/ratio-R. The teacher writes its own healing text once (seed --text-seed, cached under
--work) and a separate held-out text (seed --held-out-seed) on which KL(teacher || student) chooses the
settings: no user data and not the evaluation corpus either. Then:
  1. settings, at the smallest non-zero budget and the first ratio: every learning rate under every
     schedule of --schedules (FFN + norms, cached top-k targets); then, one factor at a time from the best
     of those (--variants), every parameter instead of FFN + norms, and the full logits per batch instead
     of the cached top-k; the variant with the lowest held-out KL is chosen (the full logits only if > 2%
     lower, as they cost a teacher forward per step); combinations of the variants are not measured;
  2. the curve: every ratio at every budget with the chosen settings (budget 0 = not healed).
Every healed student is saved (float32) under --work and evaluated by `prunenet.eval.evaluate` on the
first --tokens tokens of pydoc_data.topics: perplexity, KL(original || healed), top-1 agreement.
Measurements run on --threads torch threads (default 1, leaving a core to others on a shared machine);
timings are wall-clock and taken under whatever load the machine carries (load averages reported).
Runs already saved under --work are reused (delete the folder to measure again).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import PreTrainedModel

from prunenet.eval import evaluate
from prunenet.healing import (
    PRECISIONS,
    SCHEDULES,
    HealConfig,
    distill_kl,
    heal,
    resolved_precision,
    teacher_targets,
    teacher_text,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="the original model folder (with its tokenizer); required to measure")
    parser.add_argument("--students", type=Path, default=Path("/tmp/heal/default"),
                        help="folder holding ratio-R compressed models")
    parser.add_argument("--ratios", default="0.2,0.3,0.5")
    parser.add_argument("--budgets", default="0,8192,32768", help="healing tokens per run; 0 = not healed")
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3", help="learning rates compared at the first budget")
    parser.add_argument("--schedules", default="cosine,constant", help="lr schedules compared with every lr")
    parser.add_argument("--variants", default="train,teacher",
                        help="single-factor variants of the best lr: train (all parameters), teacher (full logits), "
                             "lora (low-rank FFN updates + norms, at every lr of --lrs)")
    parser.add_argument("--lora-rank", type=int, default=16, help="rank of the lora variant's updates")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="the forward passes' matrix products (as the CLI's --heal-precision)")
    parser.add_argument("--top-k", type=int, default=256, help="cached teacher targets: top-k + rest mass")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--text-seed", type=int, default=1, help="seed of the healing text")
    parser.add_argument("--held-out-seed", type=int, default=2, help="seed of the text that chooses settings")
    parser.add_argument("--held-out-tokens", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of pydoc_data.topics evaluated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/heal"), help="healed students and cached text")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="healing_curve", help="file stem of the results: NAME.json, NAME.md")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only write the markdown again from a results JSON of this script")
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads(args.render.read_text())
        ratios = [float(r) for r in result["students"]]
        budgets = sorted({r["budget"] for r in result["rows"] if r["role"] == "curve"})
        (args.out / f"{args.name}.md").write_text(markdown(result, ratios, budgets))
        return 0
    if not args.teacher:
        parser.error("--teacher FOLDER is required (the original model, with its tokenizer)")

    torch.set_num_threads(args.threads)
    load_start, clock = os.getloadavg(), time.perf_counter()
    ratios = [float(r) for r in args.ratios.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    schedules = args.schedules.split(",")
    variants = [v for v in args.variants.split(",") if v]
    if not set(schedules) <= set(SCHEDULES):
        parser.error(f"--schedules {args.schedules!r}: choose from {', '.join(SCHEDULES)}")
    if not set(variants) <= {"train", "teacher", "lora"}:
        parser.error(f"--variants {args.variants!r}: choose from train, teacher, lora (or none: '')")
    healed_budgets = [b for b in budgets if b > 0]
    text_tokens = max(healed_budgets)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.disable_progress_bar()
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    args.precision = resolved_precision(args.precision, torch.device("cpu"))  # named in the students' folders
    args.work.mkdir(parents=True, exist_ok=True)

    text, text_info = cached_text(teacher, tokenizer, args.work, text_tokens // args.length, args.length,
                                  args.text_seed)
    held_out, held_info = cached_text(teacher, tokenizer, args.work, args.held_out_tokens // args.length,
                                      args.length, args.held_out_seed)
    print(f"text: {text_info}; held out: {held_info}", flush=True)
    start = time.perf_counter()
    targets = teacher_targets(teacher, text, args.length, args.top_k, args.batch_size, precision=args.precision)
    targets_seconds = time.perf_counter() - start
    rest_mass = targets.rest.exp().mean().item()
    print(f"teacher top-{args.top_k} targets of {text.numel()} tokens: {targets_seconds:.0f} s, "
          f"mean mass outside the top {args.top_k}: {rest_mass:.3f}", flush=True)

    def student_path(ratio: float) -> Path:
        return args.students / f"ratio-{ratio}"

    def run(ratio: float, config: HealConfig, role: str) -> dict:
        train = f"lora{config.lora_rank}" if config.train == "lora" else config.train
        name = (f"healed-r{ratio}-{config.tokens}-{train}-lr{config.lr:g}-{config.schedule}"
                f"-k{config.top_k}-{config.precision}")
        folder = args.work / name
        saved = folder / "heal.json"
        if saved.is_file():
            row = json.loads(saved.read_text())
            print(f"reused {folder}", flush=True)
            return {**row, "role": role}
        student = AutoModelForCausalLM.from_pretrained(student_path(ratio), dtype=torch.float32)
        before = held_kl_unhealed.get(ratio)
        if before is None:
            before = held_kl_unhealed[ratio] = distill_kl(student, teacher, held_out)
        report = heal(student, teacher, text, config, progress=True,
                      targets=targets if config.top_k == args.top_k else None)
        after = distill_kl(student, teacher, held_out)
        save(student, student_path(ratio), folder)
        row = {"ratio": ratio, "budget": config.tokens, "train": train, "lr": config.lr,
               "schedule": config.schedule, "top_k": config.top_k, "held_out_kl_before": before,
               "held_out_kl": after, "folder": str(folder), "heal": report}
        saved.write_text(json.dumps(row, indent=1))
        print(f"{name}: held-out KL {before:.4f} -> {after:.4f}, {report['seconds']:.0f} s "
              f"({report['tokens_per_second']} tok/s)", flush=True)
        return {**row, "role": role}

    held_kl_unhealed: dict[float, float] = {}
    first_ratio, first_budget = ratios[0], min(healed_budgets)
    base = HealConfig(tokens=first_budget, length=args.length, batch_size=args.batch_size, lr=lrs[0],
                      top_k=args.top_k, seed=0, precision=args.precision)
    # 1. settings by held-out KL on the teacher's own text: lrs x schedules, then single-factor variants
    ablation = [run(first_ratio, replace(base, lr=lr, schedule=schedule), "lr")
                for schedule in schedules for lr in lrs]
    best = min(ablation, key=lambda r: r["held_out_kl"])
    chosen = replace(base, lr=best["lr"], schedule=best["schedule"])
    # Low-rank updates usually want a larger rate than whole matrices: every lr is tried for them.
    single_factor = {"train": [replace(chosen, train="all")], "teacher": [replace(chosen, top_k=0)],
                     "lora": [replace(chosen, train="lora", lora_rank=args.lora_rank, lr=lr) for lr in lrs]}
    for role in variants:
        for variant in single_factor[role]:
            row = run(first_ratio, variant, role)
            ablation.append(row)
            if role == "teacher":
                # The full logits cost a teacher forward every step: adopted only if clearly better (> 2%).
                if row["held_out_kl"] < 0.98 * best["held_out_kl"]:
                    best, chosen = row, variant
            elif row["held_out_kl"] < best["held_out_kl"]:
                best, chosen = row, variant
    print(f"chosen: {chosen}", flush=True)

    # 2. the curve with the chosen settings
    curve = []
    for ratio in ratios:
        for budget in healed_budgets:
            curve.append(run(ratio, replace(chosen, tokens=budget), "curve"))

    unhealed = [str(student_path(r)) for r in ratios]
    folders = list(dict.fromkeys([*unhealed, *(r["folder"] for r in [*ablation, *curve])]))
    quality = {}
    for start in range(0, len(folders), 7):  # at most 8 float32 models in memory at once
        evaluation = evaluate(args.teacher, folders[start : start + 7], tokens=args.tokens, throughput=False)
        original, *models = evaluation["models"]
        quality.update({m["name"]: m for m in models})
    rows = []
    for ratio, path in zip(ratios, unhealed):
        if ratio not in held_kl_unhealed:
            held_kl_unhealed[ratio] = distill_kl(
                AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), teacher, held_out)
        rows.append(entry({"ratio": ratio, "budget": 0, "role": "curve", "folder": path,
                           "held_out_kl": held_kl_unhealed[ratio]}, quality[path]))
    # The first ratio's run at the first budget with the chosen settings is both a settings row and a curve row.
    rows += [entry(row, quality[row["folder"]]) for row in [*ablation, *curve]]
    load_end = os.getloadavg()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": evaluation["machine"],
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "note": (f"wall-clock timings on {args.threads} torch thread(s), under the load averages shown: compare "
                 "them with each other, not with other machines"),
        "teacher": args.teacher,
        "students": {str(r): str(student_path(r)) for r in ratios},
        "text": {**text_info, "targets_top_k": args.top_k, "targets_seconds": round(targets_seconds, 1),
                 "mean_rest_mass": round(rest_mass, 4)},
        "held_out_text": held_info,
        "corpus": evaluation["corpus"],
        "original": {"perplexity": original["perplexity"]},
        "chosen": chosen.as_dict(),
        "rows": rows,
        "elapsed_s": round(time.perf_counter() - clock, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result, ratios, budgets))
    print(markdown(result, ratios, budgets))
    return 0


def cached_text(teacher, tokenizer, work: Path, sequences: int, length: int, seed: int) -> tuple[torch.Tensor, dict]:
    """The teacher's own text, generated once per (sequences, length, seed) and kept under `work`."""
    path = work / f"teacher-text-{sequences}x{length}-seed{seed}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["tokens"], {**saved["info"], "cached": True}
    start = time.perf_counter()
    tokens = teacher_text(teacher, tokenizer, sequences, length, seed, progress=True)
    share = torch.tensor([row.unique().numel() / row.numel() for row in tokens])
    info = {"sequences": sequences, "length": length, "tokens": tokens.numel(), "seed": seed,
            "seconds": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
            "distinct_share_mean": round(share.mean().item(), 4), "distinct_share_min": round(share.min().item(), 4)}
    torch.save({"tokens": tokens, "info": info}, path)
    return tokens, {**info, "cached": False}


def save(student: PreTrainedModel, source: Path, folder: Path) -> None:
    """The healed student in float32 beside its source's tokenizer and provenance files."""
    if folder.exists():
        shutil.rmtree(folder)
    student.save_pretrained(folder)
    for file in source.iterdir():
        if file.is_file() and not (folder / file.name).exists() and not file.name.endswith(".safetensors"):
            shutil.copy2(file, folder / file.name)


def entry(row: dict, measured: dict) -> dict:
    heal_report = row.get("heal") or {}
    return {
        "role": row["role"], "ratio": row["ratio"], "budget": row["budget"], "train": row.get("train"),
        "lr": row.get("lr"), "schedule": row.get("schedule"), "top_k": row.get("top_k"),
        "perplexity": round(measured["perplexity"], 3), "kl": round(measured["kl"], 4),
        "agreement": round(measured["agreement"], 4), "held_out_kl": round(row["held_out_kl"], 4),
        "heal_seconds": heal_report.get("seconds", 0.0), "teacher_seconds": heal_report.get("teacher_seconds", 0.0),
        "tokens_per_second": heal_report.get("tokens_per_second"), "steps": heal_report.get("steps", 0),
        "trained_parameters": heal_report.get("trained_parameters", 0),
        "kl_first": heal_report.get("kl_first"), "kl_last": heal_report.get("kl_last"), "folder": row["folder"],
    }


def markdown(result: dict, ratios: list[float], budgets: list[int]) -> str:
    chosen = result["chosen"]
    ppl0 = result["original"]["perplexity"]
    curve = {(r["ratio"], r["budget"]): r for r in result["rows"] if r["role"] == "curve"}
    lines = [
        "# Self-distillation healing: quality against the healing budget (smollm2-135m)", "",
        f"`{result['command']}`", "",
        (f"Machine: {result['machine']}; torch threads {result['torch_threads']}; load average (1, 5, 15 min) "
         f"{result['loadavg_start']} at start, {result['loadavg_end']} at end. {result['note']}. Total "
         f"{result['elapsed_s'] / 60:.1f} min."), "",
        (f"Teacher: the original, float32; original pydoc PPL {ppl0:.2f} on {result['corpus']['tokens']} tokens. "
         f"Healing text: {result['text']['tokens']} tokens the teacher wrote itself (seed {result['text']['seed']}, "
         f"{result['text']['sequences']} x {result['text']['length']}, {result['text']['seconds']} s to write); "
         f"held-out text for choosing settings: seed {result['held_out_text']['seed']}, "
         f"{result['held_out_text']['tokens']} tokens. Cached teacher targets: top-{result['text']['targets_top_k']} "
         f"+ rest (mean rest mass {result['text']['mean_rest_mass']}), {result['text']['targets_seconds']} s once "
         "for all runs."), "",
        (f"Chosen settings: train `{chosen['train']}`, lr {chosen['lr']:g}, {chosen['schedule']}, top_k "
         f"{chosen['top_k']}, batch {chosen['batch_size']} x {chosen['length']} tokens, AdamW, weight decay "
         f"{chosen['weight_decay']}, clip {chosen['max_grad_norm']}."), "",
        "## Curve (pydoc PPL / KL(original || healed) / top-1 agreement / heal seconds)", "",
        "| budget (tokens) | " + " | ".join(f"r = {r}" for r in ratios) + " |",
        "|---|" + "---|" * len(ratios),
    ]
    for budget in budgets:
        cells = []
        for ratio in ratios:
            r = curve.get((ratio, budget))
            cells.append("-" if r is None else
                         f"{r['perplexity']:.2f} ({r['perplexity'] / ppl0:.2f}x) / {r['kl']:.3f} / "
                         f"{r['agreement']:.3f} / {r['heal_seconds']:.0f} s")
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    best = {ratio: curve[(ratio, max(budgets))] for ratio in ratios if (ratio, max(budgets)) in curve}
    goals = []
    if 0.2 in best:
        r = best[0.2]
        goals.append(f"r = 0.2: PPL {r['perplexity'] / ppl0:.2f}x the original (goal <= 1.3x) and KL {r['kl']:.3f} "
                     f"(goal <= 0.3): {'met' if r['perplexity'] <= 1.3 * ppl0 and r['kl'] <= 0.3 else 'missed'}")
    if 0.3 in best:
        r = best[0.3]
        goals.append(f"r = 0.3: PPL {r['perplexity'] / ppl0:.2f}x (goal <= 1.6x): "
                     f"{'met' if r['perplexity'] <= 1.6 * ppl0 else 'missed'}")
    if goals:
        lines += ["", f"Against the quality goals at {max(budgets)} healing tokens: " + "; ".join(goals) + "."]
    lines += ["", "## Settings compared (first ratio, first budget)", "",
              "One factor at a time: learning rates under each schedule, then all parameters and the full "
              "logits each changed from the best of those; chosen by the held-out self-text KL (not by pydoc). "
              "Seconds are wall-clock under a varying load from other processes, so single runs differ by up to "
              "~40% for the same work.", "",
              ("| compared | train | lr | schedule | top_k | held-out self-text KL | pydoc PPL | KL | top-1 | "
               "heal s | teacher s | tok/s |"), "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["role"] == "curve":
            continue
        lines.append(f"| {r['role']} | {r['train']} | {r['lr']:g} | {r['schedule']} | {r['top_k']} | "
                     f"{r['held_out_kl']:.4f} | {r['perplexity']:.2f} | {r['kl']:.4f} | {r['agreement']:.4f} | "
                     f"{r['heal_seconds']:.0f} | {r['teacher_seconds']:.0f} | {r['tokens_per_second']} |")
    lines += ["", "## Every run", "",
              "| role | ratio | budget | train | lr | schedule | top_k | held-out KL | PPL | KL | top-1 | heal s | "
              "trained params |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['role']} | {r['ratio']} | {r['budget']} | {r['train']} | {r['lr']} | {r['schedule']} | "
                     f"{r['top_k']} | {r['held_out_kl']:.4f} | {r['perplexity']:.2f} | {r['kl']:.4f} | "
                     f"{r['agreement']:.4f} | {r['heal_seconds']:.0f} | {r['trained_parameters']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
