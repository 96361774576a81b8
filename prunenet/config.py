"""Every option of `fit`, `score` and `compress`, written once, as typed dataclasses.

A field carries its default, its help text and, where it differs from the field's name, the keyword it
goes by: the Python API's keyword arguments, the command line's flags and help, the reports' `options`,
each output's provenance and the farm's job keys are all derived from these classes. A config checks
the types of its values from its annotations, then its own ranges (`check`), and reads back from the
flat keyword dict it writes (`to_options` / `from_options`), so a report's options rerun the same job.

`CompressConfig` holds the options shared by every method and the options of the one selector in use,
an instance of that selector's own config class (`Selector.options`). An option that belongs to a
method not in use is refused, naming the option and its method. Imports nothing heavy: the method
registries are imported when a config is built.
"""
from __future__ import annotations

import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

DEFAULT_PROBE_LENGTH = 128  # tokens per probe sequence unless asked, or the model's context if shorter
SELF = "self"  # probe source: text the model writes itself

C = TypeVar("C", bound="Config")


def option(default: Any, help: str, *, keyword: str | None = None, flag: str | None = None,
           slicing: bool = False) -> Any:
    """A config field. `keyword`: its name in the API, plans and reports (default the field's name);
    `flag`: its command-line flag (default --keyword-with-dashes); `slicing`: it matters only when a
    model is sliced (`score` accepts and ignores it, so one set of options serves both commands)."""
    return field(default=default, metadata={"help": help, "keyword": keyword, "flag": flag, "slicing": slicing})


def seed_option() -> Any:
    return option(0, "seed of every random choice: probes, random rows, the policy and its samples")


def device_option() -> Any:
    return option("auto", "auto (CUDA if available), cpu, cuda or cuda:N")


@dataclass(frozen=True)
class OptionSpec:
    """One flat option as the API, the CLI and the plans see it."""

    keyword: str
    flag: str
    default: Any
    hint: Any  # the annotation, resolved
    help: str
    slicing: bool
    owner: str | None  # "selector prunenet", ... or None for an option of every method

    @property
    def choices(self) -> tuple | None:
        return _literal_choices(self.hint)


class Config:
    """Base of the option dataclasses: checks from annotations, flat keywords, a JSON round trip."""

    def check(self) -> None:
        """Ranges and relations between fields; types are checked before this."""

    def validate(self: C) -> C:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Config):  # a group, or the selector's own options
                value.validate()
            else:
                _check_type(_keyword(f), value, hints[f.name])
        self.check()
        return self

    @classmethod
    def specs(cls) -> list[OptionSpec]:
        """The flat options of this config (nested configs' fields included), in declaration order."""
        found = []
        for f, hint in _option_fields(cls):
            if _is_group(hint):
                found.extend(hint.specs())
            else:
                keyword = _keyword(f)
                found.append(OptionSpec(keyword, f.metadata["flag"] or "--" + keyword.replace("_", "-"),
                                        f.default, hint, f.metadata["help"], f.metadata["slicing"], None))
        return found

    def to_options(self) -> dict[str, Any]:
        """The flat keyword dict of every value (JSON-ready): what `from_options` reads back."""
        options: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Config):  # a group, or the selector's own options
                options.update(value.to_options())
            else:
                options[_keyword(f)] = value
        return options

    @classmethod
    def from_options(cls: type[C], options: Mapping[str, Any]) -> C:
        """Build and validate from flat keywords; an unknown keyword is a TypeError naming it."""
        known = [spec.keyword for spec in cls.specs()]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return cls._build(options).validate()

    @classmethod
    def _build(cls: type[C], options: Mapping[str, Any]) -> C:
        values: dict[str, Any] = {}
        for f, hint in _option_fields(cls):
            if _is_group(hint):
                values[f.name] = hint._build(options)
            elif _keyword(f) in options:
                value = options[_keyword(f)]
                values[f.name] = os.fspath(value) if isinstance(value, os.PathLike) else value
        return cls(**values)


@dataclass(frozen=True)
class NoOptions(Config):
    """The config of a method that has no options of its own."""


