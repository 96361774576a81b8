"""Streaming checkpoints: sharded in, sharded out, loadable, atomic.

A tiny random LLaMA (FFN width 40, 3 layers) is saved in 4 shards of about 20 KB with dummy tokenizer
files, compressed at ratio 0.4 (40 -> 24 rows) with the random selector, and the output is checked
file by file, tensor by tensor, and against the same model sliced independently here in torch.

The model comes from `tiny_models.save_tiny_llama`. The reader and `write_safetensors` are also checked
against safetensors itself for several dtypes and odd shapes.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
import tiny_models
import torch
import transformers as T
from helpers import cli_error, leftovers, read_json
from safetensors.torch import load_file, save_file
from tiny_models import AUX_FILES, save_tiny_llama

import prunenet
import prunenet.selectors.policy
import prunenet.writer
from prunenet.cli import main
from prunenet.model.checkpoint import Checkpoint, refuse_non_finite, write_safetensors
from prunenet.model.ffn_map import SlicePlan

RATIO = 0.4
KEPT = int((1 - RATIO) * tiny_models.FFN)  # 24
ROW_SLICED = ("mlp.gate_proj.weight", "mlp.up_proj.weight")
COL_SLICED = ("mlp.down_proj.weight",)


# ---------------------------------------------------------------------------------------------------
# Helpers

def shard_data_bytes(path: Path) -> int:
    """Bytes of a safetensors file's data section (the file less its 8-byte length and JSON header)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    return path.stat().st_size - 8 - header_len


def slice_state_dict(state: dict[str, torch.Tensor], kept: list[list[int]]) -> dict[str, torch.Tensor]:
    """The reference result: every layer's FFN sliced to `kept` rows, directly in torch."""
    sliced = {}
    for name, tensor in state.items():
        rows = None
        for layer, layer_rows in enumerate(kept):
            if name.startswith(f"model.layers.{layer}."):
                rows = torch.tensor(layer_rows)
        if name.endswith(ROW_SLICED):
            tensor = tensor[rows]
        elif name.endswith(COL_SLICED):
            tensor = tensor[:, rows]
        sliced[name] = tensor
    return sliced


# ---------------------------------------------------------------------------------------------------
# One compressed checkpoint, checked from every side

