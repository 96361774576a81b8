"""Bad input fails early and cleanly: exit status 2, one `prunenet: error:` line naming the culprit,
no traceback, and nothing written (no output folder, no `.partial-*` leftovers, no JSON report).

Every CLI case runs `prunenet compress` (or `fit`) in-process through `prunenet.cli.main`; the folder
each case works in is snapshotted before the call and must be byte-for-byte unchanged afterwards.
A few representative cases also go through the Python API, which raises ValueError.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import assert_nothing_written, cli_error, leftovers, read_json, snapshot
from safetensors.torch import load_file, save_file
from tiny_models import SECOND_SHARD as SHARD
from tiny_models import save_tiny_llama

import prunenet
from prunenet.cli import main

WIDE_FFN = 48  # the policy below is fitted on FFN width 40


@dataclass
class Env:
    tmp: Path  # this test's own folder: everything written must land here (and nothing does)
    src: Path  # a pristine sharded tiny llama (FFN 40), shared by the module: never modified
    policy: Path  # a policy fitted on `src`
    wide: Path  # a tiny llama with FFN width 48

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def report(self) -> Path:
        return self.tmp / "r.json"

    def copy(self) -> Path:
        """A private copy of `src`, for the cases that damage it."""
        return Path(shutil.copytree(self.src, self.tmp / "model"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input-models")
    src, wide, policy = root / "llama", root / "llama-wide", root / "policy.safetensors"
    save_tiny_llama(src)
    assert (src / SHARD).exists()
    save_tiny_llama(wide, ffn=WIDE_FFN)
    assert main(["fit", str(src), "--ratio", "0.3", "--episodes", "1", "--out", str(policy), "--quiet"]) == 0
    return src, policy, wide


@pytest.fixture
def env(shared, tmp_path):
    return Env(tmp_path, *shared)


# ---------------------------------------------------------------------------------------------------
# Damaging a model folder

def with_model_type(env: Env, model_type: str) -> Path:
    model = env.copy()
    config = (model / "config.json").read_text()
    (model / "config.json").write_text(config.replace('"model_type": "llama"', f'"model_type": "{model_type}"'))
    assert f'"{model_type}"' in (model / "config.json").read_text()
    return model


def without(env: Env, name: str) -> Path:
    model = env.copy()
    (model / name).unlink()
    return model


def truncated_shard(env: Env) -> Path:
    model = env.copy()
    data = (model / SHARD).read_bytes()
    (model / SHARD).write_bytes(data[: len(data) // 2])
    return model


def garbage_shard(env: Env) -> Path:
    model = env.copy()
    size = (model / SHARD).stat().st_size
    (model / SHARD).write_bytes(os.urandom(size))
    return model


def with_complex_tensor(env: Env) -> Path:
    model = env.copy()
    tensors = load_file(model / SHARD)
    tensors["model.freqs_cis"] = torch.ones(4, dtype=torch.complex64)
    save_file(tensors, str(model / SHARD), metadata={"format": "pt"})
    return model


def _edit_header(path: Path, edit: Callable[[dict], None], extra: bytes = b"") -> None:
    """Rewrite a safetensors file's JSON header with `edit`, keeping its data (plus `extra` bytes at the end)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :] + extra)


def _last_tensor(header: dict) -> str:
    return max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])


def offsets_past_end(env: Env) -> Path:
    """The last tensor claims one more row than the file holds: shape and offsets agree, the data is short."""
    model = env.copy()

    def edit(header: dict) -> None:
        entry = header[_last_tensor(header)]
        assert entry["dtype"] == "F32" and len(entry["shape"]) == 2
        entry["shape"][0] += 1
        entry["data_offsets"][1] += 4 * entry["shape"][1]

    _edit_header(model / SHARD, edit)
    return model


def with_header_dtype(env: Env, dtype: str) -> Path:
    """An extra 8-element tensor `model.scales` of `dtype` (1 byte per element) at the end of the shard."""
    model = env.copy()

    def edit(header: dict) -> None:
        end = header[_last_tensor(header)]["data_offsets"][1]
        header["model.scales"] = {"dtype": dtype, "shape": [8], "data_offsets": [end, end + 8]}

    _edit_header(model / SHARD, edit, extra=bytes(8))
    return model


