"""Peak RSS of `prunenet compress` on a synthetic sharded LLaMA checkpoint.

Goal: peak resident memory below half the checkpoint's size plus 1 GiB, i.e. the weights are streamed
tensor by tensor and shard by shard, never loaded whole.

    pytest bench/test_bench_rss.py --import-mode=importlib -s                          # 1.1 GiB checkpoint
    PRUNENET_RSS_BENCH_GB=0.05 pytest bench/test_bench_rss.py --import-mode=importlib --benchmark-disable

The checkpoint (bfloat16, about 5 shards with an index, LLaMA tensor names, hidden 1024, FFN 2816,
as many layers as fit the size asked for in $PRUNENET_RSS_BENCH_GB, GiB) is written directly with
safetensors, without building a model; $PRUNENET_RSS_BENCH_SHARDS sets the number of shards. Each
case runs the CLI in a child process started by the light launcher `rss_child.py`, which reads that
child's own peak RSS from `os.wait4` (see there why it is not started from pytest directly); the
report's `peak_rss_mb` (the child's own getrusage) is recorded beside it. Cases: the random selector
(read, select, write), the paper's selector with a 2-episode fit (read, fit, select, write), and the
default activation selector with repair on probe text from a file (the layer-streaming statistics pass,
ranking, least-squares repair, write; self-written probes would load the whole model to generate, which
is outside this bound). Figures go to `benchmark.extra_info` and are printed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import tiny_tokenizer

from prunenet.model.checkpoint import Checkpoint

GIB = 1024**3
MIB = 1024**2
SIZE_GIB = float(os.environ.get("PRUNENET_RSS_BENCH_GB", "1.1"))
HIDDEN, FFN, HEADS, VOCAB = 1024, 2816, 16, 8192
SHARDS = int(os.environ.get("PRUNENET_RSS_BENCH_SHARDS", "5"))
RATIO = 0.3
DTYPE = torch.bfloat16
ELEMENT = torch.empty((), dtype=DTYPE).element_size()


def _layer_shapes(layer: int) -> dict[str, tuple[int, ...]]:
    p = f"model.layers.{layer}."
    return {
        p + "input_layernorm.weight": (HIDDEN,),
        **{p + f"self_attn.{m}_proj.weight": (HIDDEN, HIDDEN) for m in "qkvo"},
        p + "post_attention_layernorm.weight": (HIDDEN,),
        p + "mlp.gate_proj.weight": (FFN, HIDDEN),
        p + "mlp.up_proj.weight": (FFN, HIDDEN),
        p + "mlp.down_proj.weight": (HIDDEN, FFN),
    }


def _nbytes(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(torch.Size(shape).numel() * ELEMENT for shape in shapes.values())


def synthetic_llama(folder: Path, size_bytes: float) -> int:
    """Write a LLaMA-shaped bf16 checkpoint of about `size_bytes` (at least one layer); return its data bytes."""
    outer = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,),
             "lm_head.weight": (VOCAB, HIDDEN)}
    layers = max(1, round((size_bytes - _nbytes(outer)) / _nbytes(_layer_shapes(0))))
    order = {"model.embed_tokens.weight": outer["model.embed_tokens.weight"]}
    for layer in range(layers):
        order.update(_layer_shapes(layer))
    order.update({name: outer[name] for name in ("model.norm.weight", "lm_head.weight")})
    total = _nbytes(order)
    shards = min(SHARDS, len(order))
    # Consecutive tensors fill shards of about total / SHARDS bytes each.
    groups: list[dict[str, tuple[int, ...]]] = [{}]
    for name, shape in order.items():
        if groups[-1] and _nbytes(groups[-1]) >= total / shards and len(groups) < shards:
            groups.append({})
        groups[-1][name] = shape
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    weight_map = {}
    for i, group in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, shape in group.items():
            if len(shape) == 1:
                tensors[name] = torch.ones(shape, dtype=DTYPE)
            else:
                tensors[name] = (torch.randn(shape, generator=generator) * 0.02).to(DTYPE)
            weight_map[name] = shard
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": layers, "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS, "vocab_size": VOCAB, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return total


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rss") / "synthetic-llama"
    total = synthetic_llama(folder, SIZE_GIB * GIB)
    tiny_tokenizer().save_pretrained(folder)  # probes from a text file need a tokenizer
    on_disk = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return folder, total, on_disk


LAUNCHER = Path(__file__).with_name("rss_child.py")


def run_child(argv: list[str], log: Path) -> dict:
    """Run `python -m prunenet ARGV` through the light launcher; its exit status, peak RSS (MiB), wall time."""
    launched = subprocess.run([sys.executable, str(LAUNCHER), str(log), sys.executable, "-m", "prunenet", *argv],
                              capture_output=True, text=True, check=True)
    return json.loads(launched.stdout)


PROBE_FILE = "{probes}"  # replaced by the probe text file the fixture writes
CASES = {
    "random": ["--selector", "random", "--repair", "none"],
    "prunenet-fit-2-episodes": ["--selector", "prunenet", "--repair", "none", "--episodes", "2"],
    "activation-lsq-statistics": ["--probes", PROBE_FILE, "--probe-tokens", "1024", "--probe-length", "128"],
}


@pytest.mark.parametrize("options", list(CASES.values()), ids=list(CASES))
def test_peak_rss_compress(benchmark, checkpoint, tmp_path, capsys, options):
    folder, total, on_disk = checkpoint
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    probes = folder.parent / "probes.txt"
    probes.write_text(" ".join(f"w{3 + i % 90}" for i in range(2000)))
    options = [str(probes) if option == PROBE_FILE else option for option in options]
    argv = ["compress", str(folder), "--ratio", str(RATIO), *options, "--device", "cpu", "--out", str(out),
            "--json", str(report_path), "--quiet"]
    runs = []
    benchmark.pedantic(lambda: runs.append(run_child(argv, tmp_path / "log.txt")), rounds=1, iterations=1)
    run = runs[0]
    peak_mib, wall_s = run["peak_rss_mib"], run["wall_s"]
    assert run["returncode"] == 0, (tmp_path / "log.txt").read_text(errors="replace")

    report = json.loads(report_path.read_text())
    k = int((1 - RATIO) * FFN)
    assert report["outputs"][0]["ffn_width_after"] == k
    result = Checkpoint(out)
    assert result.config["intermediate_size"] == k
    assert result.shards == Checkpoint(folder).shards
    assert result.shape("model.layers.0.mlp.down_proj.weight") == (HIDDEN, k)

    goal_mib = (on_disk / 2 + GIB) / MIB
    info = {
        "checkpoint_gib": round(on_disk / GIB, 3),
        "checkpoint_tensor_gib": round(total / GIB, 3),
        "shards": len(result.shards),
        "layers": result.config["num_hidden_layers"],
        "peak_rss_mib": peak_mib,
        "report_peak_rss_mib": report["peak_rss_mb"],
        "goal_mib": round(goal_mib, 1),
        "peak_over_goal": round(peak_mib / goal_mib, 3),
        "wall_s": round(wall_s, 2),
        "phases_s": report["timings_s"],
    }
    benchmark.extra_info.update(info)
    with capsys.disabled():
        print(f"\n[rss {' '.join(options)}] " + ", ".join(f"{key}={value}" for key, value in info.items()))
    assert peak_mib < goal_mib, f"peak RSS {peak_mib:.0f} MiB over the goal {goal_mib:.0f} MiB: {info}"
