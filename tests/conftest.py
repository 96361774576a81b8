"""Test-wide set-up. Triton's interpreter must be chosen before Triton is first imported."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache folder of the test's own ($PRUNENET_CACHE): probes are neither read from nor left in the user's."""
    monkeypatch.setenv("PRUNENET_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    """An empty Hugging Face Hub cache, offline. huggingface_hub reads both variables into `constants` at
    import, so the constants are patched too."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
