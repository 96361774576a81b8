"""Ratios and the widths they keep: every layer keeps int((1 - ratio) n) of its n FFN rows."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path


def check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"ratio must be a number, got {type(ratio).__name__}")
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise ValueError(f"ratio {ratio!r} is outside [0, 1)")
    return float(ratio)


def parse_ratios(ratio: float | None, ratios: Sequence[float] | str | None) -> list[float]:
    """Exactly one of a ratio and a list of ratios (or a comma-separated string of them), checked."""
    if (ratio is None) == (ratios is None):
        raise ValueError("give exactly one of ratio (--ratio) and ratios (--ratios)")
    if ratio is not None:
        return [check_ratio(ratio)]
    if isinstance(ratios, str):
        try:
            ratios = [float(r) for r in ratios.split(",") if r.strip()]
        except ValueError:
            raise ValueError(f"ratios {ratios!r} must be comma-separated numbers, e.g. 0.1,0.2,0.3") from None
    if not ratios:
        raise ValueError("ratios is empty")
    if len(set(ratios)) != len(ratios):
        raise ValueError(f"ratios {list(ratios)!r} repeat a value")
    return [check_ratio(r) for r in ratios]


def kept_width(n: int, ratio: float, align: int | None = None) -> int:
    """Rows kept per layer: int((1 - ratio) n) as in the paper, optionally a multiple of `align`.

    Alignment rounds the kept width down, so that the compressed FFN runs on fast matmul shapes and never
    removes fewer rows than asked; the report states the width actually kept.
    """
    check_ratio(ratio)
    k = int((1.0 - ratio) * n + 1e-9)  # the epsilon absorbs float error such as (1 - 0.71) * 100
    if k < 1:
        raise ValueError(f"ratio {ratio!r} leaves no row of {n}")
    if align is not None:
        if isinstance(align, bool) or not isinstance(align, int) or not 1 <= align <= n:
            raise ValueError(f"align={align!r} must be an int in [1, FFN width {n}]")
        if k < align:
            raise ValueError(f"ratio {ratio!r} keeps {k} of {n} rows, fewer than one multiple of align={align}")
        k = align * (k // align)
    return k


def output_paths(out: str | os.PathLike, ratios: Sequence[float]) -> list[Path]:
    """One ratio writes to `out`; several write to `out/ratio-R` each."""
    out = Path(out)
    if len(ratios) == 1:
        return [out]
    return [out / f"ratio-{r:g}" for r in ratios]