@pytest.fixture(scope="module")
def original(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "llama"
    model = save_tiny_llama(src)
    assert len(list(src.glob("*.safetensors"))) >= 3, "the fixture must be sharded"
    return src, model


@pytest.fixture(scope="module")
def compressed(original, tmp_path_factory):
    src, _ = original
    out = tmp_path_factory.mktemp("out") / "llama-40"
    report = prunenet.compress(src, out, ratio=RATIO, selector="random", repair="none", progress=False)
    return out, report


@pytest.fixture(scope="module")
def kept_rows(compressed):
    return read_json(compressed[0] / "prunenet.json")["kept_rows"]


def test_output_keeps_shard_names(original, compressed):
    src, out = original[0], compressed[0]
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(p.name for p in src.glob("*.safetensors"))
    assert leftovers(out.parent) == []


def test_index_weight_map_equal_and_total_size_is_data_bytes(original, compressed):
    src, out = original[0], compressed[0]
    index_in = read_json(src / "model.safetensors.index.json")
    index_out = read_json(out / "model.safetensors.index.json")
    assert index_out["weight_map"] == index_in["weight_map"]
    data_bytes = sum(shard_data_bytes(p) for p in out.glob("*.safetensors"))
    assert index_out["metadata"]["total_size"] == data_bytes
    assert data_bytes < index_in["metadata"]["total_size"]
    if "total_parameters" in index_in["metadata"]:  # written by recent transformers: must not go stale
        tensors = [t for p in out.glob("*.safetensors") for t in load_file(p).values()]
        assert index_out["metadata"]["total_parameters"] == sum(t.numel() for t in tensors)


def test_tensors_sliced_by_kept_rows_others_bitwise_identical(original, compressed, kept_rows):
    src, model = original
    out = compressed[0]
    hidden = tiny_models.HIDDEN
    expected = slice_state_dict(model.state_dict(), kept_rows)
    for shard in sorted(src.glob("*.safetensors")):
        before, after = load_file(shard), load_file(out / shard.name)
        assert list(after) == list(before), shard.name  # same tensors, in the same shard
        for name, tensor in after.items():
            if name.endswith(ROW_SLICED):
                assert tensor.shape == (KEPT, hidden), name
            elif name.endswith(COL_SLICED):
                assert tensor.shape == (hidden, KEPT), name
            else:
                assert tensor.shape == before[name].shape, name
                assert tensor.dtype == before[name].dtype, name
                assert torch.equal(tensor.view(torch.uint8), before[name].view(torch.uint8)), name
            assert torch.equal(tensor, expected[name]), name


def test_provenance_records_ratio_and_kept_rows(compressed, kept_rows):
    out, report = compressed
    provenance = read_json(out / "prunenet.json")
    assert provenance["ratio"] == RATIO
    assert (provenance["ffn_width_before"], provenance["ffn_width_after"]) == (tiny_models.FFN, KEPT)
    assert provenance["selector"] == "random"
    assert len(kept_rows) == tiny_models.LAYERS
    for rows in kept_rows:
        assert len(rows) == KEPT
        assert rows == sorted(set(rows))
        assert 0 <= rows[0] and rows[-1] < tiny_models.FFN
    assert report["outputs"][0]["ffn_width_after"] == KEPT


def test_config_width_updated_other_keys_unchanged(original, compressed):
    config_in = read_json(original[0] / "config.json")
    config_out = read_json(compressed[0] / "config.json")
    assert config_out["intermediate_size"] == KEPT
    assert {k: v for k, v in config_out.items() if k != "intermediate_size"} == {
        k: v for k, v in config_in.items() if k != "intermediate_size"
    }


def test_tokenizer_and_generation_files_copied(original, compressed):
    src, out = original[0], compressed[0]
    names = [*AUX_FILES, "generation_config.json"]
    assert (src / "generation_config.json").exists()
    for name in names:
        assert (out / name).read_bytes() == (src / name).read_bytes(), name


def test_from_pretrained_logits_equal_independent_slicing(original, compressed, kept_rows):
    _, model = original
    out = compressed[0]
    config = tiny_models.CONFIGS["llama"]()
    config.intermediate_size = KEPT
    reference = T.AutoModelForCausalLM.from_config(config).eval()
    reference.load_state_dict(slice_state_dict(model.state_dict(), kept_rows), strict=True)
    loaded = T.AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.intermediate_size == KEPT
    tokens = torch.randint(0, tiny_models.VOCAB, (2, 11), generator=torch.Generator().manual_seed(0))
    got, want = tiny_models.logits(loaded, tokens), tiny_models.logits(reference, tokens)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, tiny_models.logits(model, tokens), atol=1e-3)  # rows were really removed


def test_single_file_checkpoint_and_extra_dtypes_pass_through(tmp_path):
    src, out = tmp_path / "single", tmp_path / "out"
    model = save_tiny_llama(src, shard_size=None)
    assert not (src / "model.safetensors.index.json").exists()
    extras = {"extra.packed": torch.tensor([[1, 2, 3], [2**32 - 1, 0, 7]]).to(torch.uint32),
              "extra.mask": torch.tensor([True, False, True]), "extra.step": torch.tensor(7)}
    save_file({**load_file(src / "model.safetensors"), **extras}, str(src / "model.safetensors"), {"format": "pt"})
    prunenet.compress(src, out, ratio=RATIO, selector="magnitude", repair="none", progress=False)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    written = load_file(out / "model.safetensors")
    for name, tensor in extras.items():
        assert same_bits(written[name], tensor), name
    kept = read_json(out / "prunenet.json")["kept_rows"]
    for layer, rows in enumerate(kept):  # magnitude: the rows of largest L2 norm of the gate projection
        gate = model.state_dict()[f"model.layers.{layer}.mlp.gate_proj.weight"]
        assert rows == sorted(gate.norm(dim=1).topk(KEPT).indices.tolist())
    expected = slice_state_dict(model.state_dict(), kept)
    for name, tensor in expected.items():
        assert torch.equal(written[name], tensor), name


