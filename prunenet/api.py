"""The Python API: `fit`, `score`, `compress` and `info`, mirroring the CLI commands of the same names.

Each function takes the model (a local folder, the embedded model's alias or a Hugging Face Hub id), where
its outputs go, and the options of `config.py` as keyword arguments; it checks everything it can before any
heavy work, and returns (and optionally writes as JSON) a report of what it did. `compress` reads as the method:

    validate -> open the model -> select rows (weights, or probes and their statistics) -> repair -> write
"""
from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

import prunenet_kernels as K

from .atomic import atomic_write, check_output
from .calibration.driver import MODES, ProbeSelection, select_on_probes
from .calibration.layer_stream import CheckpointStream, LayerStream
from .calibration.probes import Probes, chat_turn, get_probes, load_tokenizer, probe_batches, probes_of_model
from .config import CompressConfig, Config, FitConfig
from .devices import compute_dtype, resolve_device
from .healing import distill_kl
from .memory import FLOAT32_BYTES, require_memory
from .model import open_model
from .model.checkpoint import Checkpoint
from .model.embedded import DEFAULT_MODEL, cache_root
from .model.families import Family, family_for
from .model.ffn_map import SlicePlan, TensorSource, check_scored_finite, describe, load_scored
from .model.in_memory import ModelTensors, slice_in_place
from .progress import progress_bar
from .quality_target import MAX_KL_TOKENS, WidthSearch, check_max_kl, search_width, width_grid
from .ratios import check_ratio, kept_width, output_paths, parse_ratios
from .repairs import REPAIRS
from .report import PhaseTimer, check_json_path, peak_rss_mb, save_report
from .scores import StoredScores
from .selectors import Run, Selector, StatisticsSelector, WeightSelector, make_selector
from .selectors.policy.fit import fit_summary, train_policy
from .selectors.policy.network import Policy, load_policy
from .stages.pipeline import StagePipeline, load_teacher, sliced_copy, stored_names, stored_tensors
from .writer import output_dtype, write_compressed

F = TypeVar("F", bound=Callable[..., Any])


