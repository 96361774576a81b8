"""Scores files: a model's ranking and probes saved once by `score`, then sliced by `compress --scores`."""
from __future__ import annotations

import pytest
from helpers import PROBES, read_json
from tiny_models import build_model, save_model

import prunenet

pytestmark = pytest.mark.usefixtures("own_cache")


def test_scores_file_slices_like_a_direct_compress(tmp_path):
    src = save_model(build_model("qwen2"), tmp_path / "src")
    scores = tmp_path / "scores.safetensors"
    report = prunenet.score(src, scores, repair="lsq", progress=False, **PROBES)  # slicing options are accepted
    assert report["selector"] == "activation" and report["probes"]["tokens"] == 256
    # A scores file holds a one-shot ranking: with one-shot statistics it slices exactly as a direct compress.
    direct = prunenet.compress(src, tmp_path / "direct", ratio=0.3, repair="none", statistics="oneshot",
                               progress=False, **PROBES)
    stored = prunenet.compress(src, tmp_path / "stored", ratio=0.3, repair="lsq", statistics="oneshot", scores=scores,
                               progress=False)
    assert direct["outputs"][0]["ffn_width_after"] == stored["outputs"][0]["ffn_width_after"]
    kept = [read_json(tmp_path / f / "prunenet.json")["kept_rows"] for f in ("direct", "stored")]
    assert kept[0] == kept[1]
    assert stored["probes"]["from_scores"] == str(scores)  # the repair reused the stored probes
    # Sequential statistics (the default) rank per ratio: the stored ranking is not used, its probes are.
    again = prunenet.compress(src, tmp_path / "seq", ratio=0.3, scores=scores, progress=False)
    assert again["probes"]["from_scores"] == str(scores) and again["outputs"][0]["ffn_width_after"] == 28
    with pytest.raises(ValueError, match="selector 'activation', not 'obs'"):
        prunenet.compress(src, tmp_path / "x", ratio=0.3, selector="obs", scores=scores, progress=False)
    with pytest.raises(TypeError, match="bogus"):
        prunenet.score(src, tmp_path / "y.safetensors", bogus=1, progress=False)