@dataclass(frozen=True)
class ProbeConfig(Config):
    """Which text the statistics are taken on: the model's own, or a file of the user's."""

    source: str = option(SELF, "probe text: self (the model writes its own, no data needed) or a UTF-8 text "
                               "file / JSONL file with a \"text\" field per line", keyword="probes")
    tokens: int = option(8192, "probe token budget", keyword="probe_tokens")
    length: int | None = option(None, f"tokens per probe sequence (default {DEFAULT_PROBE_LENGTH}, or the "
                                      "model's context if shorter)", keyword="probe_length")
    start: Literal["bos", "chat"] = option(
        "bos", "how self probes begin: bos (the model picks its first word) or chat (the chat template's user "
               "turn: the model writes a question, then its own answer)", keyword="probe_start")
    temperature: float = option(1.0, "sampling temperature of self-written probes (below 1: likelier, less "
                                     "varied text)", keyword="probe_temperature")
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", "dtype the probe writer samples in, where prunenet loads it: auto (bfloat16, on a CPU too), "
                "bfloat16 or float32 (a model already in memory samples in its own dtype under auto, else in a "
                "converted copy)", keyword="probe_dtype")
    model: str | None = option(None, "self probes written by this model instead (a folder, alias or Hub id "
                                     "sharing the tokenizer, e.g. a smaller model of the family: generation "
                                     "needs the whole writer in memory)", keyword="probe_model")

    def check(self) -> None:
        if self.tokens <= 0:
            raise ValueError(f"probe token budget {self.tokens} must be positive")
        if self.length is not None and self.length < 2:
            raise ValueError(f"probe length {self.length} must be at least 2 tokens")
        if self.tokens < (self.length or 2):
            raise ValueError(f"probe token budget {self.tokens} is less than one sequence of {self.length} tokens")
        if not (0 < self.temperature <= 10):
            raise ValueError(f"probe temperature {self.temperature} must be in (0, 10]")
        if self.source != SELF and self.model is not None:
            raise ValueError(f"probe_model {self.model!r} writes self probes; the probes come from {self.source!r}")
        if self.source != SELF:
            path = Path(self.source)
            if not path.is_file():
                raise ValueError(f"probe file {self.source!r} does not exist")
            if path.stat().st_size == 0:
                raise ValueError(f"probe file {self.source!r} is empty")


@dataclass(frozen=True)
class TrainingConfig(Config):
    """How the paper's policy is trained (REINFORCE on the spectral reward)."""

    episodes: int = option(20, "REINFORCE episodes")
    lr: float = option(1e-3, "AdamW learning rate")
    gamma: float = option(0.99, "per-layer reward discount")
    reg_weight: float = option(0.0, "weight of the reference's KLD regulariser on row scores (0: off)")
    engine: Literal["exact", "topq"] = option(
        "exact", "reward engine: exact full-spectrum KS, or topq: KS of the top 256 singular values by randomized "
                 "SVD, a different statistic meant for GPUs and wide models (slower than exact on CPU)")

    def check(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes!r} must be a positive int")
        for name in ("lr", "gamma", "reg_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a finite number")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} must be > 0")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r} must be in (0, 1]")
        if self.reg_weight < 0:
            raise ValueError(f"reg_weight={self.reg_weight!r} must be >= 0")


@dataclass(frozen=True)
class FitConfig(TrainingConfig):
    """`fit`: the policy's training options, the seed and the device."""

    seed: int = seed_option()
    device: str = device_option()