def non_finite_scored(env: Env, value: float) -> Path:
    """`value` (NaN or Inf) in one element of layer 1's scored matrix (gate_proj)."""
    model = env.copy()
    name = "model.layers.1.mlp.gate_proj.weight"
    shard = model / read_json(model / "model.safetensors.index.json")["weight_map"][name]
    tensors = load_file(shard)
    tensors[name][3, 5] = value
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return model


def without_width_key(env: Env) -> Path:
    model = env.copy()
    config = read_json(model / "config.json")
    del config["intermediate_size"]
    (model / "config.json").write_text(json.dumps(config))
    return model


def index_naming_a_missing_shard(env: Env) -> Path:
    model = env.copy()
    index = read_json(model / "model.safetensors.index.json")
    index["weight_map"]["model.norm.weight"] = "model-00005-of-00004.safetensors"
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return model


def corrupt_index(env: Env) -> Path:
    model = env.copy()
    (model / "model.safetensors.index.json").write_text('{"weight_map": {')
    return model


def broken_config(env: Env) -> Path:
    model = env.copy()
    (model / "config.json").write_text('{"model_type": "llama", "intermediate_size": 40,')
    return model


def not_a_policy(env: Env) -> Path:
    path = env.tmp / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    return path


def existing_output(env: Env) -> Path:
    env.out.mkdir()
    (env.out / "keep.txt").write_text("an earlier output")
    return env.src


def output_linked_to(env: Env, target: Path) -> Path:
    env.out.symlink_to(target, target_is_directory=True)
    return env.src


def real_folder(env: Env) -> Path:
    (env.tmp / "real").mkdir()
    (env.tmp / "real" / "keep.txt").write_text("where the link points")
    return env.tmp / "real"


def file_as_parent(env: Env) -> Path:
    (env.tmp / "file.txt").write_text("not a folder")
    return env.tmp / "file.txt" / "out"


# ---------------------------------------------------------------------------------------------------
# CLI: exit 2, one error line, nothing written

@dataclass
class Case:
    args: Callable[[Env], list]  # all after "compress" except --out, --json, --quiet and a quick fit's --episodes
    says: Callable[[Env], list[str]]  # what the error line must contain
    out: Callable[[Env], Path] | None = None  # the --out given (default env.out)


def _src(env: Env) -> str:
    return str(env.src)


