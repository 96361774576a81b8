"""`--max-kl`: the largest ratio whose KL against the original, on held-out self-written text, stays within a bound."""
from __future__ import annotations

import math

import pytest
from helpers import PROBES, assert_nothing_written, cli_error, read_json
from tiny_models import build_model, save_model

import prunenet
from prunenet.quality_target import search_width, width_grid

pytestmark = pytest.mark.usefixtures("own_cache")
SEARCH = dict(max_kl_tokens=512, progress=False, **PROBES)


def test_the_grid_ends_with_every_row_and_follows_align():
    assert width_grid(1536)[:3] == [24, 48, 72] and width_grid(1536)[-1] == 1536
    assert width_grid(100, align=32) == [32, 64, 96, 100]


@pytest.mark.parametrize("max_kl", [0.05, 0.3, 0.999, 5.0])
def test_bisection_finds_the_narrowest_width_within_the_bound(max_kl):
    n = 640
    curve = lambda k: (1 - k / n) ** 2  # falls as the width grows, 0 at n
    search = search_width(n, max_kl, curve)
    grid = width_grid(n)
    assert curve(search.width) <= max_kl
    narrower = [w for w in grid if w < search.width]
    assert not narrower or curve(narrower[-1]) > max_kl
    assert len(search.checked) <= math.ceil(math.log2(len(grid))) + 1
    assert {c["ffn_width"] for c in search.checked} <= set(grid)


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), True, "0.3"])
def test_a_bad_bound_is_refused(bad):
    with pytest.raises(ValueError, match="max_kl="):
        search_width(64, bad, lambda k: 0.0)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return save_model(build_model("llama"), tmp_path_factory.mktemp("max_kl") / "src")


def test_compress_to_a_kl_bound_writes_the_width_it_measured(src, tmp_path):
    report = prunenet.compress(src, tmp_path / "out", max_kl=0.002, **SEARCH)
    search = report["max_kl"]
    chosen = next(c for c in search["checked"] if c["ffn_width"] == search["ffn_width"])
    assert chosen["kl"] <= 0.002
    # The next narrower width on the grid was checked and went past the bound.
    narrower = [w for w in width_grid(40) if w < search["ffn_width"]][-1]
    assert next(c for c in search["checked"] if c["ffn_width"] == narrower)["kl"] > 0.002
    assert read_json(tmp_path / "out" / "config.json")["intermediate_size"] == search["ffn_width"]
    provenance = read_json(tmp_path / "out" / "prunenet.json")
    assert provenance["max_kl"] == search and provenance["ratio"] == search["ratio"]
    assert report["outputs"][0]["ratio"] == search["ratio"] and 0 < search["ratio"] < 1
    # A looser bound removes at least as many rows; one no width meets keeps every row.
    assert prunenet.compress(src, tmp_path / "loose", max_kl=0.01, **SEARCH)["max_kl"]["ffn_width"] <= \
        search["ffn_width"]
    strict = prunenet.compress(src, tmp_path / "strict", max_kl=1e-9, **SEARCH)
    assert strict["max_kl"]["ffn_width"] == 40 and strict["outputs"][0]["ratio"] == 0


@pytest.mark.parametrize("options, says", [
    (dict(max_kl=0.1, ratio=0.3), "give no ratio"),
    (dict(max_kl=0.1, ratios=[0.2, 0.3]), "give no ratio"),
    (dict(max_kl=-1.0), "max_kl=-1.0"),
    (dict(max_kl=0.1, max_kl_tokens=1), "max_kl_tokens=1"),
])
def test_bad_max_kl_input_is_refused_before_any_work(src, tmp_path, options, says):
    with pytest.raises(ValueError, match=says):
        prunenet.compress(src, tmp_path / "out", **{**SEARCH, **options})
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("flags, says", [
    (["--max-kl", "0"], "max_kl=0.0"),
    (["--max-kl", "lots"], "--max-kl"),
    (["--max-kl", "0.1", "--ratio", "0.3"], "not allowed with argument"),
])
def test_bad_max_kl_flags_are_one_line_exit_2(src, tmp_path, capsys, flags, says):
    cli_error(capsys, ["compress", src, "--out", tmp_path / "out", *flags], [says])
    assert_nothing_written(tmp_path / "out")


def test_a_kl_bound_and_healing_share_one_original(src, tmp_path, monkeypatch):
    import prunenet.api

    loads = []
    real = prunenet.api.load_teacher
    monkeypatch.setattr(prunenet.api, "load_teacher", lambda *a: loads.append(a) or real(*a))
    report = prunenet.compress(src, tmp_path / "out", max_kl=0.002, heal_tokens=512, heal_length=32, heal_top_k=16,
                               **SEARCH)
    assert len(loads) == 1
    assert report["outputs"][0]["stages"]["heal"]["steps"] == 512 // (4 * 32)
    assert report["outputs"][0]["ffn_width_after"] == report["max_kl"]["ffn_width"] < 40
