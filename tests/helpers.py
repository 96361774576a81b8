"""Helpers shared by test files: folder snapshots, atomic-write leftovers, the CLI's one error line, JSON,
activations, a Hub cache laid out by hand. Tiny models and their tokenizers are in tiny_models.py; the
`own_cache` and `hub_cache` fixtures are in conftest.py."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from prunenet.cli import main

# A small probe budget for the tests that compress on activations; written in float32, the dtype a loaded
# tiny model samples in itself, so that `compress` and `prune_` of the same model write the same probes.
PROBES = dict(probe_tokens=256, probe_length=32, probe_dtype="float32")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder`, links not followed: relative path -> (size, mtime in ns). Two equal
    snapshots mean nothing was written, moved, removed or rewritten."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def dead_pid() -> int:
    """The pid of a process that has just ended (of this host: stale temporaries carry it)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def leftovers(parent: Path) -> list[str]:
    """Temporary folders/files of an atomic write (`.NAME.partial-PID`, `.NAME.old-PID`) left in `parent`."""
    if not Path(parent).is_dir():
        return []
    return sorted(p.name for p in Path(parent).iterdir() if ".partial-" in p.name or ".old-" in p.name)


def assert_nothing_written(out: Path, report: Path | None = None) -> None:
    assert not Path(out).exists(), f"{out} was written"
    assert leftovers(Path(out).parent) == []
    if report is not None:
        assert not Path(report).exists(), f"report {report} was written"
        assert leftovers(Path(report).parent) == []


def cli_error(capture, argv: list, says: Iterable[str] = ()) -> str:
    """Run `prunenet ARGV` in-process and check that it fails cleanly: exit status 2, nothing on stdout, no
    traceback, one `prunenet: error: ` line on stderr holding each of `says`. `capture` is pytest's capsys
    or capfd; what it held before the call is dropped. Returns the error line."""
    capture.readouterr()
    code = main([str(arg) for arg in argv])
    out, err = capture.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prunenet: error: "), err
    for text in says:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert out == ""
    return lines[0]


def correlated_activations(tokens: int, n: int, seed: int = 0) -> torch.Tensor:
    """(tokens, n) correlated, non-zero-mean activations, as an FFN's are."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, n, generator=g) @ torch.randn(n, n, generator=g) * 0.3 + 0.2


def add_snapshot(cache: Path, files: dict[str, bytes], commit: str, refs: tuple[str, ...] = ("main",),
                 repo_id: str = "org/name") -> Path:
    """Lay `files` out in a Hub cache as huggingface_hub does: contents in blobs/, snapshots/<commit>/
    linking to them, refs/<branch> holding the commit (no newline)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot
