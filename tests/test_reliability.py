"""What a compression farm relies on, tried for real: kills, determinism, stale temporary files, --quiet.

Kills: `python -m prunenet compress` runs in a subprocess on a tiny sharded LLaMA and is SIGKILLed at
a named point (the test hook $PRUNENET_TEST_KILL_AT, `prunenet.atomic.kill_point`) or, during the
fit, by this test as soon as the fit's progress bar appears. Right after each kill the target is
absent, as it was, or complete; the next run removes the dead run's temporary siblings and writes an
output byte-identical (sha256 of every file) to an undisturbed run's.
"""
from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_error, dead_pid, leftovers
from tiny_models import SECOND_SHARD as SHARD
from tiny_models import build_model, corpus_tokenizer, save_model, save_tiny_llama

from prunenet.atomic import KILL_ENV, atomic_folder, atomic_write, clean_stale
from prunenet.cli import main

# Plain slicing: no fit, no probes, so that the killed runs start and finish fast.
SLICE = ["--ratio", "0.4", "--selector", "random", "--repair", "none", "--quiet"]


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def prunenet_process(args: list[str], kill_at: str | None = None, **env: str) -> subprocess.Popen:
    environment = {**os.environ, **env}
    environment.pop(KILL_ENV, None)
    if kill_at is not None:
        environment[KILL_ENV] = kill_at
    return subprocess.Popen([sys.executable, "-m", "prunenet", *map(str, args)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err.decode()


def temporary_names(out: Path, pid: int) -> dict[str, Path]:
    """The temporary siblings of `out` a process `pid` of this host may leave: kind -> path."""
    host = socket.gethostname()
    return {kind: out.parent / f".{out.name}.{kind}-{host}-{pid}" for kind in ("partial", "old")}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reliability") / "llama"
    save_tiny_llama(path)
    assert (path / SHARD).exists()
    return path


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory) -> dict[str, str]:
    """What an undisturbed run writes."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["compress", str(src), *SLICE, "--out", str(out)]) == 0
    return digests(out)


# ---------------------------------------------------------------------------------------------------
# SIGKILL at every stage of writing an output

def _previous_output(out: Path) -> None:
    out.mkdir()
    (out / "previous.txt").write_text("an earlier output")


def test_kill_mid_shard_leaves_no_target_and_a_half_written_temporary(src, reference, tmp_path):
    out = tmp_path / "out"
    process = prunenet_process(["compress", src, *SLICE, "--out", out], kill_at=f"shard:{SHARD}")
    code, err = finish(process)
    assert code == -signal.SIGKILL, err
    assert not out.exists()
    partial = temporary_names(out, process.pid)["partial"]
    assert leftovers(tmp_path) == [partial.name]
    written = digests(partial)
    assert written["model-00001-of-00004.safetensors"] == reference["model-00001-of-00004.safetensors"]
    half, whole = (partial / SHARD).read_bytes(), (src / SHARD).stat().st_size
    assert 0 < len(half) < whole  # killed inside the shard: it is really half-written
    assert "config.json" not in written
    # The next run cleans up and writes the same output as an undisturbed run.
    assert main(["compress", str(src), *SLICE, "--out", str(out)]) == 0
    assert digests(out) == reference
    assert leftovers(tmp_path) == []


def test_kill_before_rename_leaves_no_target(src, reference, tmp_path):
    out = tmp_path / "out"
    process = prunenet_process(["compress", src, *SLICE, "--out", out], kill_at="before-rename")
    code, err = finish(process)
    assert code == -signal.SIGKILL, err
    assert not out.exists()
    partial = temporary_names(out, process.pid)["partial"]
    assert digests(partial) == reference  # complete, but never renamed: the target stays absent
    assert main(["compress", str(src), *SLICE, "--out", str(out)]) == 0
    assert digests(out) == reference
    assert leftovers(tmp_path) == []


def test_kill_between_the_renames_of_an_overwrite_restores_the_previous_output(src, reference, tmp_path):
    out = tmp_path / "out"
    _previous_output(out)
    process = prunenet_process(["compress", src, *SLICE, "--out", out, "--overwrite"], kill_at="mid-swap")
    code, err = finish(process)
    assert code == -signal.SIGKILL, err
    assert not out.exists()  # the only moment an output is absent: the previous one is aside
    names = temporary_names(out, process.pid)
    assert (names["old"] / "previous.txt").is_file() and digests(names["partial"]) == reference
    # The next run puts the previous output back first: without --overwrite it is refused, as before.
    assert main(["compress", str(src), *SLICE, "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt"]
    assert leftovers(tmp_path) == []
    assert main(["compress", str(src), *SLICE, "--out", str(out), "--overwrite"]) == 0
    assert digests(out) == reference
    assert leftovers(tmp_path) == []


def test_kill_after_the_renames_of_an_overwrite_leaves_the_new_output(src, reference, tmp_path):
    out = tmp_path / "out"
    _previous_output(out)
    process = prunenet_process(["compress", src, *SLICE, "--out", out, "--overwrite"], kill_at="after-swap")
    code, err = finish(process)
    assert code == -signal.SIGKILL, err
    assert digests(out) == reference
    names = temporary_names(out, process.pid)
    assert leftovers(tmp_path) == [names["old"].name]
    assert main(["compress", str(src), *SLICE, "--out", str(out), "--overwrite"]) == 0
    assert digests(out) == reference
    assert leftovers(tmp_path) == []


def _wait_for(process: subprocess.Popen, text: bytes, timeout: float = 120) -> bytes:
    """Read the process's stderr until `text` appears; return what was read."""
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline and process.poll() is None, seen.decode(errors="replace")
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    return seen


def test_kill_during_the_fit_writes_nothing(src, tmp_path):
    out, policy, report = tmp_path / "out", tmp_path / "p" / "policy.safetensors", tmp_path / "r.json"
    args = ["compress", src, "--ratio", "0.4", "--selector", "prunenet", "--repair", "none", "--episodes", "100000",
            "--out", out, "--save-policy", policy, "--json", report]
    process = prunenet_process(args)
    try:
        _wait_for(process, b"fit:")  # the fit's progress bar: 100000 episodes are far from done
    finally:
        process.kill()
    code, _ = finish(process)
    assert code == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# Determinism: the same command twice gives the same bytes

def test_same_command_twice_gives_byte_identical_outputs(src, tmp_path):
    """A fit, sampled rows: two processes (different hash seeds) write identical files."""
    outputs = [tmp_path / "a", tmp_path / "b"]
    processes = [
        prunenet_process(["compress", src, "--ratio", "0.3", "--selector", "prunenet", "--repair", "none",
                          "--episodes", "3", "--seed", "7", "--out", out, "--quiet"], PYTHONHASHSEED=str(seed))
        for seed, out in enumerate(outputs)
    ]
    for process in processes:
        assert finish(process) == (0, "")
    first, second = (digests(out) for out in outputs)
    assert first == second
    assert {"config.json", "prunenet.json", SHARD} <= first.keys()


# ---------------------------------------------------------------------------------------------------
# Stale temporary siblings: only those of dead processes of this host are removed

def test_clean_stale_removes_only_dead_processes_of_this_host(tmp_path):
    host, dead = socket.gethostname(), dead_pid()
    entries = {
        f".out.partial-{host}-{dead}": "dead: removed",
        f".r.json.partial-{host}-{dead}": "dead: removed",
        f".out.partial-{host}-{os.getpid()}": "alive: kept",
        f".out.partial-another-host-{dead}": "another host: kept",
        ".out.partial": "not ours: kept",
        "out": "the output: kept",
    }
    for name in entries:
        (tmp_path / name).mkdir()
    removed = clean_stale(tmp_path)
    assert removed == sorted(name for name, fate in entries.items() if fate.endswith("removed"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        name for name, fate in entries.items() if fate.endswith("kept"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told apart through /proc")
def test_clean_stale_counts_a_killed_process_not_yet_reaped_as_dead(tmp_path):
    """A killed process keeps its pid as a zombie until its parent reaps it (orphans wait on an init that
    may never); it writes nothing more, so its temporaries go."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        (tmp_path / f".out.partial-{socket.gethostname()}-{process.pid}").mkdir()
        assert clean_stale(tmp_path) == [f".out.partial-{socket.gethostname()}-{process.pid}"]
    finally:
        process.wait()


def test_clean_stale_puts_back_an_output_caught_between_the_renames(tmp_path):
    host, dead = socket.gethostname(), dead_pid()
    (tmp_path / f".out.old-{host}-{dead}").mkdir()
    (tmp_path / f".out.old-{host}-{dead}" / "previous.txt").write_text("x")
    (tmp_path / f".out.partial-{host}-{dead}").mkdir()
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "previous.txt").read_text() == "x"


def test_atomic_outputs_make_missing_folders_and_remove_them_on_failure(tmp_path):
    with atomic_folder(tmp_path / "a" / "b" / "out", overwrite=False) as tmp:
        (tmp / "f").write_text("done")
    assert (tmp_path / "a" / "b" / "out" / "f").read_text() == "done"
    atomic_write(tmp_path / "c" / "r.json", False, lambda tmp: tmp.write_text("{}"))
    assert (tmp_path / "c" / "r.json").read_text() == "{}"

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("simulated failure")

    with pytest.raises(RuntimeError, match="simulated"):
        atomic_write(tmp_path / "d" / "e" / "r.json", False, fail)
    with pytest.raises(RuntimeError, match="simulated"), atomic_folder(tmp_path / "a" / "x" / "y", False):
        raise RuntimeError("simulated failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]  # the folders the failures made are gone
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


# ---------------------------------------------------------------------------------------------------
# --quiet prints nothing but errors; long phases say what runs

def test_quiet_compress_and_fit_print_nothing(src, tmp_path, capfd):
    argv = ["compress", str(src), "--ratio", "0.4", "--selector", "prunenet", "--repair", "none", "--episodes", "2",
            "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"),
            "--save-policy", str(tmp_path / "p.safetensors"), "--quiet"]
    assert main(argv) == 0
    assert main(["fit", str(src), "--episodes", "2", "--out", str(tmp_path / "q.safetensors"), "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")
    cli_error(capfd, argv, ["pass --overwrite to replace it"])  # errors still print


@pytest.fixture(scope="module")
def eval_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    original = save_model(build_model("llama"), root / "original", tokenizer=corpus_tokenizer())
    compressed = root / "compressed"
    assert main(["compress", str(original), *SLICE, "--out", str(compressed)]) == 0
    return original, compressed


EVAL = ["--tokens", "40", "--window", "16", "--prefill-len", "8", "--decode-prompt", "4", "--decode-tokens", "2",
        "--repeats", "1", "--device", "cpu"]


def test_eval_says_what_its_throughput_phase_runs(eval_models, capfd):
    original, compressed = eval_models
    assert main(["eval", str(original), str(compressed), *EVAL]) == 0
    out, err = capfd.readouterr()
    assert "throughput of 2 model(s): prefill batch 1 x 8 tokens" in err and "--no-throughput skips this" in err
    # The bar: 2 models x (3 windows of 16 of the 40 tokens + (prefill, decode) x (1 warm-up + 1 timed run)).
    assert "14/14" in err
    assert "ppl" in out.lower()
    assert main(["eval", str(original), str(compressed), *EVAL, "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")