def takes_options(config: type[Config]) -> Callable[[F], F]:
    """Show `config`'s options as the keyword arguments of the decorated function (for `help` and IDEs)."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        options = [inspect.Parameter(spec.keyword, inspect.Parameter.KEYWORD_ONLY, default=spec.default,
                                     annotation=spec.hint) for spec in config.specs()]
        function.__signature__ = signature.replace(parameters=own + options)  # type: ignore[attr-defined]
        return function

    return decorate


@dataclass
class FitResult:
    policy: Policy
    report: dict


@dataclass
class _Start:
    """What every command has once its outputs are checked and its model opened (or, for `prune_`, given)."""

    json_path: Path | None
    device: torch.device
    timer: PhaseTimer
    checkpoint: TensorSource
    family: Family
    plan: SlicePlan
    model: torch.nn.Module | None = None  # a loaded model, pruned in place
    tokenizer: Any = None

    def describe(self, model) -> dict:
        return {"name": str(model), **describe(self.checkpoint, self.family, self.plan)}

    def stream(self) -> LayerStream:
        if self.model is not None:
            return LayerStream.of_model(self.model, self.family)
        assert isinstance(self.checkpoint, Checkpoint)
        return CheckpointStream(self.checkpoint, self.family, self.device, compute_dtype(self.device))


def _start(model, revision: str | None, json_path, device: str, progress: bool) -> _Start:
    """Check the report path, pick the device, open the model (timed as "resolve")."""
    json_path = check_json_path(json_path)
    dev = resolve_device(device)
    timer = PhaseTimer(dev)
    with timer.phase("resolve"):
        checkpoint, family = open_model(model, progress, revision)
    return _Start(json_path, dev, timer, checkpoint, family, SlicePlan(checkpoint, family))


def _finish(start: _Start, report: dict) -> dict:
    report.update(timings_s=start.timer.as_dict(), peak_rss_mb=peak_rss_mb())
    save_report(start.json_path, report)
    return report


@takes_options(FitConfig)
def fit(
    model: str | os.PathLike = DEFAULT_MODEL,
    ratio: float = 0.3,
    *,
    out: str | os.PathLike | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    **options,
) -> FitResult:
    """Train the paper's policy on `model`'s FFN weights at `ratio`; save it to `out` (.safetensors) if given."""
    check_ratio(ratio)
    config = FitConfig.from_options(options)
    if out is not None:
        check_output(out, overwrite)
    start = _start(model, revision, json_path, config.device, progress)
    with start.timer.phase("load"):
        weights = load_scored(start.checkpoint, start.plan, start.device)
    with start.timer.phase("fit"):
        policy = train_policy(weights, ratio, config, start.checkpoint.model_type, progress)
    if out is not None:
        with start.timer.phase("save"):
            policy.save(out, overwrite)
    report = _finish(start, {
        "command": "fit", "model": start.describe(model), "device": str(start.device),
        "options": {"ratio": ratio, **config.to_options()}, "policy": str(out) if out is not None else None,
        "fit": fit_summary(policy),
    })
    return FitResult(policy, report)


@dataclass
class _Selection:
    """How one `compress` or `score` call chooses rows, decided from its options before any work."""

    config: CompressConfig
    selector: Selector
    stored: StoredScores | None  # a ranking read from a scores file
    ratios: list[float]
    # Read once per call, however many widths it tries (--max-kl compresses several).
    _probes: Probes | None = field(default=None, init=False, repr=False)
    _model_prepared: bool = field(default=False, init=False, repr=False)
    _scored_checked: bool = field(default=False, init=False, repr=False)

    @classmethod
    def plan(cls, options: dict, ratios: list[float]) -> _Selection:
        config = CompressConfig.from_options(options)
        selector = make_selector(config.selector, config.method, config.seed)
        stored = selector.stored_scores(config.scores) if config.scores is not None else None
        return cls(config, selector, stored, ratios)

    @property
    def ranks_on_statistics(self) -> bool:
        # Sequential statistics rank per ratio, so a stored (one-shot) ranking serves only its probes then.
        rerank = self.stored is not None and MODES[self.config.statistics].sequential
        return self.selector.needs == "statistics" and (self.stored is None or rerank)

    @property
    def ranks_on_model(self) -> bool:
        return self.ranks_on_statistics and isinstance(self.selector, StatisticsSelector) and self.selector.uses_model

    @property
    def needs_probes(self) -> bool:
        # Ratio 0 keeps every row: nothing to rank or repair.
        return any(self.ratios) and (REPAIRS[self.config.repair].needs_statistics or self.ranks_on_statistics
                                     or self.ranks_on_model)

    def check_model_memory(self, start: _Start) -> None:
        """Refuse in one line, before any work, a selector that runs the whole model where it does not fit."""
        if self.ranks_on_model and start.model is None:
            # The float32 weights, and about as much again for the probes' activations kept for the backward pass.
            require_memory(2 * FLOAT32_BYTES * start.checkpoint.num_parameters(), start.device,
                           f"selector {self.config.selector!r} runs the whole model in float32")

    def prepare_model(self, start: _Start, progress: bool) -> None:
        """Run the whole original model on the probes for a selector that `uses_model` (once per call)."""
        assert isinstance(self.selector, StatisticsSelector)
        if not self._model_prepared:
            tokens = self.probes(start, progress).tokens
            # A checkpoint's original is loaded for this only, and let go before the statistics pass.
            model = start.model if start.model is not None else load_teacher(start.checkpoint.path, start.device)
            self.selector.prepare_model(model, start.plan, tokens, progress)
            self._model_prepared = True

    @property
    def needs_weights(self) -> bool:
        return self.selector.needs == "weights" and self.stored is None

    def probes(self, start: _Start, progress: bool) -> Probes:
        if self.stored is not None and self.stored.probes is not None:
            return self.stored.probes
        if self._probes is None:
            if start.model is not None:
                self._probes = probes_of_model(start.model, start.tokenizer, self.config.probes, self.config.seed,
                                               progress)
            else:
                assert isinstance(start.checkpoint, Checkpoint)
                self._probes = get_probes(start.checkpoint, self.config.probes, self.config.seed, cache_root(),
                                          start.device, progress)
        return self._probes

    def rows(self, start: _Start, widths: dict[float, int], overwrite: bool,
             progress: bool) -> tuple[ProbeSelection, Probes | None]:
        """The kept rows of every sliced ratio and the repaired output matrices; and the probes used."""
        timer = start.timer
        with timer.phase("load"):
            weights = load_scored(start.checkpoint, start.plan, start.device) if self.needs_weights else None
            if weights is None and not self._scored_checked:
                check_scored_finite(start.checkpoint, start.plan)
                self._scored_checked = True
        if self.stored is not None:
            self.stored.check(start.plan)
        if weights is not None:
            self.selector.prepare(weights, self.ratios, Run(timer, progress, overwrite, start.checkpoint.model_type))
        sliced = {r: k for r, k in widths.items() if k < start.plan.n}
        MODES[self.config.statistics].check(start.family)
        repair = REPAIRS[self.config.repair].configured(self.config)
        repair.check(start.family)
        probe_set = None
        if self.needs_probes and sliced:
            with timer.phase("probes"):
                probe_set = self.probes(start, progress)
        with timer.phase("select"):
            given = None
            if self.stored is not None and not self.ranks_on_statistics:
                given = {r: K.topk_rows(self.stored.priority, k) for r, k in sliced.items()}
            elif isinstance(self.selector, WeightSelector) and weights is not None:
                ranking = self.selector.rank(weights, sorted(set(sliced.values())))
                given = {r: ranking.rows(k) for r, k in sliced.items()}
            elif self.ranks_on_model and sliced:
                self.prepare_model(start, progress)
        if probe_set is None:
            return ProbeSelection(kept=given or {}), None
        with timer.phase("statistics"):
            stream = start.stream()
            ranker = self.selector if isinstance(self.selector, StatisticsSelector) and given is None else None
            chosen = select_on_probes(stream, probe_batches(probe_set.tokens), start.plan, sliced, ranker, given,
                                      repair, MODES[self.config.statistics], progress)
        return chosen, probe_set


def _search_width(selection: _Selection, start: _Start, max_kl: float, tokens: int, overwrite: bool,
                  progress: bool) -> tuple[WidthSearch, ProbeSelection, Probes | None, torch.nn.Module, dict]:
    """The narrowest width whose compressed model stays within `max_kl` of the original on held-out self text;
    its rows and repaired matrices, the probes used, and the original it loaded (float32) with its
    `stored_names`, for the stages to reuse."""
    assert isinstance(start.checkpoint, Checkpoint)
    config, n = selection.config, start.plan.n
    # Another seed than the probes' (`seed`): the KL is measured on text the selection never saw.
    held_out = get_probes(start.checkpoint, replace(config.probes, tokens=tokens, length=None), config.seed + 1,
                          cache_root(), start.device, progress).tokens
    if selection.ranks_on_model:  # once, before the original is held for the search
        selection.prepare_model(start, progress)
    teacher = load_teacher(start.checkpoint.path, start.device)
    names = stored_names(teacher, start.checkpoint.weight_map)
    found: dict[int, tuple[float, ProbeSelection, Probes | None]] = {}
    bar = progress_bar(total=len(width_grid(n, config.align)).bit_length(), desc=f"max_kl {max_kl} search",
                       unit="width", disable=not progress)

    def kl_of(k: int) -> float:
        r = 1 - k / n
        selection.ratios = [r]
        chosen, probe_set = selection.rows(start, {r: k}, overwrite, progress=False)
        student = sliced_copy(teacher, start.family, chosen.kept[r], chosen.replacements.get(r) or {}, names)
        kl = distill_kl(student, teacher, held_out)
        del student
        found[k] = (r, chosen, probe_set)
        bar.set_postfix(width=k, kl=f"{kl:.4f}", refresh=False)
        bar.update()
        return kl

    try:
        search = search_width(n, max_kl, kl_of, config.align)
    finally:
        bar.close()
    if search.width == n:  # not even the first width tried stayed within max_kl: nothing is removed
        return search, ProbeSelection(), None, teacher, names
    r, chosen, probe_set = found[search.width]
    # Keyed by the search's rounded ratio, as the outputs are.
    return search, ProbeSelection({search.ratio: chosen.kept[r]}, {search.ratio: chosen.replacements.get(r, {})}), \
        probe_set, teacher, names


def check_outputs(out: Path, outputs: list[Path], overwrite: bool) -> None:
    if len(outputs) == 1:
        check_output(out, overwrite)
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} must be a folder to hold one output per ratio")
    check_output(out, True)  # not a link; its folder can be made
    for path in outputs:
        check_output(path, overwrite)


@takes_options(CompressConfig)
def compress(
    model: str | os.PathLike = DEFAULT_MODEL,
    out: str | os.PathLike | None = None,
    ratio: float | None = None,
    *,
    ratios: Sequence[float] | str | None = None,
    max_kl: float | None = None,
    max_kl_tokens: int = MAX_KL_TOKENS,
    revision: str | None = None,
    overwrite: bool = False,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Compress `model` at one ratio (into `out`) or several (into `out/ratio-R` each) from one ranking, or at
    the largest ratio whose KL against the original stays within `max_kl` nats (measured on `max_kl_tokens`
    tokens of held-out text the original writes itself; see `quality_target`).

    By default rows are ranked by their activations on text the model writes itself (`probes="self"`) and
    every output matrix is refitted on those probes (`repair="lsq"`); `selector="prunenet"` is the paper's
    policy, trained first unless `policy` is given. `scores`: a file written by `score()`, ranked once.
    The options are `CompressConfig`'s; an option of a selector not in use is refused.
    """
    if out is None:
        raise ValueError("compress needs an output folder (out / --out)")
    if max_kl is not None:
        if ratio is not None or ratios is not None:
            raise ValueError(f"max_kl={max_kl!r} chooses the ratio itself: give no ratio or ratios")
        check_max_kl(max_kl, max_kl_tokens)
    all_ratios = parse_ratios(ratio, ratios) if max_kl is None else []
    selection = _Selection.plan(options, all_ratios)
    config = selection.config
    selection.selector.check_outputs(all_ratios or [0.5], overwrite)
    outputs = output_paths(out, all_ratios) if all_ratios else [Path(out)]
    check_outputs(Path(out), outputs, overwrite)

    stages = StagePipeline(config)
    start = _start(model, revision, json_path, config.device, progress)
    assert isinstance(start.checkpoint, Checkpoint)
    before = describe(start.checkpoint, start.family, start.plan)
    selection.check_model_memory(start)
    if stages:
        stages.check_memory(before["parameters"], start.device)
        if stages.text_needs_chat_template:  # refused here, not after the statistics pass
            chat_turn(load_tokenizer(start.checkpoint))
    search, teacher = None, None
    names: dict[str, str] = {}
    if max_kl is None:
        widths = {r: kept_width(start.plan.n, r, config.align) for r in all_ratios}  # every ratio leaves rows
        chosen, probe_set = selection.rows(start, widths, overwrite, progress)
    else:
        require_memory(2 * FLOAT32_BYTES * before["parameters"], start.device,
                       "max_kl measures the original and a compressed model whole, in float32,")
        if stages:  # their text is written before the search loads the original: one whole model at a time
            with start.timer.phase("stages"):
                stages.write_text(start.checkpoint, start.device, progress)
        with start.timer.phase("max_kl search"):
            search, chosen, probe_set, teacher, names = _search_width(selection, start, max_kl, max_kl_tokens,
                                                                      overwrite, progress)
        all_ratios, widths = [search.ratio], {search.ratio: search.width}
        if not stages:
            teacher = None  # not held while the output is written
    if stages and teacher is None and any(k < start.plan.n for k in widths.values()):
        with start.timer.phase("stages"):
            stages.write_text(start.checkpoint, start.device, progress)
            teacher = load_teacher(start.checkpoint.path, start.device)
            names = stored_names(teacher, start.checkpoint.weight_map)
    if len(outputs) > 1:
        Path(out).mkdir(parents=True, exist_ok=True)
    results = []
    for r, path in zip(all_ratios, outputs):
        k, n = widths[r], start.plan.n
        kept = chosen.kept[r] if k < n else start.plan.every_row()
        replacements, stage_reports = chosen.replacements.get(r), None
        if stages and teacher is not None and k < n:  # a ratio that removes nothing is the original: no stage to run
            with start.timer.phase("stages"):
                student = sliced_copy(teacher, start.family, kept, replacements or {}, names)
                stage_reports = stages.run(teacher, student, progress)
                replacements = stored_tensors(student, names)
                del student
        provenance = {
            "ratio": r, "ffn_width_before": n, "ffn_width_after": k, **config.to_options(),
            "repair": config.repair if k < n else "none",
            "probes": probe_set.info if probe_set is not None else None,
            "policy": selection.selector.provenance(), "stages": stage_reports,
            "max_kl": search.as_dict() if search is not None else None,
        }
        with start.timer.phase("write"):
            parameters = write_compressed(start.checkpoint, start.plan, kept.cpu(), path, overwrite, provenance,
                                          progress, replacements, output_dtype(config.dtype))
        results.append({"ratio": r, "out": str(path), "ffn_width_before": n, "ffn_width_after": k,
                        "parameters_before": before["parameters"], "parameters_after": parameters,
                        "stages": stage_reports})
    return _finish(start, {
        "command": "compress", "model": {"name": str(model), **before}, "device": str(start.device),
        "options": {"ratios": all_ratios, **config.to_options()} if search is None else
                   {"max_kl": max_kl, "max_kl_tokens": max_kl_tokens, **config.to_options()},
        "max_kl": search.as_dict() if search is not None else None,
        "fit": selection.selector.fit_report(),
        "probes": probe_set.info if probe_set is not None else None,
        "outputs": results,
    })