def test_dtype_converts_floating_tensors_and_never_changes_the_rows(original, tmp_path):
    src = original[0]
    for dtype in ("auto", "bfloat16"):
        prunenet.compress(src, tmp_path / dtype, ratio=RATIO, selector="prunenet", repair="none", episodes=2,
                          dtype=dtype, progress=False)
    auto, bf16 = tmp_path / "auto", tmp_path / "bfloat16"
    assert read_json(bf16 / "prunenet.json")["kept_rows"] == read_json(auto / "prunenet.json")["kept_rows"]
    assert read_json(auto / "config.json")["dtype"] == read_json(src / "config.json")["dtype"] == "float32"
    assert read_json(bf16 / "config.json")["dtype"] == "bfloat16"
    for shard in sorted(src.glob("*.safetensors")):
        as_stored, converted = load_file(auto / shard.name), load_file(bf16 / shard.name)
        assert list(converted) == list(as_stored)
        for name, tensor in converted.items():
            assert as_stored[name].dtype == torch.float32, name
            assert same_bits(tensor, as_stored[name].to(torch.bfloat16)), name
    loaded = T.AutoModelForCausalLM.from_pretrained(bf16)
    assert loaded.dtype == torch.bfloat16
    assert torch.isfinite(tiny_models.logits(loaded, torch.arange(6).reshape(1, 6)).float()).all()


def test_dtype_leaves_integer_bool_and_float8_tensors_alone(tmp_path):
    src, out = tmp_path / "single", tmp_path / "out"
    save_tiny_llama(src, shard_size=None)
    extras = {"extra.packed": torch.tensor([[1, 2], [2**32 - 1, 7]]).to(torch.uint32),
              "extra.mask": torch.tensor([True, False]), "extra.step": torch.tensor(7),
              "extra.fp8": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
              "extra.bf16": torch.tensor([1.5, -3.25], dtype=torch.bfloat16)}
    save_file({**load_file(src / "model.safetensors"), **extras}, str(src / "model.safetensors"), {"format": "pt"})
    prunenet.compress(src, out, ratio=RATIO, selector="random", repair="none", dtype="float16", progress=False)
    written = load_file(out / "model.safetensors")
    for name in ("extra.packed", "extra.mask", "extra.step", "extra.fp8"):
        assert same_bits(written[name], extras[name]), name
    assert same_bits(written["extra.bf16"], extras["extra.bf16"].to(torch.float16))
    assert written["model.layers.0.mlp.gate_proj.weight"].dtype == torch.float16


def test_missing_output_folders_are_made_and_existing_outputs_still_refused(original, tmp_path, capsys):
    src = original[0]
    out, report, policy = tmp_path / "runs/llama/r40", tmp_path / "reports/r40.json", tmp_path / "pol/a/p.safetensors"
    argv = ["compress", str(src), "--ratio", "0.4", "--selector", "prunenet", "--repair", "none", "--episodes", "1",
            "--out", str(out), "--json", str(report), "--save-policy", str(policy), "--quiet"]
    assert main(argv) == 0
    assert read_json(out / "config.json")["intermediate_size"] == KEPT
    assert read_json(report)["outputs"][0]["out"] == str(out) and policy.is_file()
    fit_policy, fit_report = tmp_path / "fits/a/p.safetensors", tmp_path / "fits/b/fit.json"
    assert main(["fit", str(src), "--episodes", "1", "--out", str(fit_policy), "--json", str(fit_report),
                 "--quiet"]) == 0
    assert fit_policy.is_file() and read_json(fit_report)["policy"] == str(fit_policy)
    several = tmp_path / "sweeps/one/llama"
    assert main(["compress", str(src), "--ratios", "0.1,0.4", "--selector", "random", "--repair", "none",
                 "--out", str(several), "--quiet"]) == 0
    assert sorted(p.name for p in several.iterdir()) == ["ratio-0.1", "ratio-0.4"]
    cli_error(capsys, argv, ["pass --overwrite to replace it"])  # an existing output is still refused
    assert leftovers(out.parent) == [] and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# Reading and writing safetensors files tensor by tensor

