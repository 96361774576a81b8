"""The Python API: `fit`, `compress` and `info`, mirroring the CLI commands of the same names.

Every function validates its options before any heavy work, accepts a local model folder or the alias
of the embedded model, and returns (and optionally writes as JSON) a report of what it did.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

import prunenet_kernels as K

from .checkpoint import Checkpoint, atomic_write, check_output, output_dtype
from .data_selection import ProbeSelection, select_on_probes
from .defaults import (DEFAULT_PROBE_TOKENS, DEFAULT_REPAIR, DEFAULT_SELECTOR,
                       DEFAULT_STATISTICS, RANKERS, REPAIRS, SELECTORS, STATISTICS)
from .embedded import DEFAULT_MODEL, cache_root, resolve_model
from .families import Family, family_for
from .fit import FitOptions, train_policy
from .layer_stream import LayerStream
from .policy import Policy, load_policy
from .probes import SELF, ProbeOptions, get_probes, probe_batches
from .report import PhaseTimer, check_json_path, peak_rss_mb, save_report
from .row_selection import MODES, check_ratio, kept_width, row_priority, select_rows
from .scores import StoredScores, load_scores
from .writer import SlicePlan, write_compressed



@dataclass
class FitResult:
    policy: Policy
    report: dict


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


def open_model(model: str | os.PathLike, progress: bool = False) -> tuple[Checkpoint, Family]:
    checkpoint = Checkpoint(resolve_model(model, progress))
    return checkpoint, family_for(checkpoint.model_type)


def load_scored(checkpoint: Checkpoint, plan: SlicePlan, device: torch.device) -> torch.Tensor:
    """The scored matrices of all layers stacked as (L, n, h): float32 on CPU, the stored dtype on GPU."""
    family = plan.family
    by_layer = {}
    for name, (layer, _) in plan.roles.items():
        if family.match(name)[1] == family.scored:
            by_layer[layer] = name
    if not by_layer or sorted(by_layer) != list(range(len(by_layer))):
        raise ValueError(f"{checkpoint.path}: the {family.scored!r} tensors do not cover layers 0..L-1")
    rows = slice(0, plan.n) if family.fused_gate_up else None
    first = checkpoint.check_finite(by_layer[0], checkpoint.read(by_layer[0], rows))
    dtype = torch.float32 if device.type == "cpu" else first.dtype
    # Filled layer by layer: only one layer's tensor is ever held beside the stack.
    stacked = torch.empty(len(by_layer), *first.shape, dtype=dtype, device=device)
    stacked[0] = first
    for layer in range(1, len(by_layer)):
        stacked[layer] = checkpoint.check_finite(by_layer[layer], checkpoint.read(by_layer[layer], rows))
    return stacked


def check_scored_finite(checkpoint: Checkpoint, plan: SlicePlan) -> None:
    """Refuse NaN or Inf in a scored matrix up front, where `load_scored` is not called (one layer at a time)."""
    for name in plan.roles:
        if plan.family.match(name)[1] == plan.family.scored:
            checkpoint.check_finite(name, checkpoint.read(name))


def describe(checkpoint: Checkpoint, family: Family, plan: SlicePlan | None = None) -> dict:
    plan = plan or SlicePlan(checkpoint, family)
    layers = {layer for layer, _ in plan.roles.values()}
    scored = next(name for name in plan.roles if family.match(name)[1] == family.scored)
    return {
        "path": str(checkpoint.path),
        "model_type": checkpoint.model_type,
        "layers": len(layers),
        "hidden_size": checkpoint.shape(scored)[1],
        "ffn_width": plan.n,
        "parameters": checkpoint.num_parameters(),
        "shards": len(checkpoint.shards),
    }


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _start(model, out, overwrite: bool, json_path, device, progress: bool):
    """What `fit` and `score` do first: check the outputs, pick the device, open the model (timed)."""
    if out is not None:
        check_output(out, overwrite)
    json_path = check_json_path(json_path)
    dev = resolve_device(device)
    timer = PhaseTimer(dev)
    with timer.phase("resolve"):
        checkpoint, family = open_model(model, progress)
    return json_path, dev, timer, checkpoint, family


def _fit_options(**kwargs) -> FitOptions:
    return FitOptions(**kwargs).validate()


def fit(
    model: str | os.PathLike = DEFAULT_MODEL,
    ratio: float = 0.3,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    episodes: int = 20,
    lr: float = 1e-3,
    gamma: float = 0.99,
    seed: int = 0,
    reg_weight: float = 0.0,
    engine: str = "exact",
    device: str = "auto",
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> FitResult:
    """Train a policy on `model`'s FFNs at `ratio`; save it to `out` (a .safetensors file) if given."""
    check_ratio(ratio)
    options = _fit_options(episodes=episodes, lr=lr, gamma=gamma, seed=seed, reg_weight=reg_weight, engine=engine)
    json_path, dev, timer, checkpoint, family = _start(model, out, overwrite, json_path, device, progress)
    with timer.phase("load"):
        plan = SlicePlan(checkpoint, family)
        weights = load_scored(checkpoint, plan, dev)
    with timer.phase("fit"):
        policy = train_policy(weights, ratio, options, checkpoint.model_type, progress)
    if out is not None:
        with timer.phase("save"):
            policy.save(out, overwrite)
    report = {
        "command": "fit",
        "model": {"name": str(model), **describe(checkpoint, family, plan)},
        "device": str(dev),
        "options": {"ratio": ratio, **asdict(options)},
        "policy": str(out) if out is not None else None,
        "fit": _fit_summary(policy),
        "timings_s": timer.as_dict(),
        "peak_rss_mb": peak_rss_mb(),
    }
    save_report(json_path, report)
    return FitResult(policy, report)