@takes_options(CompressConfig)
def prune_(
    model: torch.nn.Module,
    ratio: float,
    *,
    tokenizer: Any = None,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Slice a loaded model's FFNs in place at `ratio`, on the device and in the dtype it sits on, with the
    selectors, probes, statistics and repairs of `compress` (the same code, reading the model's modules
    instead of checkpoint tensors); `model.config` gets the new width, so `model.save_pretrained` writes a
    checkpoint that plain `from_pretrained` loads. Self-written probes need the model's `tokenizer`.
    Returns the report; its `outputs[0]["kept_rows"]` holds the rows kept in every layer.
    """
    ratio = check_ratio(ratio)
    selection = _Selection.plan(options, [ratio])
    config = selection.config
    for keyword, value, why in (("dtype", config.dtype, "convert the model itself with model.to(dtype)"),
                                ("device", config.device, "the model is pruned where it sits")):
        if value != "auto":
            raise ValueError(f"{keyword}={value!r} applies to models read from disk; {why}")
    selection.selector.check_outputs([ratio], overwrite=False)
    tensors = ModelTensors(model)
    family = family_for(tensors.model_type)
    device = next(model.parameters()).device
    start = _Start(check_json_path(json_path), device, PhaseTimer(device), tensors, family,
                   SlicePlan(tensors, family), model=model, tokenizer=tokenizer)
    n, k = start.plan.n, kept_width(start.plan.n, ratio, config.align)
    before = describe(tensors, family, start.plan)
    stages, teacher, stage_reports = StagePipeline(config), None, None
    if stages and k < n:
        floating = {p.dtype for p in model.parameters() if p.is_floating_point()}
        if floating != {torch.float32}:
            raise ValueError(f"stage(s) {', '.join(stages.names)} train the model in float32, and it holds "
                             f"{', '.join(sorted(map(str, floating)))}: convert it first with model.float()")
        stages.check_memory(before["parameters"], device)
        if stages.text_needs_chat_template and tokenizer is not None:  # without one the probes are refused first
            chat_turn(tokenizer)
        teacher = copy.deepcopy(model).eval()  # before the statistics pass, which may change the model's layers
    was_training = model.training
    chosen, probe_set = selection.rows(start, {ratio: k}, False, progress)
    model.train(was_training)
    kept = chosen.kept[ratio] if k < n else start.plan.every_row()
    with start.timer.phase("slice"):
        slice_in_place(model, start.plan, kept.to(device), chosen.replacements.get(ratio))
    if teacher is not None:
        with start.timer.phase("stages"):
            text_config = stages.text_config()
            if text_config is not None:
                stages.text = probes_of_model(teacher, tokenizer, text_config, config.seed, progress)
            stage_reports = stages.run(teacher, model, progress)
        del teacher
    return _finish(start, {
        "command": "prune_", "model": {"name": type(model).__name__, **before}, "device": str(device),
        "options": {"ratio": ratio, **config.to_options()}, "fit": selection.selector.fit_report(),
        "probes": probe_set.info if probe_set is not None else None,
        "outputs": [{"ratio": ratio, "ffn_width_before": n, "ffn_width_after": k,
                     "parameters_before": before["parameters"],
                     "parameters_after": ModelTensors(model).num_parameters(), "kept_rows": kept.cpu().tolist(),
                     "stages": stage_reports}],
    })


@takes_options(CompressConfig)
def score(
    model: str | os.PathLike = DEFAULT_MODEL,
    out: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    overwrite: bool = False,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Rank `model`'s rows once and save the ranking to `out`; `compress(..., scores=out)` slices it at any ratio.

    For a selector that trains a policy (the paper's) the file is the fitted policy (trained at
    `fit_ratio`, default 0.3); for the others it holds each row's keep priority (one-shot statistics for
    the activation rankers) and the probe tokens. Options that only matter when slicing (`repair`,
    `align`, ...) are accepted, so one set of options serves both calls, and ignored here.
    """
    if out is None:
        raise ValueError("score needs an output file (out / --out)")
    selection = _Selection.plan(options, [])
    config, selector = selection.config, selection.selector
    if selector.trains_policy:
        fit_options = {k: v for k, v in config.to_options().items() if k in {s.keyword for s in FitConfig.specs()}}
        result = fit(model, selector.training_ratio([]), out=out, revision=revision, overwrite=overwrite,
                     json_path=json_path, progress=progress, **fit_options)
        return {**result.report, "command": "score", "selector": config.selector, "scores": str(out)}
    check_output(out, overwrite)
    start = _start(model, revision, json_path, config.device, progress)
    probe_set = None
    selection.check_model_memory(start)
    with start.timer.phase("score"):
        if isinstance(selector, StatisticsSelector):
            probe_set = selection.probes(start, progress)
            if selection.ranks_on_model:
                selection.prepare_model(start, progress)
            stream = start.stream()
            # One one-shot pass, no repair, ranking every row (down to width 1) so that any ratio can be sliced.
            priority = select_on_probes(stream, probe_batches(probe_set.tokens), start.plan, {0.0: start.plan.n},
                                        selector, None, REPAIRS["none"], MODES["oneshot"], progress,
                                        rank_down_to=1).priority
        else:
            assert isinstance(selector, WeightSelector)
            priority = selector.rank(load_scored(start.checkpoint, start.plan, start.device), []).priority
    assert priority is not None, f"selector {config.selector!r} gave no nested priority to store"
    stored = StoredScores(config.selector, priority.cpu(), probe_set,
                          {"model": describe(start.checkpoint, start.family, start.plan), "seed": config.seed})
    with start.timer.phase("save"):
        atomic_write(Path(out), overwrite, stored.save)
    return _finish(start, {
        "command": "score", "selector": config.selector, "scores": str(out), "model": start.describe(model),
        "device": str(start.device), "options": config.without_slicing(),
        "probes": probe_set.info if probe_set is not None else None,
    })


def info(target: str | os.PathLike = DEFAULT_MODEL, revision: str | None = None) -> dict:
    """What a model (folder, alias or Hub id) or a saved policy file holds."""
    if isinstance(target, (str, os.PathLike)) and str(target).endswith(".safetensors") and Path(target).is_file():
        policy = load_policy(target)
        return {"kind": "policy", "path": str(target), "n": policy.n, "h": policy.h, **policy.metadata}
    checkpoint, family = open_model(target, True, revision)  # a first use of the embedded model says so
    return {"kind": "model", "name": str(target), **describe(checkpoint, family)}


__all__ = ["FitResult", "compress", "fit", "info", "prune_", "score", "takes_options"]
