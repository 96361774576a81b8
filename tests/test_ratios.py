"""Kept widths: how many FFN rows a ratio leaves, optionally aligned; bad ratios and alignments refused."""
from __future__ import annotations

import pytest

from prunenet.ratios import kept_width


@pytest.mark.parametrize(
    "n, ratio, align, want",
    [(1536, 0.3, None, 1075), (100, 0.71, None, 29), (1536, 0.3, 64, 1024), (1536, 0.3, 128, 1024),
     (1536, 0.2, 64, 1216), (40, 0.5, 16, 16), (10, 0.0, None, 10), (1536, 0.0, 64, 1536)],
)
def test_kept_width(n, ratio, align, want):
    assert kept_width(n, ratio, align) == want


@pytest.mark.parametrize("ratio", [1.0, -0.1, float("nan"), 0.99])
@pytest.mark.parametrize("align", [None, 8])
def test_kept_width_rejects_bad_ratios(ratio, align):
    with pytest.raises(ValueError, match="ratio"):
        kept_width(40, ratio, align)


@pytest.mark.parametrize("align", [0, -64, 41, True])
def test_kept_width_rejects_bad_alignment(align):
    with pytest.raises(ValueError, match="align"):
        kept_width(40, 0.3, align)


@pytest.mark.parametrize("n, ratio, align", [(1536, 0.3, 64), (1536, 0.21, 128), (100, 0.05, 8), (40, 0.5, 16)])
def test_alignment_never_removes_fewer_rows_than_asked(n, ratio, align):
    k = kept_width(n, ratio, align)
    assert k % align == 0 and k <= kept_width(n, ratio) and k > kept_width(n, ratio) - align


def test_alignment_that_leaves_no_multiple_is_refused():
    with pytest.raises(ValueError, match="fewer than one multiple of align=16"):
        kept_width(40, 0.8, 16)
