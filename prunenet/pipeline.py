"""The Python API: `fit`, `compress` and `info`, mirroring the CLI commands of the same names.

Every function validates its options before any heavy work, accepts a local model folder or the alias
of the embedded model, and returns (and optionally writes as JSON) a report of what it did.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import Checkpoint, check_output
from .embedded import DEFAULT_MODEL, resolve_model
from .families import Family, family_for
from .fit import FitOptions, train_policy
from .policy import Policy, load_policy
from .report import PhaseTimer, check_json_path, peak_rss_mb, save_report
from .row_selection import MODES, SELECTORS, all_rows, check_ratio, kept_width, select_rows
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
    first = checkpoint.read(by_layer[0], rows)
    dtype = torch.float32 if device.type == "cpu" else first.dtype
    # Filled layer by layer: only one layer's tensor is ever held beside the stack.
    stacked = torch.empty(len(by_layer), *first.shape, dtype=dtype, device=device)
    stacked[0] = first
    for layer in range(1, len(by_layer)):
        stacked[layer] = checkpoint.read(by_layer[layer], rows)
    return stacked


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
    if out is not None:
        check_output(out, overwrite)
    json_path = check_json_path(json_path)
    dev = resolve_device(device)
    timer = PhaseTimer(dev)
    with timer.phase("resolve"):
        checkpoint, family = open_model(model, progress)
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
    check_output(out, True)  # its parent must exist
    for path in outputs:
        if path.exists() and not overwrite:
            raise ValueError(f"output {str(path)!r} exists; pass overwrite (--overwrite) to replace it")


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
    policy: str | os.PathLike | Policy | None = None,
    fit_ratio: float | None = None,
    selector: str = "prunenet",
    selection: str = "sample",
    align: int | None = None,
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
    """Compress `model` at one ratio (into `out`) or several (into `out/ratio-R` each) from a single fit.

    With selector "prunenet" a policy is trained first (at `fit_ratio`, default the first ratio) unless
    `policy` (a saved policy or a `Policy`) is given; "random" and "magnitude" are baselines.
    """
    if out is None:
        raise ValueError("compress needs an output folder (out / --out)")
    all_ratios = parse_ratios(ratio, ratios)
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    if selection not in MODES:
        raise ValueError(f"unknown selection {selection!r}; choose one of {', '.join(MODES)}")
    if policy is not None and selector != "prunenet":
        raise ValueError(f"a policy (--policy) applies to selector 'prunenet', not {selector!r}")
    # Ratio 0 keeps every row: it needs no selection, so no fit when it is the only ratio.
    needs_fit = selector == "prunenet" and policy is None and (fit_ratio is not None or any(all_ratios))
    if needs_fit:
        options = _fit_options(episodes=episodes, lr=lr, gamma=gamma, seed=seed, reg_weight=reg_weight, engine=engine)
        fit_ratio = check_ratio(next(r for r in all_ratios if r) if fit_ratio is None else fit_ratio)
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
        weights = load_scored(checkpoint, plan, dev)
    for r in all_ratios:
        kept_width(plan.n, r, align)  # every ratio must leave rows before anything is fitted or written
    if loaded_policy is not None:
        try:
            loaded_policy.check_shape(weights.shape[1], weights.shape[2])
        except ValueError as exc:
            raise ValueError(f"policy {str(policy)!r}: {exc}") from None
    if needs_fit:
        with timer.phase("fit"):
            loaded_policy = train_policy(weights, fit_ratio, options, checkpoint.model_type, progress)
        if policy_out is not None:
            loaded_policy.save(policy_out, overwrite)
    if loaded_policy is not None:
        loaded_policy = loaded_policy.to(dev)
    before = describe(checkpoint, family, plan)
    if len(outputs) > 1:
        Path(out).mkdir(exist_ok=True)
    results = []
    for r, path in zip(all_ratios, outputs):
        k = kept_width(plan.n, r, align)
        with timer.phase("select"):
            if k == plan.n:
                kept = all_rows(weights)
            else:
                kept = select_rows(weights, k, selector, loaded_policy, selection, seed)
        provenance = {
            "ratio": r, "ffn_width_before": plan.n, "ffn_width_after": k, "selector": selector,
            "selection": selection if selector == "prunenet" else None, "seed": seed, "align": align,
            "policy": _fit_summary(loaded_policy) if loaded_policy is not None else None,
        }
        with timer.phase("write"):
            write_compressed(checkpoint, plan, kept.cpu(), path, overwrite, provenance, progress)
        results.append({
            "ratio": r, "out": str(path), "ffn_width_before": plan.n, "ffn_width_after": k,
            "parameters_before": before["parameters"], "parameters_after": Checkpoint(path).num_parameters(),
        })
    report = {
        "command": "compress",
        "model": {"name": str(model), **before},
        "device": str(dev),
        "options": {
            "ratios": all_ratios, "selector": selector, "selection": selection, "align": align, "seed": seed,
            "policy": str(policy) if isinstance(policy, (str, os.PathLike)) else None,
            **({"fit_ratio": fit_ratio, **asdict(options)} if needs_fit else {}),
        },
        "fit": _fit_summary(loaded_policy) if needs_fit else None,
        "outputs": results,
        "timings_s": timer.as_dict(),
        "peak_rss_mb": peak_rss_mb(),
    }
    save_report(json_path, report)
    return report


def info(target: str | os.PathLike = DEFAULT_MODEL) -> dict:
    """What a model (folder or alias) or a saved policy file holds."""
    if isinstance(target, (str, os.PathLike)) and str(target).endswith(".safetensors") and Path(target).is_file():
        policy = load_policy(target)
        return {"kind": "policy", "path": str(target), "n": policy.n, "h": policy.h, **policy.metadata}
    checkpoint, family = open_model(target)
    return {"kind": "model", "name": str(target), **describe(checkpoint, family)}
