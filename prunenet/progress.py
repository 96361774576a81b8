"""Progress bars that suit where they are drawn.

On a terminal a bar redraws itself as work advances. Where stderr is not a terminal (a farm's or a
scheduler's log), every redraw would be one more line of the log: there a bar draws only its first and
final state, one line per phase, as pip and huggingface_hub do.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    return sys.stderr.isatty()


def progress_bar(iterable=None, *, desc: str, unit: str, total: int | None = None, disable: bool = False) -> tqdm:
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                mininterval=0.1 if interactive() else float("inf"))


def quiet_library_bars() -> None:
    """Turn off the per-file bars of transformers and huggingface_hub when their redraws would flood a log."""
    if interactive():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
