"""`prunenet farm` on a real multi-node Ray cluster on this machine: a head and two worker nodes.

One module-scoped fixture starts the cluster with `ray.cluster_utils.Cluster`: the head (GCS and a raylet) and
two worker nodes (a raylet each) joined to its GCS, 1 CPU and a custom resource ("head", "node_a", "node_b")
each, as `ray start --head` / `ray start --address=...` would make them. Cluster rather than `ray start`
subprocesses: it holds the pids of the processes it starts, so that its teardown, and `remove_node` (the node
failure here), end exactly those (a raylet's workers and agents end with it), where stopping nodes made by
`ray start` takes `ray stop`, which kills every Ray process on the machine, other users' included; and each
node picks free ports. Ray's files and the cluster's address go to a temporary RAY_TMPDIR of the module's,
not /tmp/ray, so that a plain `ray.init()` elsewhere on the machine cannot join this cluster, and
`--address auto` here finds this one. The farm joins with `address=` as it would any running cluster, and
disconnects at the end. The tests run in file order: the node failure last, since it removes a node.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import leftovers, read_json
from tiny_models import FFN, build_model, save_model

import prunenet
from prunenet.cli import main
from prunenet.farm.summary import table

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

NODES = ("head", "node_a", "node_b")
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # the farm passes paths, never tensors
OPTIONS = {"repair": "none", "seed": 0}


def ray_processes(temp: Path) -> list[psutil.Process]:
    """The processes of this module's cluster (GCS, raylets, agents, workers): every one of them inherits the
    module's RAY_TMPDIR, which no other Ray on the machine has."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get("RAY_TMPDIR") == str(temp):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def stop_stragglers(temp: Path, wait_s: float = 20.0) -> list[str]:
    """Wait for the cluster's processes to end (workers exit on their own once their raylet is gone); kill by
    pid what is still there after `wait_s`, and name it."""
    deadline = time.monotonic() + wait_s
    while (left := ray_processes(temp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    named = []
    for process in left:
        try:
            named.append(f"{process.pid} {process.name()}")
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return named


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes of 1 CPU each; yields (Cluster, {name: Node})."""
    from ray.cluster_utils import Cluster

    temp = Path(tempfile.mkdtemp(prefix="pnray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", str(temp))
        env.delenv("RAY_ADDRESS", raising=False)
        started = Cluster(shutdown_at_exit=True)  # at exit, and a reaper per node, should the teardown not run
        try:
            nodes = {}
            for name in NODES:
                extra = {"include_dashboard": False} if name == "head" else {}
                nodes[name] = started.add_node(num_cpus=1, resources={name: 1}, object_store_memory=OBJECT_STORE_BYTES,
                                               **extra)
            started.wait_for_nodes()
            alive = {n["NodeID"]: n["Resources"] for n in started.global_state.node_table() if n["Alive"]}
            assert {alive[node.node_id].get(name) for name, node in nodes.items()} == {1.0}
            yield started, nodes
        finally:
            try:
                if ray.is_initialized():  # a test that failed inside the farm's own connection
                    ray.shutdown()
                started.shutdown()
            finally:
                stragglers = stop_stragglers(temp)
                shutil.rmtree(temp, ignore_errors=True)
    assert not stragglers, f"Ray processes of the cluster outlived its shutdown (killed now): {stragglers}"


def write_plan(path: Path, out: Path, models, ratios, extra: str = "") -> Path:
    lines = [f"out = {json.dumps(str(out))}", f"models = {json.dumps([str(m) for m in models])}",
             f"ratios = {json.dumps(ratios)}", 'selector = "random"', extra, "[options]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in OPTIONS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def reloads(row: dict) -> None:
    """The job's output is whole: it loads, has the FFN width the summary says, and runs."""
    from transformers import AutoModelForCausalLM

    folder = Path(row["output"])
    assert leftovers(folder.parent) == []
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.intermediate_size == row["ffn_width_after"] == round((1 - row["ratio"]) * FFN)
    assert model(torch.tensor([[1, 5, 9, 2]])).logits.shape[:2] == (1, 4)


@pytest.mark.ray
@pytest.mark.slow
def test_plan_spreads_over_the_nodes(cluster, tmp_path, capsys):
    """Through the CLI and `--address auto`: 3 models x 2 ratios; the three scorings, submitted together at 1
    CPU each, need all three nodes; every output is complete and reloads."""
    _, nodes = cluster
    ids = {node.node_id: name for name, node in nodes.items()}
    models = [save_model(build_model(family, seed=i), tmp_path / family) for i, family in
              enumerate(("llama", "qwen2", "llama-mlp-bias"))]
    out, summary = tmp_path / "runs", tmp_path / "summary.json"
    plan = write_plan(tmp_path / "plan.toml", out, models, [0.25, 0.5])
    assert main(["farm", str(plan), "--address", "auto", "--json", str(summary)]) == 0
    assert "6 jobs: 6 done" in capsys.readouterr().out
    report = read_json(summary)
    assert report["counts"] == {"done": 6}
    assert report["resources"]["nodes"] == 3 and report["resources"]["CPU"] == 3
    scorings = [model["scoring"]["result"] for model in report["models"].values()]
    assert sorted(ids[s["node"]] for s in scorings) == sorted(NODES)
    assert {r["node"] for r in report["jobs"]} <= set(ids)
    assert all(r["retries"] == 0 for r in report["jobs"]) and all(s["retries"] == 0 for s in scorings)
    csv_header = summary.with_suffix(".csv").read_text().splitlines()[0].split(",")
    assert {"node", "retries"} <= set(csv_header)
    for row in report["jobs"]:
        assert read_json(Path(row["output"]) / "farm-job.json")["result"]["node"] == row["node"]
        reloads(row)


def stall_on(node_id: str, markers: str):
    """A worker set-up hook: on node `node_id`, the first compress to write a shard stops half-way through it
    (its first tensor written), says so (markers/armed renamed to markers/stalled-PID), and waits for the node
    to die under it. On the other nodes a compress waits at the same point until that has happened: with every
    other CPU held, Ray has to place a job on `node_id`. Both give up after 60 s (the victim raises)."""
    def install():
        import os
        import time
        from pathlib import Path

        import ray

        from prunenet.atomic import KILL_ENV
        from prunenet.model import checkpoint

        victim = ray.get_runtime_context().get_node_id() == node_id
        os.environ[KILL_ENV] = "stall"  # arms the shard writer's test hook; no kill point has this name
        original = checkpoint.kill_point

        def kill_point(name: str) -> None:
            if not name.startswith("shard:"):
                return original(name)
            deadline = time.monotonic() + 60
            if not victim:
                while not list(Path(markers).glob("stalled-*")) and time.monotonic() < deadline:
                    time.sleep(0.05)
                return original(name)
            armed = Path(markers) / "armed"
            try:
                armed.rename(armed.with_name(f"stalled-{os.getpid()}"))  # atomic: one task only
            except FileNotFoundError:
                return original(name)
            time.sleep(60)
            raise RuntimeError("the node was not killed")

        checkpoint.kill_point = kill_point
    return install


@pytest.mark.ray
@pytest.mark.slow
def test_node_killed_mid_job_is_retried_elsewhere(cluster, tmp_path, monkeypatch):
    """Through the Python API and `address=`: node_b dies (`remove_node`: SIGKILL to its raylet; then to the
    worker, which would end on its own about a second later) while one of its jobs is half-way through
    writing its shard; Ray reruns the job on a live node, the output is whole with nothing half-written left
    beside it, and the summary says which job was retried and where."""
    started, nodes = cluster
    victim = nodes["node_b"]
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "armed").touch()
    init = ray.init  # the farm's own ray.init(address=...), with the stalling hook in every worker of its job
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: init(
        *args, runtime_env={"worker_process_setup_hook": stall_on(victim.node_id, str(markers))}, **kwargs))

    seen: dict = {}
    farm_ended = threading.Event()
    folder = tmp_path / "runs" / "qwen2"

    def kill_when_stalled():
        while not (stalled := list(markers.glob("stalled-*"))):
            if farm_ended.wait(0.05):
                return
        seen["pid"] = pid = int(stalled[0].name.split("-")[1])
        seen["partial"] = [name for name in leftovers(folder) if name.endswith(f"-{pid}")]
        started.remove_node(victim, allow_graceful=False)
        try:  # the whole node is gone, as when its machine fails
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        seen["killed"] = True

    killer = threading.Thread(target=kill_when_stalled, daemon=True)
    model = save_model(build_model("qwen2", seed=3), tmp_path / "qwen2")
    plan = write_plan(tmp_path / "plan.toml", tmp_path / "runs", [model], [0.2, 0.4, 0.6], extra="retries = 2")
    killer.start()
    try:
        report = prunenet.farm(plan, address=started.address, progress=False)
    finally:
        farm_ended.set()
        killer.join()
    assert seen.get("killed"), "no job stalled on node_b, or the node could not be removed"
    assert len(seen["partial"]) == 1  # killed mid-write: the job's temporary output is beside its target
    assert victim not in started.list_all_nodes()

    assert report["counts"] == {"done": 3}
    assert report["resources"]["nodes"] == 3  # when the farm started
    retried = [row for row in report["jobs"] if row["retries"]]
    assert len(retried) == 1 and retried[0]["retries"] == 1
    alive = {nodes["head"].node_id, nodes["node_a"].node_id}
    assert retried[0]["node"] in alive and retried[0]["status"] == "done"
    assert all(row["retries"] == 0 for row in report["jobs"] if row is not retried[0])
    assert "done, retried 1 time" in table(report)

    # The killed attempt's half-written folder is gone: removed by the retry as it began, or by the sweep at
    # the end; either way the summary has nothing left to report.
    assert leftovers(folder) == [] and report["temporaries"]["left"] == []
    assert report["temporaries"]["removed"] in ([], [str(folder / name) for name in seen["partial"]])
    for row in report["jobs"]:
        reloads(row)
