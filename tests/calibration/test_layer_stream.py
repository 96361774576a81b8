"""The layer stream: one decoder layer in memory at a time, each giving what the full model's layer gives."""
from __future__ import annotations

import pytest
import torch
from tiny_models import CONFIGS, build_model, save_model

from prunenet.calibration.layer_stream import CheckpointStream
from prunenet.calibration.statistics import output_module_path
from prunenet.model.checkpoint import Checkpoint
from prunenet.model.families import family_for


def _layer_outputs(model: torch.nn.Module, family, tokens: torch.Tensor) -> list[torch.Tensor]:
    """What each decoder layer of the full HF model returns on `tokens`."""
    stream_layers = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)
                     and len(m) and _holds(m[0], output_module_path(family))][0]
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o))
             for layer in stream_layers]
    with torch.no_grad():
        model(tokens)
    for hook in hooks:
        hook.remove()
    return outputs


def _holds(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_layer_stream_reproduces_the_full_forward(name, tmp_path):
    model = build_model(name)
    src = save_model(model, tmp_path / "src")
    checkpoint = Checkpoint(src)
    family = family_for(checkpoint.model_type)
    batches = [torch.randint(3, 96, (2, 11), generator=torch.Generator().manual_seed(b)) for b in range(2)]
    expected = [_layer_outputs(model, family, tokens) for tokens in batches]
    stream = CheckpointStream(checkpoint, family, torch.device("cpu"), torch.float32)
    got: list[list[torch.Tensor]] = [[] for _ in batches]

    def visit(index, layer, forward):
        for batch, out in enumerate(forward()):
            got[batch].append(out.clone())

    assert list(stream.run(batches, visit)) == list(range(3))
    for batch in range(len(batches)):
        assert len(got[batch]) == len(expected[batch]) == 3
        for mine, theirs in zip(got[batch], expected[batch]):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    # Layers are emptied after use: the model is never whole in memory.
    assert all(p.is_meta for layer in stream.layers for p in layer.parameters())
