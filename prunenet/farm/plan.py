"""A farm plan: which models, which ratios, which selection options, where the outputs go.

    out = "runs"                                  # output root: runs/<model>/ratio-<r>/
    models = ["./llama-a", "smollm2-135m", "org/name"]   # folders, the embedded alias, Hub ids;
                                                  # or {name = "a", path = "org/a", revision = "v1"}
    ratios = [0.1, 0.2, 0.3]
    max_kl = [0.5]                                # optional: the largest ratio within each KL bound (nats)
    selector = "random"                           # optional, as the other [options]
    eval = true                                   # or a table of prunenet.eval.evaluate options
    [options]                                     # any selection option of prunenet.compress
    seed = 0

Everything is checked here, before Ray starts or any model is read: unknown keys, the options (as
`prunenet.compress` checks them: `CompressConfig`), the evaluation options (against the keywords of
`prunenet.eval.evaluate`), ratios, duplicate model names, model folders that do not exist. What only a model can tell (a
missing shard, an unsupported family, a ratio that leaves no row) fails that model's jobs at run time.
Relative paths in a plan file are relative to the file's folder.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CompressConfig
from ..model.embedded import EMBEDDED, gguf_path
from ..model.hub import looks_like_repo_id, resolve_hub_model
from ..ratios import check_ratio

# Plan keys; every other selection option goes in [options].
PLAN_KEYS = ("out", "models", "ratios", "max_kl", "selector", "options", "eval", "retries", "cpus_per_task",
             "gpus_per_task")
# compress/evaluate arguments the farm sets itself, per job.
RESERVED_COMPRESS = ("model", "out", "ratio", "ratios", "max_kl", "scores", "overwrite", "json_path", "progress",
                     "policy_out")
RESERVED_EVAL = ("original", "compressed", "json_path", "progress")
DEFAULT_RETRIES = 3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the folder under the output root
    source: str  # an absolute folder, or the embedded alias
    fingerprint: str

    def folder(self, root: Path) -> Path:
        return root / self.name


@dataclass(frozen=True)
class Plan:
    out: Path
    models: tuple[ModelSpec, ...]
    ratios: tuple[float, ...]
    max_kl: tuple[float, ...]  # KL bounds: one job per model and bound, beside the ratios' jobs
    options: dict  # every selection option of compress, defaults filled in: part of each job's key
    asked: dict  # the options the plan gave, passed to compress and score as they are
    eval: dict | None  # keyword options of prunenet.eval.evaluate, or None for no evaluation
    retries: int = DEFAULT_RETRIES
    cpus_per_task: float = 1.0
    gpus_per_task: float | None = None  # None: 1 when the cluster has GPUs and the device allows them
    source: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict:
        return {
            "out": str(self.out), "source": self.source, "ratios": list(self.ratios), "max_kl": list(self.max_kl),
            "models": [{"name": m.name, "source": m.source, "fingerprint": m.fingerprint} for m in self.models],
            "options": self.asked, "eval": self.eval, "retries": self.retries,
            "cpus_per_task": self.cpus_per_task, "gpus_per_task": self.gpus_per_task,
        }


def read_toml(path: str | os.PathLike) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ValueError('reading a plan on Python 3.10 needs tomli: pip install "prunenet[farm]"') from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"plan {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"plan {str(path)!r} is a folder") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"plan {str(path)!r} is not readable TOML: {exc}") from None


def load_plan(plan: str | os.PathLike | Mapping | Plan) -> Plan:
    """A validated `Plan` from a TOML file or a dict of the same keys (relative paths: from the current folder)."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, os.PathLike)):
        data, base, source = read_toml(plan), Path(plan).resolve().parent, str(plan)
    elif isinstance(plan, Mapping):
        data, base, source = dict(plan), Path.cwd(), None
    else:
        raise TypeError(f"a plan is a TOML file path or a dict, got {type(plan).__name__}")
    unknown = sorted(set(data) - set(PLAN_KEYS))
    if unknown:
        raise ValueError(f"plan: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(PLAN_KEYS)} "
                         "(selection options go in [options])")
    for key in ("out", "models"):
        if key not in data:
            raise ValueError(f"plan: {key!r} is missing")
    if "ratios" not in data and "max_kl" not in data:
        raise ValueError("plan: 'ratios' is missing (or give KL bounds: 'max_kl')")
    asked = _options(data)
    return Plan(
        out=_out(data["out"], base),
        models=_models(data["models"], base),
        ratios=_ratios(data["ratios"]) if "ratios" in data else (),
        max_kl=_bounds(data["max_kl"]) if "max_kl" in data else (),
        options=_with_defaults(asked),
        asked=asked,
        eval=_eval(data.get("eval", False)),
        retries=_number("retries", data.get("retries", DEFAULT_RETRIES), 0, integer=True),
        cpus_per_task=_number("cpus_per_task", data.get("cpus_per_task", 1), 0, strict=True),
        gpus_per_task=None if "gpus_per_task" not in data else _number("gpus_per_task", data["gpus_per_task"], 0),
        source=source,
    )


def _out(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise TypeError(f"plan: out must be a folder path (string), got {value!r}")
    out = (base / Path(value).expanduser()).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"plan: out {value!r} exists and is not a folder")
    return out


def _models(value: Any, base: Path) -> tuple[ModelSpec, ...]:
    if not isinstance(value, list) or not value:
        raise TypeError(f"plan: models must be a non-empty list of folders, aliases or Hub ids, got {value!r}")
    specs, names = [], set()
    for entry in value:
        if isinstance(entry, str):
            name, where, revision = None, entry, None
        elif isinstance(entry, Mapping) and set(entry) <= {"name", "path", "revision"} and "path" in entry:
            name, where, revision = entry.get("name"), entry["path"], entry.get("revision")
        else:
            raise TypeError(f"plan: a model is a string or a table {{name, path, revision}}, got {entry!r}")
        if not isinstance(where, str) or not where:
            raise TypeError(f"plan: model path must be a string, got {where!r}")
        folder = (base / Path(where).expanduser()).resolve()
        if revision is None and (where in EMBEDDED or folder.is_dir()):
            source, default_name = (where, where) if where in EMBEDDED else (str(folder), folder.name)
            key = fingerprint(source)
        elif looks_like_repo_id(where):
            # Resolved now, so that the job key holds the commit: a branch that moved is redone.
            hub = resolve_hub_model(where, revision)
            source, default_name = str(hub.path), where.rsplit("/", 1)[-1]
            key = hashlib.sha256(f"{fingerprint(source)}:{hub.commit}".encode()).hexdigest()[:16]
        else:
            raise ValueError(f"plan: model {where!r} is neither a folder ({folder}), a known alias "
                             f"({', '.join(sorted(EMBEDDED))}) nor a Hugging Face Hub id"
                             + (f" (a revision, {revision!r}, needs a Hub id)" if revision is not None else ""))
        name = default_name if name is None else name
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"plan: model name {name!r} must be letters, digits, '.', '_' or '-'")
        if name in names:
            raise ValueError(f"plan: two models are named {name!r}; give them distinct names ({{name, path}})")
        names.add(name)
        specs.append(ModelSpec(name, source, key))
    return tuple(specs)


def _bounds(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise TypeError(f"plan: max_kl must be a non-empty list of numbers (nats), got {value!r}")
    for bound in value:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
            raise ValueError(f"plan: max_kl {bound!r} must be a positive number of nats")
    if len(set(value)) != len(value):
        raise ValueError(f"plan: max_kl {value!r} repeat a value")
    return tuple(float(bound) for bound in value)


def _ratios(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise TypeError(f"plan: ratios must be a non-empty list of numbers, got {value!r}")
    ratios = []
    for r in value:
        try:
            ratios.append(float(check_ratio(r)))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"plan: ratios: {exc}") from None
    if len(set(ratios)) != len(ratios):
        raise ValueError(f"plan: ratios {value!r} repeat a value")
    return tuple(ratios)


def _options(data: Mapping) -> dict:
    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise TypeError(f"plan: options must be a table, got {options!r}")
    options = dict(options)
    if "selector" in data:
        if "selector" in options:
            raise ValueError("plan: selector is given twice (top level and [options])")
        options["selector"] = data["selector"]
    for key in options:
        if key in RESERVED_COMPRESS:
            raise ValueError(f"plan: options: {key!r} is set by the farm for each job; remove it")
    try:
        CompressConfig.from_options(options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"plan: options: {exc}") from None
    return options


def _with_defaults(asked: dict) -> dict:
    """Every option of the selection in use, the plan's values over the defaults: a changed default redoes a job."""
    return CompressConfig.from_options(asked).to_options()


def _eval(value: Any) -> dict | None:
    if value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(f"plan: eval must be true, false or a table of evaluate options, got {value!r}")
    from ..eval import evaluate

    params = {name: p for name, p in inspect.signature(evaluate).parameters.items() if name not in RESERVED_EVAL}
    options = {"throughput": False, **value}  # a farm compares quality; speed is opt-in
    _check_keywords("eval", options, params, RESERVED_EVAL)
    return options


def _check_keywords(where: str, options: dict, params: Mapping[str, inspect.Parameter], reserved) -> None:
    for key, value in options.items():
        if key in reserved:
            raise ValueError(f"plan: {where}: {key!r} is set by the farm for each job; remove it")
        if key not in params:
            raise ValueError(f"plan: {where}: unknown option {key!r}; known: {', '.join(sorted(params))}")
        _check_type(f"{where}.{key}", value, params[key].default)


def _check_type(what: str, value: Any, default: Any) -> None:
    """A value must have its default's simple type (a float option also takes an int); None defaults take any."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        raise TypeError(f"plan: {what} must be {type(default).__name__}, got {type(value).__name__} {value!r}")


def _number(what: str, value: Any, minimum: float, integer: bool = False, strict: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or math.isnan(value):
        raise TypeError(f"plan: {what} must be {'an int' if integer else 'a number'}, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"plan: {what}={value!r} must be {'above' if strict else 'at least'} {minimum}")
    return value


def fingerprint(source: str) -> str:
    """A short hash of what identifies a model's files: config.json's bytes, every top-level file's name,
    size and modification time (the embedded model: its GGUF file). Cheap for any size; any rewrite of a file
    (or a touch) changes it, so a rerun redoes that model rather than trust stale outputs."""
    if source in EMBEDDED:
        files = [gguf_path(EMBEDDED[source])]
        config = source.encode()
    else:
        folder = Path(source)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        config_path = folder / "config.json"
        config = config_path.read_bytes() if config_path.is_file() else b""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    digest = hashlib.sha256(config + json.dumps(stats).encode())
    return digest.hexdigest()[:16]
