"""The per-ratio driver: rows ranked and output matrices repaired on the probes, one-shot or sequential."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import PROBES, read_json
from tiny_models import build_model, logits, save_model

import prunenet

pytestmark = pytest.mark.usefixtures("own_cache")


def test_compress_default_keeps_the_model_better_than_random_rows(tmp_path):
    model = build_model("llama")
    src = save_model(model, tmp_path / "src")
    tokens = torch.randint(3, 96, (4, 20), generator=torch.Generator().manual_seed(0))
    reference = torch.log_softmax(logits(model, tokens), -1)

    def kl(folder: Path) -> float:
        got = torch.log_softmax(logits(folder, tokens), -1)
        return (reference.exp() * (reference - got)).sum(-1).mean().item()

    report = prunenet.compress(src, tmp_path / "default", ratio=0.4, progress=False, probe_tokens=2048, probe_length=32)
    assert report["options"]["selector"] == "activation" and report["options"]["repair"] == "lsq"
    assert report["probes"]["tokens"] == 2048 and report["probes"]["source"] == "self"
    prunenet.compress(src, tmp_path / "random", ratio=0.4, selector="random", repair="none", progress=False)
    provenance = read_json(tmp_path / "default" / "prunenet.json")
    assert provenance["repair"] == "lsq" and provenance["probes"]["tokens"] == 2048
    assert kl(tmp_path / "default") < kl(tmp_path / "random")


@pytest.mark.parametrize("name", ["llama-mlp-bias", "opt", "gemma3_text"])
@pytest.mark.parametrize("statistics", ["oneshot", "sequential"])
def test_every_selector_with_repair_writes_a_loadable_model(name, statistics, tmp_path):
    src = save_model(build_model(name), tmp_path / "src")
    for selector in ("obs", "random"):
        out = tmp_path / f"{selector}"
        report = prunenet.compress(src, out, ratios=[0.25, 0.5], selector=selector, statistics=statistics,
                                   progress=False, **PROBES)
        for output in report["outputs"]:
            assert logits(output["out"], torch.tensor([[3, 4, 5, 6]])).isfinite().all()
            kept = read_json(Path(output["out"]) / "prunenet.json")["kept_rows"]
            assert all(len(rows) == output["ffn_width_after"] for rows in kept)
