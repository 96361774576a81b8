"""Outputs written whole or not at all: model folders, policies, scores, reports, the embedded model's cache.

An output NAME is written as a sibling `.NAME.partial-HOST-PID` and renamed onto NAME at the end;
replacing an existing folder first moves it aside to `.NAME.old-HOST-PID`. A process killed at any
point (SIGKILL included) leaves NAME as it was (absent or the previous output) or complete, plus such
siblings: the next write into the same folder removes those of dead processes of this host, and moves
a previous output back if the kill fell between the two renames. Siblings of live processes, or of
other hosts sharing the file system, are left alone. `kill_point` is the hook through which the tests
kill a real process at a named moment.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExists(ValueError):
    """An output that exists and may not be replaced (the CLI words the remedy as its flag, --overwrite)."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"output {str(path)!r} exists; pass overwrite=True to replace it")


def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output unless `overwrite`, a symbolic link, or a folder that cannot be made.

    Missing parent folders are fine (made when the output is written, as `save_pretrained` does).
    Temporary siblings that killed runs left beside `out` are cleaned up first (`clean_stale`).
    """
    out = Path(out)
    clean_stale(out.parent)
    if out.is_symlink():
        raise ValueError(f"output {str(out)!r} is a symbolic link (to {os.readlink(out)!r}); give the real path "
                         "(replacing the link would not write where it points)")
    if out.exists() and not overwrite:
        raise OutputExists(out)
    for ancestor in out.absolute().parents:  # the nearest existing one must be a writable folder
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"cannot make the folder of output {str(out)!r}: {str(ancestor)!r} is a file")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise ValueError(f"cannot write output {str(out)!r}: folder {str(ancestor)!r} is not writable")
            break
        if ancestor.is_symlink():
            raise ValueError(f"cannot make the folder of output {str(out)!r}: {str(ancestor)!r} is a broken link")
    return out


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<host>[^/]+)-(?P<pid>\d+)$")
KILL_ENV = "PRUNENET_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process here if $PRUNENET_TEST_KILL_AT names this point.

    Points: `shard:FILE` (FILE half-written: after its first tensor), `before-rename` (the first output
    to get there is complete beside its target), `mid-swap` (a replaced folder moved aside, the new one
    not yet in place), `after-swap` (the new folder in place, the previous one not yet removed).
    Used by tests/test_reliability.py; unset, it costs one environment look-up.
    """
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{_host()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    # A killed process whose parent has not reaped it yet (a zombie) still answers signal 0, but writes
    # nothing more. Orphans wait for that where the container's init does not reap them.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # ended in between; or no /proc (not Linux), where signal 0 is all there is
        return not Path("/proc/self").is_dir()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split(" ", 1)[0] != "Z"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def temporaries(folder: Path) -> list[Path]:
    """The temporary siblings of atomic writes in `folder`, of any process (none if it does not exist)."""
    if not folder.is_dir():
        return []
    return [entry for entry in folder.iterdir() if _TEMPORARY.match(entry.name)]


def clean_stale(folder: Path) -> list[str]:
    """Remove the temporary siblings that dead processes of this host left in `folder`; return their names."""
    if not folder.is_dir():
        return []
    host, runs = _host(), {}
    for entry in folder.iterdir():
        found = _TEMPORARY.match(entry.name)
        if found and found["host"] == host and not _alive(int(found["pid"])):
            runs.setdefault((found["name"], found["pid"]), {})[found["kind"]] = entry
    for (name, _), entries in runs.items():
        target = folder / name
        if {"partial", "old"} <= entries.keys() and not (target.exists() or target.is_symlink()):
            try:  # killed between the two renames of a replacement: the previous output goes back
                entries.pop("old").rename(target)
            except OSError:
                pass
        for entry in entries.values():
            _remove(entry)
    return sorted(entry.name for entries in runs.values() for entry in entries.values())


def _make_parents(path: Path) -> list[Path]:
    """Make the missing parent folders of `path`; return those made, nearest first."""
    made = [p for p in path.absolute().parents if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def _unmake(folders: list[Path]) -> None:
    for folder in folders:  # nearest first; only what is still empty
        try:
            folder.rmdir()
        except OSError:
            break


@contextmanager
def atomic_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on failure it is removed."""
    out = check_output(out, overwrite)
    made = _make_parents(out)
    tmp = _sibling(out, "partial")
    _remove(tmp)
    try:  # the mkdir inside: an interrupt that lands just after it still removes the folder
        tmp.mkdir()
        yield tmp
    except BaseException:
        _remove(tmp)
        _unmake(made)
        raise
    kill_point("before-rename")
    if not out.exists():
        tmp.rename(out)
        return
    old = _sibling(out, "old")
    out.rename(old)
    kill_point("mid-swap")
    tmp.rename(out)
    kill_point("after-swap")
    _remove(old)


def atomic_write(path: Path, overwrite: bool, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    path = check_output(path, overwrite)
    made = _make_parents(path)
    tmp = _sibling(path, "partial")
    try:
        write(tmp)
        kill_point("before-rename")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _unmake(made)
        raise