@dataclass(frozen=True)
class HealOptions(Config):
    """Self-distillation after slicing: the compressed model trained towards the original on its own text."""

    tokens: int = option(0, "heal: train each compressed model on this many tokens of text the original writes "
                            "itself, towards the original's next-token distributions (0: off). Needs the "
                            "original and one compressed model whole in memory, in float32", keyword="heal_tokens",
                         slicing=True)
    lr: float = option(1e-4, "heal: AdamW learning rate (constant)", keyword="heal_lr", slicing=True)
    train: Literal["ffn_norms", "ffn", "norms", "all"] = option(
        "ffn_norms", "heal: which parameters train", keyword="heal_train", slicing=True)
    length: int = option(128, "heal: tokens per training sequence", keyword="heal_length", slicing=True)
    batch_size: int = option(4, "heal: sequences per optimizer step", keyword="heal_batch_size", slicing=True)
    top_k: int = option(256, "heal: the original's top-k log-probabilities cached once as the targets (0: its "
                             "full logits every step)", keyword="heal_top_k", slicing=True)
    start: Literal["probes", "bos", "chat"] = option(
        "probes", "heal: how the original's training text begins: probes (as the probes do, --probe-start), bos "
                  "(the original picks its first word) or chat (the chat template's user turn: the original "
                  "writes a question and answers it, the format questions are asked in)",
        keyword="heal_start", slicing=True)
    temperature: float | None = option(
        None, "heal: sampling temperature of the original's training text (default: the probes', "
              "--probe-temperature)", keyword="heal_temperature", slicing=True)
    # bfloat16 healed the embedded model as well as float32 (pydoc PPL 24.46 against 24.52 at 0.2, 29.48
    # against 29.45 at 0.3, 32768 tokens), its training steps in 0.59x the time and the original's targets
    # in 0.62x, on a 2-core CPU with bfloat16 units; on one without them, emulated, 10-60x slower.
    precision: Literal["auto", "float32", "bfloat16"] = option(
        "auto", "heal: the matrix products of the forward passes (the original's targets and every training "
                "step): bfloat16 under autocast, float32, or auto: bfloat16 where the device has bfloat16 units "
                "(a GPU's, a CPU's AVX-512 or AMX), float32 where it would emulate them (weights, updates and "
                "the KL stay float32 either way)",
        keyword="heal_precision", slicing=True)

    def check(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"heal_tokens={self.tokens!r} must be 0 (off) or positive")
        for name in ("length", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"heal_{name}={getattr(self, name)!r} must be a positive int")
        if self.length < 2:
            raise ValueError(f"heal_length={self.length!r} must be at least 2 tokens (one to predict)")
        if self.tokens and self.tokens < self.length * self.batch_size:
            raise ValueError(f"heal_tokens={self.tokens!r} is less than one step of heal_batch_size x heal_length "
                             f"= {self.batch_size * self.length}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"heal_lr={self.lr!r} must be a positive finite number")
        if self.top_k < 0:
            raise ValueError(f"heal_top_k={self.top_k!r} must be 0 (full logits) or positive")
        if self.temperature is not None and not (0 < self.temperature <= 10):
            raise ValueError(f"heal_temperature={self.temperature!r} must be in (0, 10]")


@dataclass(frozen=True)
class RefineOptions(Config):
    """The options of repair 'refine': each sliced FFN trained towards its unpruned output on the probes.
    Other repairs refuse them."""

    epochs: int = option(4, "refine: passes over the probe tokens per layer (the best on held-out probe tokens "
                            "is kept)", keyword="refine_epochs", slicing=True)
    lr: float = option(3e-4, "refine: Adam learning rate", keyword="refine_lr", slicing=True)
    batch_tokens: int = option(512, "refine: probe tokens per optimizer step", keyword="refine_batch_tokens",
                               slicing=True)

    def check(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"refine_epochs={self.epochs!r} must be a positive int")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"refine_lr={self.lr!r} must be a positive finite number")
        if self.batch_tokens < 1:
            raise ValueError(f"refine_batch_tokens={self.batch_tokens!r} must be a positive int")


@dataclass(frozen=True)
class CompressConfig(Config):
    """`compress` and `score`: the options of every method, and the selector's own (`method`)."""

    selector: str = option("activation", "how rows are chosen; see each selector's options below")
    repair: str = option("lsq", "what is done to the output matrix once its columns are sliced", slicing=True)
    statistics: str = option("sequential", "how the activation statistics are taken", slicing=True)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    heal: HealOptions = field(default_factory=HealOptions)
    refine: RefineOptions = field(default_factory=RefineOptions)
    scores: str | None = option(None, "a scores file written by `prunenet score`: rank no rows again", slicing=True)
    align: int | None = option(None, "round the kept FFN width down to a multiple (e.g. 64): never fewer rows "
                                     "removed than the ratio asks", slicing=True)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = option(
        "auto", "dtype of the output's floating-point tensors (auto: each as stored in the model); it changes "
                "only what is written, never which rows are kept", slicing=True)
    seed: int = seed_option()
    device: str = device_option()
    # The selector's own options: an instance of `SELECTORS[selector].options`.
    method: Config = field(default_factory=NoOptions, metadata={"method": True})

    @classmethod
    def specs(cls) -> list[OptionSpec]:
        from .selectors import SELECTORS

        own = super().specs()
        return own + [replace(spec, owner=f"selector {name!r}")
                      for name, selector in SELECTORS.items() for spec in selector.options.specs()]

    @classmethod
    def _build(cls, options: Mapping[str, Any]) -> CompressConfig:
        from .selectors import SELECTORS

        selector = options.get("selector", cls.selector)
        if selector not in SELECTORS:
            raise ValueError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
        method = SELECTORS[selector].options
        mine = {spec.keyword for spec in method.specs()}
        for spec in cls.specs():
            if spec.keyword in options and spec.owner is not None and spec.keyword not in mine:
                raise ValueError(f"option {spec.keyword} ({spec.flag}) applies to {spec.owner} only, not to the "
                                 f"selector in use, {selector!r}")
        config = super()._build({k: v for k, v in options.items() if k not in mine})
        return replace(config, method=method._build({k: v for k, v in options.items() if k in mine}))

    def check(self) -> None:
        from .calibration.driver import MODES
        from .repairs import REPAIRS
        from .selectors import SELECTORS

        for what, value, registry in (("selector", self.selector, SELECTORS), ("repair", self.repair, REPAIRS),
                                      ("statistics", self.statistics, MODES)):
            if value not in registry:
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(registry)}")
        if not isinstance(self.method, SELECTORS[self.selector].options):
            raise TypeError(f"selector {self.selector!r} takes {SELECTORS[self.selector].options.__name__}, "
                            f"not {type(self.method).__name__}")
        if self.repair == "refine" and MODES[self.statistics].target is not None:
            raise ValueError(f"repair 'refine' fits each layer's own FFN output, and statistics {self.statistics!r} "
                             "fits the original model's; use statistics 'sequential' or 'oneshot'")
        if self.repair != "refine":
            for spec in RefineOptions.specs():
                if self.refine.to_options()[spec.keyword] != spec.default:
                    raise ValueError(f"option {spec.keyword} ({spec.flag}) applies to repair 'refine' only, not to "
                                     f"{self.repair!r}")
        if self.align is not None and self.align < 1:
            raise ValueError(f"align={self.align!r} must be a positive int")
        if self.probes.source != SELF:  # the heal text is then drawn from the file too
            heal = self.heal.to_options()
            for spec in HealOptions.specs():
                if spec.keyword in ("heal_start", "heal_temperature") and heal[spec.keyword] != spec.default:
                    raise ValueError(f"{spec.keyword}={heal[spec.keyword]!r} shapes the text the original writes "
                                     f"itself, and the text comes from the probe file {self.probes.source!r}; "
                                     "leave it out")

    def without_slicing(self) -> dict[str, Any]:
        """The options that matter to `score` (the slicing-only ones are left out)."""
        slicing = {spec.keyword for spec in self.specs() if spec.slicing}
        return {k: v for k, v in self.to_options().items() if k not in slicing}


def _option_fields(cls: type) -> list[tuple[Field, Any]]:
    """(field, resolved annotation) of every option or group of a config class; the selector's slot is left out."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in fields(cls) if not f.metadata.get("method")]


def _is_group(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Config)


def _keyword(f: Field) -> str:
    return f.metadata.get("keyword") or f.name


def _literal_choices(hint: Any) -> tuple | None:
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return None


def _check_type(keyword: str, value: Any, hint: Any) -> None:
    """TypeError/ValueError naming `keyword` unless `value` fits `hint` (bool is never a number)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"unknown {keyword} {value!r}; choose one of {', '.join(map(str, args))}")
        return
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, (str, os.PathLike))
    elif hint is bool:
        ok = isinstance(value, bool)
    else:
        ok = True
    if not ok:
        raise TypeError(f"{keyword} must be {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}")


