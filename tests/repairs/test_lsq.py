"""The least-squares repair: output matrices (and biases) refitted on the kept rows' activation statistics."""
from __future__ import annotations

import pytest
import torch
from helpers import PROBES, correlated_activations
from safetensors.torch import load_file
from tiny_models import build_model, save_model

import prunenet
from prunenet.repairs import refit_output

pytestmark = pytest.mark.usefixtures("own_cache")


def test_repair_lowers_the_output_error_of_random_rows():
    g = torch.Generator().manual_seed(1)
    a, w, b = correlated_activations(600, 40), torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    kept = torch.randperm(40, generator=g)[:28].sort().values
    target = a @ w.T + b
    plain = ((a[:, kept] @ w[:, kept].T + b - target).square().sum() / target.square().sum()).item()
    refit, new_bias = refit_output(w, a.T @ a, kept, b, a.sum(0), a.shape[0])
    repaired = ((a[:, kept] @ refit.T + new_bias - target).square().sum() / target.square().sum()).item()
    assert repaired < 0.5 * plain, (plain, repaired)
    refit_nobias, _ = refit_output(w, a.T @ a, kept)
    no_bias_refit = ((a[:, kept] @ refit_nobias.T + b - target).square().sum() / target.square().sum()).item()
    assert repaired < no_bias_refit  # refitting the bias absorbs the dropped rows' mean


def test_repair_with_identity_statistics_is_plain_slicing():
    w = torch.randn(10, 16, generator=torch.Generator().manual_seed(2))
    kept = torch.tensor([0, 3, 4, 9, 15])
    refit, bias = refit_output(w, torch.eye(16), kept)
    assert bias is None
    # Uncorrelated unit activations: nothing to compensate, and the ridge pulls towards plain slicing.
    torch.testing.assert_close(refit, w[:, kept])


def test_refit_validates_its_inputs():
    w = torch.randn(4, 6)
    with pytest.raises(ValueError, match="do not match"):
        refit_output(w, torch.eye(5), torch.tensor([0]))
    with pytest.raises(ValueError, match="non-empty"):
        refit_output(w, torch.eye(6), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="sums"):
        refit_output(w, torch.eye(6), torch.tensor([0]), bias=torch.zeros(4))


def test_repair_changes_only_the_output_matrices(tmp_path):
    src = save_model(build_model("opt"), tmp_path / "src")
    prunenet.compress(src, tmp_path / "none", ratio=0.3, repair="none", progress=False, **PROBES)
    prunenet.compress(src, tmp_path / "lsq", ratio=0.3, repair="lsq", progress=False, **PROBES)
    plain, refit = (load_file(str(tmp_path / f / "model.safetensors")) for f in ("none", "lsq"))
    changed = {name for name in plain if not torch.equal(plain[name], refit[name])}
    assert changed and all(".fc2." in name for name in changed)
    assert any(name.endswith("fc2.bias") for name in changed)  # OPT's output matrix has a bias: refitted too
