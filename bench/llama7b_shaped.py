"""The paper's headline shapes on this machine: the whole default `prunenet compress` of a LLaMA-2-7B-shaped
checkpoint at r = 0.3, timed per phase, with its peak RSS against the streaming bound.

    python bench/llama7b_shaped.py --scratch /tmp/llama7b            # writes ~13.5 GB there, then compresses
    python bench/llama7b_shaped.py --scratch /tmp/llama7b --reuse --measure probes   # the model writes its probes

The checkpoint: 32 layers, hidden 4096, FFN 11008, 32 heads, bf16, safetensors shards of about 5 GB, random
weights with a trained model's scale (normal, std 0.02; norms at 1), and the embedded model's tokenizer
(vocabulary 49152 where LLaMA-2 has 32000). It is written tensor by tensor, never held whole. The probes are
4096 tokens of CPython's own documentation read from a file. The command runs under `/usr/bin/time -v` when it
is there, else the report's `peak_rss_mb` is used. Results go to bench/results/llama7b_shaped-cpu.json and .md.

`--measure probes` times the other phase instead: the 7B-shaped model writing its own 4096 probe tokens, as the
default command does without `--probes` (the whole model in memory, bfloat16, one `generate` call), in a child
process with a cache of its own (cold) under `/usr/bin/time -v`; results in bench/results/llama7b_probes-cpu.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from prunenet.model import resolve_model
from prunenet.model.checkpoint import INDEX, write_safetensors

RESULTS = Path(__file__).with_name("results")
SHAPE = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=32, vocab_size=49152, max_position_embeddings=4096)
SHARD_BYTES = 5 * 10**9
STD = 0.02
PROBE_TOKENS = 4096


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, n, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)})
        shapes.update({p + f"self_attn.{m}_proj.weight": (h, h) for m in "qkvo"})
        shapes.update({p + "mlp.gate_proj.weight": (n, h), p + "mlp.up_proj.weight": (n, h),
                       p + "mlp.down_proj.weight": (h, n)})
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    return shapes


def write_checkpoint(folder: Path, dims: dict, seed: int = 0) -> float:
    """The random checkpoint, shard by shard; returns its size in GB."""
    tokenizer_source = resolve_model("smollm2-135m")
    folder.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(dims)
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * 2
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = shape
        size += nbytes
    shards.append(current)
    generator = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for number, shard in enumerate(shards, 1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        plan = {name: (torch.bfloat16, shape) for name, shape in shard.items()}

        def tensors():
            for name, shape in shard.items():
                if len(shape) == 1:
                    yield name, torch.ones(shape, dtype=torch.bfloat16)
                else:
                    yield name, (torch.randn(shape, generator=generator) * STD).to(torch.bfloat16)

        total += write_safetensors(folder / file, plan, tensors(), {"format": "pt"})
        weight_map.update({name: file for name in shard})
        print(f"wrote {file} ({sum(math.prod(s) for s in shard.values()) * 2 / 1e9:.2f} GB)", flush=True)
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "dtype": "bfloat16",
              "bos_token_id": 1, "eos_token_id": 2, **dims}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for path in tokenizer_source.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy2(path, folder / path.name)
    return total / 1e9


def probe_file(path: Path) -> Path:
    from pydoc_data.topics import topics

    path.write_text("\n\n".join(topics.values()), encoding="utf-8")
    return path


def timed(command: list[str], threads: int, what: str) -> tuple[float, int | None, str]:
    """Run `command` under `/usr/bin/time -v` where it is there: wall seconds, peak RSS in MiB (None without
    it), stdout."""
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(timer + command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-4000:]}")
    peak = next((round(int(line.split(":")[1]) / 1024) for line in done.stderr.splitlines()
                 if "Maximum resident set size" in line), None)
    return wall, peak, done.stdout


def compress(checkpoint: Path, scratch: Path, threads: int) -> dict:
    out, report = scratch / "out-0.3", scratch / "report.json"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "prunenet", "compress", str(checkpoint), "--ratio", "0.3", "--probes",
               str(probe_file(scratch / "probes.txt")), "--probe-tokens", str(PROBE_TOKENS), "--out", str(out),
               "--json", str(report), "--overwrite"]
    wall, peak, _ = timed(command, threads, "compress")
    result = json.loads(report.read_text())
    return {"command": " ".join(command), "wall_s": round(wall, 1), "timings_s": result["timings_s"],
            "peak_rss_mb": peak if peak is not None else round(result["peak_rss_mb"]), "outputs": result["outputs"],
            "probes": result["probes"]}


def write_own_probes(checkpoint: Path, cache: Path) -> None:
    """In the timed child: the probes of the default command (self-written, 4096 tokens), printed as JSON."""
    from prunenet.calibration.probes import get_probes
    from prunenet.config import ProbeConfig
    from prunenet.model.checkpoint import Checkpoint

    probes = get_probes(Checkpoint(checkpoint), ProbeConfig(tokens=PROBE_TOKENS), 0, cache, torch.device("cpu"),
                        progress=True)
    print(json.dumps(probes.info))


def time_own_probes(checkpoint: Path, scratch: Path, threads: int) -> dict:
    shutil.rmtree(scratch / "probe-cache", ignore_errors=True)
    command = [sys.executable, __file__, "--scratch", str(scratch), "--child-probes"]
    wall, peak, stdout = timed(command, threads, "probe writing")
    info = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 1), "probes": info, "tokens_per_s": round(info["tokens"] / info["seconds"], 2),
            "peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scratch", type=Path, required=True, help="a folder outside the repository (~25 GB free)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reuse", action="store_true", help="keep a checkpoint already written there")
    parser.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"],
                        help="fewer layers for a rehearsal of the script (default 32: the real shape)")
    parser.add_argument("--measure", choices=("compress", "probes"), default="compress",
                        help="compress: the whole default command with probes from a file (default); probes: the "
                             "model writing its own probes, alone")
    parser.add_argument("--child-probes", action="store_true", help=argparse.SUPPRESS)  # the timed child
    args = parser.parse_args()
    shape = {**SHAPE, "num_hidden_layers": args.layers}
    checkpoint = args.scratch / "llama7b-shaped"
    if args.child_probes:
        return write_own_probes(checkpoint, args.scratch / "probe-cache")
    start = time.perf_counter()
    if not (args.reuse and (checkpoint / INDEX).is_file()):
        shutil.rmtree(checkpoint, ignore_errors=True)
        write_checkpoint(checkpoint, shape)
    written_s = time.perf_counter() - start
    size_gb = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors")) / 2**30
    load_before = os.getloadavg()
    run = (compress if args.measure == "compress" else time_own_probes)(checkpoint, args.scratch, args.threads)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "layers": args.layers, "threads": args.threads,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "checkpoint_gib": round(size_gb, 2), "streaming_bound_mb": round((size_gb / 2 + 1) * 1024),
        "checkpoint_write_s": round(written_s, 1), **run,
    }
    if args.layers != SHAPE["num_hidden_layers"]:
        print(json.dumps(result, indent=2))  # a rehearsal: nothing recorded
        return
    RESULTS.mkdir(exist_ok=True)
    if args.measure == "probes":
        (RESULTS / "llama7b_probes-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    (RESULTS / "llama7b_shaped-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in run["timings_s"].items())
    (RESULTS / "llama7b_shaped-cpu.md").write_text(
        f"LLaMA-2-7B-shaped checkpoint ({size_gb:.1f} GiB bf16), default compress at r = 0.3, probes: 4096 tokens "
        f"from a file; {result['machine']}, {args.threads} threads, load average before "
        f"{load_before[0]:.2f}.\n\n| whole command | phases | peak RSS | streaming bound |\n|---|---|---|---|\n"
        f"| {run['wall_s']:.0f} s | {phases} | {run['peak_rss_mb']} MiB | {result['streaming_bound_mb']} MiB |\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
