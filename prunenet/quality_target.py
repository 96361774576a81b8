"""Compress to a quality target: the largest ratio whose KL against the original stays within a bound.

The kept width is searched by bisection on a grid of widths (multiples of `align`, else of 1/64 of the
FFN width), assuming the KL falls as the width grows: each step compresses at one width with the run's
own selector, repair and probes, and measures the mean KL(original || compressed) on held-out text the
original writes itself (with another seed than the probes). The full width has KL 0 and needs no
evaluation; about log2(64) = 6 evaluations find the width.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

GRID_STEPS = 64  # widths searched without --align: multiples of n / 64
MAX_KL_TOKENS = 2048  # held-out self-written tokens the KL is measured on


@dataclass
class WidthSearch:
    """The widths checked, in order, with their KL; `width` is the smallest that stayed within `max_kl`."""

    max_kl: float
    n: int
    width: int
    checked: list[dict] = field(default_factory=list)  # {"ffn_width", "ratio", "kl"} per evaluation

    @property
    def ratio(self) -> float:
        return round(1 - self.width / self.n, 6)

    def as_dict(self) -> dict:
        return {"max_kl": self.max_kl, "ffn_width": self.width, "ratio": self.ratio, "checked": self.checked}


def width_grid(n: int, align: int | None = None) -> list[int]:
    """Candidate kept widths, ascending, ending with n (which keeps every row)."""
    step = align if align else max(1, round(n / GRID_STEPS))
    grid = list(range(step, n, step))
    return [*grid, n]


def check_max_kl(max_kl: float, tokens: int = MAX_KL_TOKENS) -> None:
    """ValueError naming the bad value unless `max_kl` is a positive number and `tokens` an int >= 2."""
    if not (isinstance(max_kl, (int, float)) and not isinstance(max_kl, bool) and math.isfinite(max_kl)
            and max_kl > 0):
        raise ValueError(f"max_kl={max_kl!r} must be a positive number of nats")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 2:
        raise ValueError(f"max_kl_tokens={tokens!r} must be an int of at least 2 tokens")


def search_width(n: int, max_kl: float, kl_of: Callable[[int], float], align: int | None = None) -> WidthSearch:
    """Bisection over `width_grid(n, align)` for the smallest width with kl_of(width) <= max_kl."""
    check_max_kl(max_kl)
    grid = width_grid(n, align)
    search = WidthSearch(max_kl, n, n)
    failing, passing = -1, len(grid) - 1  # grid indices: the widest known to fail, the narrowest known to pass
    while passing - failing > 1:
        middle = (failing + passing) // 2
        kl = float(kl_of(grid[middle]))
        search.checked.append({"ffn_width": grid[middle], "ratio": round(1 - grid[middle] / n, 6), "kl": kl})
        if kl <= max_kl:
            passing = middle
        else:
            failing = middle
    search.width = grid[passing]
    return search