SHAPES = {"scalar": (), "vector": (7,), "odd": (3, 5, 7), "empty-rows": (0, 4), "empty-middle": (3, 0, 2)}
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool, torch.uint32]


def _dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _example(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype in (torch.int64, torch.uint32):
        return torch.randint(0 if dtype == torch.uint32 else -(2**40), 2**31, shape, generator=generator).to(dtype)
    return (torch.randn(shape, generator=generator) * 100).to(dtype)


def _examples(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {name: _example(dtype, shape, seed) for seed, (name, shape) in enumerate(SHAPES.items())}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (works for every dtype, NaN included)."""
    return (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_checkpoint_reads_like_safetensors(tmp_path, dtype):
    tensors = _examples(dtype)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    save_file(tensors, str(tmp_path / "model.safetensors"))
    checkpoint = Checkpoint(tmp_path)
    for name, tensor in tensors.items():
        assert same_bits(checkpoint.read(name), tensor), name
        if tensor.dim():
            for rows in (slice(1, 3), slice(None, None, 2), slice(5, 2), slice(0, 10**6), slice(-2, None)):
                assert same_bits(checkpoint.read(name, rows), tensor[rows]), (name, rows)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_write_safetensors_readable_by_safetensors(tmp_path, dtype):
    tensors = _examples(dtype)
    full = _example(dtype, (4, 6), 99)
    tensors["non-contiguous"] = full[:, ::2]
    tensors["offset-view"] = full[1:3]
    plan = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
    path = tmp_path / "x.safetensors"
    nbytes = write_safetensors(path, plan, iter(tensors.items()), {"format": "pt"})
    assert nbytes == shard_data_bytes(path) == sum(t.numel() * t.element_size() for t in tensors.values())
    back = load_file(path)
    assert set(back) == set(tensors)
    for name, tensor in tensors.items():
        assert same_bits(back[name], tensor), name


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(lambda a, b: [("a", a), ("b", b.double())], id="wrong-dtype"),
        pytest.param(lambda a, b: [("a", a), ("b", b.t())], id="wrong-shape"),
        pytest.param(lambda a, b: [("b", b), ("a", a)], id="wrong-order"),
        pytest.param(lambda a, b: [("a", a)], id="too-few"),
        pytest.param(lambda a, b: [("a", a), ("b", b), ("c", a)], id="too-many"),
    ],
)
def test_write_safetensors_rejects_stream_off_plan(tmp_path, stream):
    a, b = torch.zeros(2, 3), torch.ones(3, 4)
    plan = {"a": (a.dtype, (2, 3)), "b": (b.dtype, (3, 4))}
    with pytest.raises(RuntimeError, match="plan"):
        write_safetensors(tmp_path / "x.safetensors", plan, iter(stream(a, b)))


# ---------------------------------------------------------------------------------------------------
# Atomic output: failures leave nothing, --overwrite leaves no old copy

def _fail_in_second_shard(monkeypatch, exc_type, parent: Path, partial_seen: list[str]) -> None:
    """Let the writer finish the first shard, then fail as it starts the second."""
    real, shards = prunenet.writer.write_safetensors, []

    def failing(path, plan, tensors, metadata=None):
        shards.append(path)
        if len(shards) == 2:
            partial_seen.extend(leftovers(parent))
            raise exc_type("simulated failure after the first shard")
        return real(path, plan, tensors, metadata)

    monkeypatch.setattr(prunenet.writer, "write_safetensors", failing)


def _fail_mid_shard(monkeypatch, exc_type, parent: Path, partial_seen: list[str]) -> None:
    """Fail while slicing the 4th FFN tensor: inside a shard whose header and first tensors are written."""
    real, sliced = SlicePlan.apply, []

    def failing(self, name, tensor, kept):
        if name in self.roles:
            sliced.append(name)
            if len(sliced) == 4:
                partial_seen.extend(leftovers(parent))
                raise exc_type("simulated failure while slicing")
        return real(self, name, tensor, kept)

    monkeypatch.setattr(SlicePlan, "apply", failing)


FAILURES = {"second-shard": _fail_in_second_shard, "mid-shard": _fail_mid_shard}


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt], ids=["error", "interrupt"])
@pytest.mark.parametrize("where", list(FAILURES))
@pytest.mark.parametrize("existing", [False, True], ids=["new-output", "overwrite"])
def test_failure_while_writing_leaves_nothing(original, tmp_path, monkeypatch, exc_type, where, existing):
    src = original[0]
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("previous output")
    partial_seen: list[str] = []
    FAILURES[where](monkeypatch, exc_type, tmp_path, partial_seen)
    with pytest.raises(exc_type, match="simulated failure"):
        prunenet.compress(src, out, ratio=RATIO, selector="random", repair="none", overwrite=existing,
                          progress=False)
    assert partial_seen, "the failure must happen while the temporary folder exists"
    assert leftovers(tmp_path) == []
    if existing:  # a failed overwrite keeps the previous output untouched
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()


def test_overwrite_replaces_output_and_leaves_no_old_copy(original, tmp_path, capsys):
    src = original[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    argv = ["compress", str(src), "--ratio", "0.25", "--selector", "random", "--repair", "none", "--out", str(out),
            "--quiet"]
    cli_error(capsys, argv, ["--overwrite"])  # refused without --overwrite
    assert sorted(p.name for p in out.iterdir()) == ["stale.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()
    assert read_json(out / "prunenet.json")["ratio"] == 0.25
    assert read_json(out / "config.json")["intermediate_size"] == 30
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_several_ratios_from_one_fit(original, tmp_path, monkeypatch):
    src = original[0]
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    real, fits = prunenet.selectors.policy.train_policy, []

    def counting(*args, **kwargs):
        fits.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(prunenet.selectors.policy, "train_policy", counting)
    argv = ["compress", str(src), "--ratios", "0.1,0.2,0.3", "--selector", "prunenet", "--repair", "none",
            "--episodes", "2", "--out", str(out), "--json", str(report_path), "--quiet"]
    assert main(argv) == 0
    assert fits == [0.1]  # one fit, at the first ratio
    report = read_json(report_path)
    assert report["fit"]["episodes"] == 2
    assert len(report["fit"]["reward_per_episode"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["ratio-0.1", "ratio-0.2", "ratio-0.3"]
    assert [o["out"] for o in report["outputs"]] == [str(out / f"ratio-{r}") for r in ("0.1", "0.2", "0.3")]
    for ratio, result in zip((0.1, 0.2, 0.3), report["outputs"]):
        folder = Path(result["out"])
        k = int((1 - ratio) * tiny_models.FFN + 1e-9)
        assert result["ffn_width_after"] == k
        assert read_json(folder / "config.json")["intermediate_size"] == k
        provenance = read_json(folder / "prunenet.json")
        assert provenance["ratio"] == ratio
        assert provenance["policy"] == report["fit"]  # every output records the same, single fit
        assert all(len(rows) == k for rows in provenance["kept_rows"])
        tokens = torch.arange(8).reshape(1, 8)
        assert torch.isfinite(tiny_models.logits(folder, tokens)).all()
    assert leftovers(tmp_path) == [] and leftovers(out) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused_and_counted(dtype, value):
    tensor = torch.randn(37, 53).to(dtype)
    assert refuse_non_finite(tensor, "t") is tensor and refuse_non_finite(tensor[:0], "t").numel() == 0
    tensor[3, 5] = tensor[30, 0] = value
    with pytest.raises(ValueError, match="^t holds 2 NaN or infinite values"):
        refuse_non_finite(tensor, "t")
