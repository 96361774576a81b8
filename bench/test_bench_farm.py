"""The farm against a shell loop: 4 models x 3 ratios, `prunenet farm` vs the same jobs as sequential
`prunenet compress` commands, all in one run on one machine; and Ray's scheduling overhead per job.

Models: random LLaMA-family checkpoints (llama, qwen2, mistral, llama) of L layers, FFN width n, hidden h
(default 4 x 1024 x 256, vocabulary 2048, about 4.7M parameters each). Selector "prunenet" (its policy fit is
the scoring step the farm does once per model), repair "none", PRUNENET_BENCH_EPISODES episodes (default 20).
Three ways, each a subprocess as a user would type it:
  - per job:   one `prunenet compress M --ratio r` per (model, ratio): 12 fits, 12 interpreter starts;
  - per model: one `prunenet compress M --ratios a,b,c` per model: 4 fits, 4 interpreter starts;
  - farm:      one `prunenet farm plan.toml` (a local Ray on all CPUs; one fit per model, tasks in parallel).
Scheduling overhead per task = (farm wall x CPUs - sum of the tasks' own wall times) / tasks: the CPU-seconds
the farm spends outside its task bodies (interpreter and Ray start, worker start, dispatch, idle CPUs at the
end), per task; and Ray's round trip of an empty task on a warm worker.
The machine's 1-minute load average before and after is recorded: under load from other processes,
torch's default threads (one per core) in each command can slow a fit by 10x or more, while the farm's tasks
run one thread each; a figure worth quoting is taken with the load near zero.
Sizes: PRUNENET_BENCH_SHAPE=L,n,h and PRUNENET_FARM_BENCH_SIZE=models,ratios (CI: tiny). With timing enabled,
the figures go to bench/results/farm-cpu.json.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

SHAPE = tuple(int(x) for x in os.environ.get("PRUNENET_BENCH_SHAPE", "4,1024,256").split(","))
MODELS, RATIO_COUNT = (int(x) for x in os.environ.get("PRUNENET_FARM_BENCH_SIZE", "4,3").split(","))
EPISODES = int(os.environ.get("PRUNENET_BENCH_EPISODES", "20"))
RATIOS = [0.1, 0.2, 0.3, 0.4][:RATIO_COUNT]
DEVICE_NAME = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
FAMILIES = ["llama", "qwen2", "mistral", "llama"]
OPTIONS = ["--selector", "prunenet", "--repair", "none", "--episodes", str(EPISODES), "--quiet"]


def build(family: str, seed: int, folder: Path) -> Path:
    import transformers as T

    layers, n, h = SHAPE
    config = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "mistral": T.MistralConfig}[family](
        vocab_size=2048, hidden_size=h, intermediate_size=n, num_hidden_layers=layers,
        num_attention_heads=4 if h % 4 == 0 else 1, num_key_value_heads=1 if h % 4 else 2,
        max_position_embeddings=128)
    torch.manual_seed(seed)
    T.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def command(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prunenet", *args], check=True, env={**os.environ})
    return time.perf_counter() - start


def ffn_width(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["intermediate_size"]


def ray_round_trip_ms(count: int = 100) -> float:
    """Median seconds of submit + get of an empty task on a warm worker (the farm's dispatch cost)."""
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    try:
        empty = ray.remote(num_cpus=1)(lambda: None)
        ray.get(empty.remote())
        times = []
        for _ in range(count):
            start = time.perf_counter()
            ray.get(empty.remote())
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3
    finally:
        ray.shutdown()


def test_farm_against_sequential_commands(benchmark, tmp_path):
    load_before = os.getloadavg()[0]
    models = [build(FAMILIES[i % len(FAMILIES)], i, tmp_path / f"model-{i}") for i in range(MODELS)]
    seconds = {"per_job": 0.0, "per_model": 0.0}
    (tmp_path / "per-job").mkdir()
    (tmp_path / "per-model").mkdir()
    for model in models:
        for r in RATIOS:
            seconds["per_job"] += command("compress", str(model), "--ratio", str(r),
                                          "--out", str(tmp_path / "per-job" / f"{model.name}-{r:g}"), *OPTIONS)
    for model in models:
        seconds["per_model"] += command("compress", str(model), "--ratios", ",".join(map(str, RATIOS)),
                                        "--out", str(tmp_path / "per-model" / model.name), *OPTIONS)
    plan = tmp_path / "plan.toml"
    plan.write_text(f"out = {json.dumps(str(tmp_path / 'farm'))}\nmodels = {json.dumps([str(m) for m in models])}\n"
                    f'ratios = {json.dumps(RATIOS)}\nselector = "prunenet"\n'
                    f'[options]\nrepair = "none"\nepisodes = {EPISODES}\n', encoding="utf-8")
    summary = tmp_path / "farm.json"
    seconds["farm"] = benchmark.pedantic(command, ("farm", str(plan), "--json", str(summary), "--quiet"),
                                         rounds=1, iterations=1)

    report = json.loads(summary.read_text())
    jobs = MODELS * len(RATIOS)
    assert report["counts"] == {"done": jobs}
    for row in report["jobs"]:  # the three ways made the same sizes
        name, r = row["model"], row["ratio"]
        assert row["ffn_width_after"] == ffn_width(tmp_path / "per-job" / f"{name}-{r:g}") \
            == ffn_width(tmp_path / "per-model" / name / f"ratio-{r:g}") == int((1 - r) * SHAPE[1])
    cpus = report["resources"]["CPU"]
    task_s = sum(row["task_s"] for row in report["jobs"])
    task_s += sum(m["scoring"]["result"]["task_s"] for m in report["models"].values())
    tasks = jobs + MODELS
    figures = {
        "device": DEVICE_NAME, "cpu_count": os.cpu_count(), "ray_cpus": cpus, "shape": SHAPE, "models": MODELS,
        "ratios": RATIOS, "episodes": EPISODES, "selector": "prunenet", "jobs": jobs,
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
        "speedup_vs_per_job": round(seconds["per_job"] / seconds["farm"], 2),
        "speedup_vs_per_model": round(seconds["per_model"] / seconds["farm"], 2),
        "farm_task_seconds": round(task_s, 2),
        "overhead_cpu_s_per_task": round((seconds["farm"] * cpus - task_s) / tasks, 3),
        "ray_empty_task_round_trip_ms": round(ray_round_trip_ms(), 3),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    benchmark.extra_info.update(figures)
    print(f"\nfarm {MODELS} models x {len(RATIOS)} ratios {SHAPE}: per-job commands {seconds['per_job']:.1f} s, "
          f"per-model commands {seconds['per_model']:.1f} s, farm {seconds['farm']:.1f} s; overhead "
          f"{figures['overhead_cpu_s_per_task']:.2f} CPU-s per task, Ray round trip "
          f"{figures['ray_empty_task_round_trip_ms']:.2f} ms")
    if not benchmark.disabled:
        path = Path(__file__).with_name("results") / f"farm-{DEVICE_NAME.replace(' ', '_')}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