def _fit_summary(policy: Policy) -> dict:
    keys = ("trained_ratio", "episodes", "engine", "reward_per_episode", "mean_ks_per_episode", "best_episode")
    return {key: policy.metadata.get(key) for key in keys}


def output_paths(out: str | os.PathLike, ratios: Sequence[float]) -> list[Path]:
    """One ratio writes to `out`; several write to `out/ratio-R` each."""
    out = Path(out)
    if len(ratios) == 1:
        return [out]
    return [out / f"ratio-{r:g}" for r in ratios]


def check_outputs(out: Path, outputs: list[Path], overwrite: bool) -> None:
    if len(outputs) == 1:
        check_output(out, overwrite)
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} must be a folder to hold one output per ratio")
    check_output(out, True)  # not a link; its folder can be made
    for path in outputs:
        check_output(path, overwrite)


def parse_ratios(ratio: float | None, ratios: Sequence[float] | str | None) -> list[float]:
    if (ratio is None) == (ratios is None):
        raise ValueError("give exactly one of ratio (--ratio) and ratios (--ratios)")
    if ratios is None:
        return [check_ratio(ratio)]
    if isinstance(ratios, str):
        try:
            ratios = [float(r) for r in ratios.split(",") if r.strip()]
        except ValueError:
            raise ValueError(f"ratios {ratios!r} must be comma-separated numbers, e.g. 0.1,0.2,0.3") from None
    if not ratios:
        raise ValueError("ratios is empty")
    if len(set(ratios)) != len(ratios):
        raise ValueError(f"ratios {list(ratios)!r} repeat a value")
    return [check_ratio(r) for r in ratios]


