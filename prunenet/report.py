"""Timing phases and writing the JSON reports that every command can produce."""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .atomic import atomic_write, check_output


class PhaseTimer:
    """Wall time per named phase; CUDA work is synchronised at the end of each phase."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in self.seconds.items()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def check_json_path(path: str | os.PathLike | None) -> Path | None:
    """Fail before any work if a report could not be written where asked."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"report path {str(path)!r} is a folder")
    return check_output(path, overwrite=True)  # not a link; a missing folder is made when it is written


def save_report(path: str | os.PathLike | None, report: dict) -> None:
    if path is not None:
        text = json.dumps(report, indent=2) + "\n"
        atomic_write(Path(path), True, lambda tmp: tmp.write_text(text, encoding="utf-8"))