CASES = {
    "ratio-1.0": Case(lambda e: [_src(e), "--ratio", "1.0"], lambda e: ["ratio 1.0", "[0, 1)"]),
    "ratio-negative": Case(lambda e: [_src(e), "--ratio", "-0.1"], lambda e: ["ratio -0.1", "[0, 1)"]),
    "ratio-nan": Case(lambda e: [_src(e), "--ratio", "nan"], lambda e: ["ratio nan"]),
    "ratio-leaves-no-row": Case(lambda e: [_src(e), "--ratio", "0.99"], lambda e: ["ratio 0.99", "no row", "40"]),
    "ratios-garbage": Case(lambda e: [_src(e), "--ratios", "0.1,abc"], lambda e: ["0.1,abc"]),
    "ratios-one-bad": Case(lambda e: [_src(e), "--ratios", "0.1,1.5"], lambda e: ["ratio 1.5"]),
    "unknown-model-type": Case(
        lambda e: [str(with_model_type(e, "bert")), "--ratio", "0.3"],
        lambda e: ["'bert'", "supported", "llama", "gpt_neox", "phi3"],
    ),
    "model-path-missing": Case(
        lambda e: [str(e.tmp / "no-such-model"), "--ratio", "0.3"], lambda e: [str(e.tmp / "no-such-model")]
    ),
    "shard-missing": Case(
        lambda e: [str(without(e, SHARD)), "--ratio", "0.3"], lambda e: ["missing shard", SHARD]
    ),
    "shard-truncated": Case(lambda e: [str(truncated_shard(e)), "--ratio", "0.3"], lambda e: ["corrupt shard", SHARD]),
    "shard-garbage": Case(lambda e: [str(garbage_shard(e)), "--ratio", "0.3"], lambda e: ["corrupt shard", SHARD]),
    "shard-unsupported-dtype": Case(
        lambda e: [str(with_complex_tensor(e)), "--ratio", "0.3"], lambda e: [SHARD, "model.freqs_cis", "C64"]
    ),
    "shard-dtype-unknown-to-writer": Case(
        lambda e: [str(with_header_dtype(e, "F8_E8M0")), "--ratio", "0.3"],
        lambda e: [SHARD, "model.scales", "F8_E8M0", "not supported"],
    ),
    "shard-dtype-not-safetensors": Case(
        lambda e: [str(with_header_dtype(e, "Q4_K")), "--ratio", "0.3"], lambda e: ["corrupt shard", SHARD, "Q4_K"]
    ),
    "shard-offsets-past-end": Case(
        lambda e: [str(offsets_past_end(e)), "--ratio", "0.3"], lambda e: ["corrupt shard", SHARD]
    ),
    "shard-truncated-nested-out": Case(
        lambda e: [str(truncated_shard(e)), "--ratio", "0.3"], lambda e: ["corrupt shard", SHARD],
        out=lambda e: e.tmp / "runs" / "llama" / "r30",  # the missing folders are not made either
    ),
    "scored-nan": Case(
        lambda e: [str(non_finite_scored(e, float("nan"))), "--ratio", "0.3", "--selector", "prunenet"],
        lambda e: ["model.layers.1.mlp.gate_proj.weight", "1 NaN or infinite", ".safetensors"],
    ),
    "scored-nan-default-selector": Case(
        lambda e: [str(non_finite_scored(e, float("nan"))), "--ratio", "0.3"],
        lambda e: ["model.layers.1.mlp.gate_proj.weight", "1 NaN or infinite"],
    ),
    "scored-inf-magnitude": Case(
        lambda e: [str(non_finite_scored(e, float("inf"))), "--ratio", "0.3", "--selector", "magnitude"],
        lambda e: ["model.layers.1.mlp.gate_proj.weight", "1 NaN or infinite"],
    ),
    "index-names-a-missing-shard": Case(
        lambda e: [str(index_naming_a_missing_shard(e)), "--ratio", "0.3"],
        lambda e: ["missing shard", "model-00005-of-00004.safetensors"],
    ),
    "index-corrupt": Case(
        lambda e: [str(corrupt_index(e)), "--ratio", "0.3"], lambda e: ["corrupt shard index", "index.json"]
    ),
    "config-corrupt": Case(
        lambda e: [str(broken_config(e)), "--ratio", "0.3"], lambda e: ["corrupt config", "config.json"]
    ),
    "config-missing": Case(
        lambda e: [str(without(e, "config.json")), "--ratio", "0.3"], lambda e: ["missing config", "config.json"]
    ),
    "config-without-width-key": Case(
        lambda e: [str(without_width_key(e)), "--ratio", "0.3"],
        lambda e: [str(e.tmp / "model" / "config.json"), "no FFN width", "intermediate_size"],
    ),
    "policy-wrong-shape": Case(
        lambda e: [str(e.wide), "--ratio", "0.3", "--selector", "prunenet", "--policy", str(e.policy)],
        lambda e: ["n=40", f"n={WIDE_FFN}"],
    ),
    "policy-random-bytes": Case(
        lambda e: [_src(e), "--ratio", "0.3", "--selector", "prunenet", "--policy", str(not_a_policy(e))],
        lambda e: ["random.safetensors", "not a prunenet policy"],
    ),
    "policy-is-a-model-shard": Case(
        lambda e: [_src(e), "--ratio", "0.3", "--selector", "prunenet", "--policy", str(e.src / SHARD)],
        lambda e: [SHARD, "not a prunenet policy"],
    ),
    "policy-missing": Case(
        lambda e: [_src(e), "--ratio", "0.3", "--selector", "prunenet", "--policy", str(e.tmp / "nope.safetensors")],
        lambda e: ["nope.safetensors", "does not exist"],
    ),
    "output-exists": Case(
        lambda e: [str(existing_output(e)), "--ratio", "0.3"], lambda e: [str(e.out), "pass --overwrite to replace it"]
    ),
    "output-is-a-symlink": Case(
        lambda e: [str(output_linked_to(e, real_folder(e))), "--ratio", "0.3", "--overwrite"],
        lambda e: [str(e.out), "symbolic link", str(e.tmp / "real")],
    ),
    "output-is-a-broken-symlink": Case(
        lambda e: [str(output_linked_to(e, e.tmp / "nowhere")), "--ratio", "0.3"],
        lambda e: [str(e.out), "symbolic link"],
    ),
    "output-parent-is-a-file": Case(
        lambda e: [_src(e), "--ratio", "0.3"], lambda e: [str(e.tmp / "file.txt"), "is a file"], out=file_as_parent
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_compress_rejects_bad_input(env, capsys, case):
    args = [str(a) for a in case.args(env)]  # sets up the damaged input, if any
    out_path = case.out(env) if case.out else env.out
    pre_existing = out_path.exists()
    before = snapshot(env.tmp)
    quick_fit = ["--episodes", "1"] if "prunenet" in args else []  # the policy's options only with its selector
    argv = ["compress", *args, "--out", str(out_path), "--json", str(env.report), "--quiet", *quick_fit]
    cli_error(capsys, argv, case.says(env))
    assert snapshot(env.tmp) == before  # nothing written, moved or removed
    if not pre_existing:
        assert_nothing_written(out_path, env.report)


def test_fit_rejects_bad_ratio(env, capsys):
    policy = env.tmp / "p.safetensors"
    cli_error(capsys, ["fit", str(env.src), "--ratio", "1.0", "--episodes", "1", "--out", str(policy),
                       "--json", str(env.report), "--quiet"], ["ratio 1.0"])
    assert_nothing_written(policy, env.report)


def test_unknown_selector_rejected_by_argparse_in_one_line(env, capsys):
    cli_error(capsys, ["compress", env.src, "--ratio", "0.3", "--selector", "bogus", "--out", env.out, "--quiet"],
              ["compress: argument --selector: invalid choice: 'bogus'", "prunenet compress --help"])
    assert_nothing_written(env.out)


# ---------------------------------------------------------------------------------------------------
# Python API: the same checks raise ValueError

API_CASES = {
    "ratio-1.0": (lambda e: prunenet.compress(e.src, e.out, ratio=1.0, progress=False), r"ratio 1\.0"),
    "ratio-nan": (lambda e: prunenet.compress(e.src, e.out, ratio=float("nan"), progress=False), "ratio nan"),
    "ratios-garbage": (lambda e: prunenet.compress(e.src, e.out, ratios="0.1,abc", progress=False), "abc"),
    "ratio-leaves-no-row": (
        lambda e: prunenet.compress(e.src, e.out, ratio=0.99, selector="random", progress=False), "no row"
    ),
    "unknown-model-type": (
        lambda e: prunenet.compress(with_model_type(e, "bert"), e.out, ratio=0.3, progress=False), "supported"
    ),
    "shard-missing": (
        lambda e: prunenet.compress(without(e, SHARD), e.out, ratio=0.3, progress=False), "missing shard"
    ),
    "policy-wrong-shape": (
        lambda e: prunenet.compress(e.wide, e.out, ratio=0.3, selector="prunenet", policy=e.policy, progress=False),
        f"n={WIDE_FFN}",
    ),
    "output-exists": (
        lambda e: prunenet.compress(existing_output(e), e.out, ratio=0.3, selector="random", progress=False),
        "overwrite",
    ),
    "fit-ratio-negative": (lambda e: prunenet.fit(e.src, -0.1, episodes=1, progress=False), r"ratio -0\.1"),
    "scored-nan": (
        lambda e: prunenet.compress(non_finite_scored(e, float("nan")), e.out, ratio=0.3, selector="prunenet",
                                    repair="none", episodes=1, progress=False),
        r"'model\.layers\.1\.mlp\.gate_proj\.weight' holds 1 NaN or infinite",
    ),
    "output-is-a-symlink": (
        lambda e: prunenet.compress(output_linked_to(e, real_folder(e)), e.out, ratio=0.3, selector="random",
                                    repair="none", overwrite=True, progress=False),
        "symbolic link",
    ),
    "dtype-unknown": (
        lambda e: prunenet.compress(e.src, e.out, ratio=0.3, selector="random", dtype="int8", progress=False),
        "unknown dtype 'int8'",
    ),
}


@pytest.mark.parametrize("call, match", list(API_CASES.values()), ids=list(API_CASES))
def test_python_api_raises_value_error(env, call, match):
    with pytest.raises(ValueError, match=match):
        call(env)
    assert leftovers(env.tmp) == []
    if (env.out / "keep.txt").exists():  # the output-exists case: left as it was
        assert [p.name for p in env.out.iterdir()] == ["keep.txt"]
    else:
        assert not env.out.exists()