def compress(
    model: str | os.PathLike = DEFAULT_MODEL,
    out: str | os.PathLike | None = None,
    ratio: float | None = None,
    *,
    ratios: Sequence[float] | str | None = None,
    selector: str = DEFAULT_SELECTOR,
    repair: str = DEFAULT_REPAIR,
    statistics: str = DEFAULT_STATISTICS,
    probes: str | os.PathLike = SELF,
    probe_tokens: int = DEFAULT_PROBE_TOKENS,
    probe_length: int | None = None,
    scores: str | os.PathLike | None = None,
    policy: str | os.PathLike | Policy | None = None,
    fit_ratio: float | None = None,
    selection: str = "sample",
    align: int | None = None,
    dtype: str = "auto",
    overwrite: bool = False,
    episodes: int = 20,
    lr: float = 1e-3,
    gamma: float = 0.99,
    seed: int = 0,
    reg_weight: float = 0.0,
    engine: str = "exact",
    device: str = "auto",
    policy_out: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Compress `model` at one ratio (into `out`) or several (into `out/ratio-R` each) from one scoring.

    Selectors: "activation" and "obs" rank rows from activation statistics on probe text (`probes`:
    "self", text the model writes itself, or a text/JSONL file); "prunenet" is the paper's policy,
    trained first (at `fit_ratio`, default the first ratio) unless `policy` is given; "random" and
    "magnitude" are baselines. `repair="lsq"` refits the kept columns of every output matrix on the
    probes, whatever the selector. `scores` is a file written by `score()`: the scoring is not redone.
    """
    if out is None:
        raise ValueError("compress needs an output folder (out / --out)")
    all_ratios = parse_ratios(ratio, ratios)
    stored_dtype = output_dtype(dtype)
    _check_choice("selector", selector, SELECTORS)
    _check_choice("selection", selection, MODES)
    _check_choice("repair", repair, REPAIRS)
    _check_choice("statistics", statistics, STATISTICS)
    if policy is not None and selector != "prunenet":
        raise ValueError(f"a policy (--policy) applies to selector 'prunenet', not {selector!r}")
    if scores is not None and policy is not None:
        raise ValueError("give at most one of scores (--scores) and policy (--policy)")
    stored = load_scores(scores, selector) if scores is not None else None
    if isinstance(stored, Policy):
        policy, stored = stored, None
    # Sequential statistics rank per ratio, so a stored (one-shot) ranking serves only its probes then.
    rerank = stored is not None and statistics == "sequential" and selector in RANKERS
    # Ratio 0 keeps every row: it needs no selection, so no fit when it is the only ratio.
    slicing = any(all_ratios)
    needs_fit = selector == "prunenet" and policy is None and (fit_ratio is not None or slicing)
    if needs_fit:
        options = _fit_options(episodes=episodes, lr=lr, gamma=gamma, seed=seed, reg_weight=reg_weight, engine=engine)
        fit_ratio = check_ratio(next(r for r in all_ratios if r) if fit_ratio is None else fit_ratio)
    needs_probes = slicing and (repair == "lsq" or (selector in RANKERS and (stored is None or rerank)))
    probe_options = None
    if needs_probes and not (stored is not None and stored.probes is not None):
        probe_options = ProbeOptions(str(probes), probe_tokens, probe_length, seed).validate()
    if policy_out is not None:
        if not needs_fit:
            raise ValueError("policy_out (--save-policy) needs a policy trained by this run")
        check_output(policy_out, overwrite)
    outputs = output_paths(out, all_ratios)
    check_outputs(Path(out), outputs, overwrite)
    json_path = check_json_path(json_path)
    loaded_policy = load_policy(policy) if isinstance(policy, (str, os.PathLike)) else policy
    dev = resolve_device(device)
    timer = PhaseTimer(dev)

    with timer.phase("resolve"):
        checkpoint, family = open_model(model, progress)
    with timer.phase("load"):
        plan = SlicePlan(checkpoint, family)
        # The rankers and stored scores read no scored matrices: the statistics pass reads each layer.
        weights = load_scored(checkpoint, plan, dev) if selector not in RANKERS and stored is None else None
        if weights is None:
            check_scored_finite(checkpoint, plan)
    widths = {r: kept_width(plan.n, r, align) for r in all_ratios}  # every ratio must leave rows before any work
    if stored is not None:
        stored.check(plan)
    if loaded_policy is not None:
        try:
            loaded_policy.check_shape(plan.n, weights.shape[2])
        except ValueError as exc:
            raise ValueError(f"policy {str(policy)!r}: {exc}") from None
    if needs_fit:
        with timer.phase("fit"):
            loaded_policy = train_policy(weights, fit_ratio, options, checkpoint.model_type, progress)
        if policy_out is not None:
            loaded_policy.save(policy_out, overwrite)
    if loaded_policy is not None:
        loaded_policy = loaded_policy.to(dev)
    sliced = {r: k for r, k in widths.items() if k < plan.n}
    probe_info = None
    if needs_probes and sliced:
        with timer.phase("probes"):
            probe_set = stored.probes if stored is not None and stored.probes is not None else \
                get_probes(checkpoint, probe_options, cache_root(), dev, progress)
            probe_info = probe_set.info
    with timer.phase("select"):
        if stored is not None and not rerank:
            given = {r: K.topk_rows(stored.priority, k) for r, k in sliced.items()}
        elif selector in RANKERS:
            given = None
        else:
            given = {r: select_rows(weights, k, selector, loaded_policy, selection, seed) for r, k in sliced.items()}
    chosen = ProbeSelection(kept=dict(given or {}))
    if needs_probes and sliced:
        with timer.phase("statistics"):
            stream = LayerStream(checkpoint, family, dev, torch.float32 if dev.type == "cpu" else torch.bfloat16)
            ranker = selector if given is None else None
            chosen = select_on_probes(stream, probe_batches(probe_set.tokens), plan, sliced, ranker, given, repair,
                                      statistics, progress)
    before = describe(checkpoint, family, plan)
    if len(outputs) > 1:
        Path(out).mkdir(parents=True, exist_ok=True)
    results = []
    for r, path in zip(all_ratios, outputs):
        k = widths[r]
        kept = chosen.kept[r] if k < plan.n else torch.arange(plan.n).expand(plan.num_layers, plan.n)
        provenance = {
            "ratio": r, "ffn_width_before": plan.n, "ffn_width_after": k, "selector": selector,
            "selection": selection if selector == "prunenet" else None, "seed": seed, "align": align, "dtype": dtype,
            "repair": repair if k < plan.n else "none", "statistics": statistics if needs_probes else None,
            "probes": probe_info, "policy": _fit_summary(loaded_policy) if loaded_policy is not None else None,
            "scores": str(scores) if scores is not None else None,
        }
        with timer.phase("write"):
            write_compressed(checkpoint, plan, kept.cpu(), path, overwrite, provenance, progress,
                             chosen.replacements.get(r), stored_dtype)
        results.append({
            "ratio": r, "out": str(path), "ffn_width_before": plan.n, "ffn_width_after": k,
            "parameters_before": before["parameters"], "parameters_after": Checkpoint(path).num_parameters(),
        })
    report = {
        "command": "compress",
        "model": {"name": str(model), **before},
        "device": str(dev),
        "options": {
            "ratios": all_ratios, "selector": selector, "repair": repair, "statistics": statistics,
            "selection": selection, "align": align, "seed": seed, "dtype": dtype,
            "probes": asdict(probe_options) if probe_options is not None else None,
            "policy": str(policy) if isinstance(policy, (str, os.PathLike)) else None,
            "scores": str(scores) if scores is not None else None,
            **({"fit_ratio": fit_ratio, **asdict(options)} if needs_fit else {}),
        },
        "fit": _fit_summary(loaded_policy) if needs_fit else None,
        "probes": probe_info,
        "outputs": results,
        "timings_s": timer.as_dict(),
        "peak_rss_mb": peak_rss_mb(),
    }
    save_report(json_path, report)
    return report


def score(
    model: str | os.PathLike = DEFAULT_MODEL,
    out: str | os.PathLike | None = None,
    *,
    selector: str = DEFAULT_SELECTOR,
    probes: str | os.PathLike = SELF,
    probe_tokens: int = DEFAULT_PROBE_TOKENS,
    probe_length: int | None = None,
    fit_ratio: float | None = None,
    seed: int = 0,
    episodes: int = 20,
    lr: float = 1e-3,
    gamma: float = 0.99,
    reg_weight: float = 0.0,
    engine: str = "exact",
    device: str = "auto",
    overwrite: bool = False,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    **slicing_options,
) -> dict:
    """Rank `model`'s rows once and save the ranking to `out`; `compress(..., scores=out)` slices it at any ratio.

    For "prunenet" the file is the fitted policy (trained at `fit_ratio`, default 0.3); for the other
    selectors it holds each row's keep priority (one-shot statistics for "activation" and "obs") and the
    probe tokens. Options that only matter when slicing (`repair`, `align`, ...: any other keyword of
    `compress`) are accepted, so one set of options serves both calls, and ignored here.
    """
    unknown = sorted(set(slicing_options) - _SLICING_ONLY)
    if unknown:
        raise TypeError(f"score() got unknown options {', '.join(map(repr, unknown))}")
    if out is None:
        raise ValueError("score needs an output file (out / --out)")
    _check_choice("selector", selector, SELECTORS)
    if selector == "prunenet":
        ratio = 0.3 if fit_ratio is None else fit_ratio
        result = fit(model, ratio, out=out, overwrite=overwrite, episodes=episodes, lr=lr, gamma=gamma, seed=seed,
                     reg_weight=reg_weight, engine=engine, device=device, json_path=json_path, progress=progress)
        return {**result.report, "command": "score", "selector": selector, "scores": str(out)}
    probe_options = ProbeOptions(str(probes), probe_tokens, probe_length, seed).validate() \
        if selector in RANKERS else None
    json_path, dev, timer, checkpoint, family = _start(model, out, overwrite, json_path, device, progress)
    plan = SlicePlan(checkpoint, family)
    probe_set = None
    with timer.phase("score"):
        if selector in RANKERS:
            probe_set = get_probes(checkpoint, probe_options, cache_root(), dev, progress)
            stream = LayerStream(checkpoint, family, dev, torch.float32 if dev.type == "cpu" else torch.bfloat16)
            chosen = select_on_probes(stream, probe_batches(probe_set.tokens), plan, {0.0: plan.n}, selector, None,
                                      "none", "oneshot", progress, rank_down_to=1)
            priority = chosen.priority
        else:
            priority = row_priority(load_scored(checkpoint, plan, dev), selector, seed)
    stored = StoredScores(selector, priority.cpu(), probe_set,
                          {"model": describe(checkpoint, family, plan), "seed": seed})
    with timer.phase("save"):
        atomic_write(Path(out), overwrite, stored.save)
    report = {
        "command": "score", "selector": selector, "scores": str(out),
        "model": {"name": str(model), **describe(checkpoint, family, plan)}, "device": str(dev),
        "options": {"seed": seed, "probes": asdict(probe_options) if probe_options else None},
        "probes": probe_set.info if probe_set is not None else None,
        "timings_s": timer.as_dict(), "peak_rss_mb": peak_rss_mb(),
    }
    save_report(json_path, report)
    return report


# Keywords of `compress` that only matter when slicing: `score` accepts and ignores them.
_SLICING_ONLY = frozenset(inspect.signature(compress).parameters) - frozenset(inspect.signature(score).parameters)


def info(target: str | os.PathLike = DEFAULT_MODEL) -> dict:
    """What a model (folder or alias) or a saved policy file holds."""
    if isinstance(target, (str, os.PathLike)) and str(target).endswith(".safetensors") and Path(target).is_file():
        policy = load_policy(target)
        return {"kind": "policy", "path": str(target), "n": policy.n, "h": policy.h, **policy.metadata}
    checkpoint, family = open_model(target, progress=True)  # a first use of the embedded model says so
    return {"kind": "model", "name": str(target), **describe(checkpoint, family)}
