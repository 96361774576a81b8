"""The sequential pass's rerun of a layer after its output matrix changed: only what can have changed runs."""
from __future__ import annotations

import pytest
import torch
from tiny_models import CONFIGS, build_model

from prunenet.calibration.layer_stream import LayerStream
from prunenet.calibration.statistics import statistics_pass
from prunenet.model.families import family_for

BATCHES = [torch.randint(3, 96, (2, 9), generator=torch.Generator().manual_seed(b)) for b in range(3)]


def _counting_linears(model: torch.nn.Module, monkeypatch) -> list[int]:
    """A counter of the matrix products the model's linear layers (of any class) compute."""
    calls = [0]
    for cls in {type(m) for m in model.modules() if isinstance(m, torch.nn.Linear)}:
        def counted(self, x, forward=cls.forward):
            calls[0] += 1
            return forward(self, x)

        monkeypatch.setattr(cls, "forward", counted)
    return calls


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_rerun_gives_the_next_layer_what_the_changed_model_gives_it(name, monkeypatch):
    model = build_model(name).eval()
    family = family_for(model.config.model_type)
    stream = LayerStream.of_model(model, family)
    generator = torch.Generator().manual_seed(7)
    received: list[list[torch.Tensor]] = [[] for _ in stream.layers]
    hooks = [layer.register_forward_pre_hook(
        lambda m, args, kwargs, i=i: received[i].append((args[0] if args else kwargs["hidden_states"]).clone()),
        with_kwargs=True) for i, layer in enumerate(stream.layers)]

    def decide(index, stats, output):
        # Any new output matrix: zero some columns and perturb the rest, and a new bias where there is one.
        weight = output.weight * (torch.rand(output.weight.shape[1], generator=generator) > 0.3)
        weight = weight + 0.1 * torch.randn(output.weight.shape, generator=generator)
        bias = None if output.bias is None else output.bias + torch.randn(output.bias.shape, generator=generator)
        return weight, bias

    calls = _counting_linears(model, monkeypatch)
    try:
        statistics_pass(stream, BATCHES, decide, sequential=True)
    finally:
        for hook in hooks:
            hook.remove()
    in_pass = calls[0]
    calls[0] = 0
    # The pass changed the model's output matrices in place: its plain forward is the reference.
    expected: list[list[torch.Tensor]] = [[] for _ in stream.layers]
    hooks = [layer.register_forward_pre_hook(
        lambda m, args, kwargs, i=i: expected[i].append((args[0] if args else kwargs["hidden_states"]).clone()),
        with_kwargs=True) for i, layer in enumerate(stream.layers)]
    with torch.no_grad():
        for tokens in BATCHES:
            stream.base(input_ids=tokens, use_cache=False)
    for hook in hooks:
        hook.remove()
    for index in range(1, len(stream.layers)):
        # Layer i ran its batches once before its change and once again after: the first run is what it received.
        got = received[index][: len(BATCHES)]
        for mine, theirs in zip(got, expected[index]):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    # Per layer and micro-batch, the rerun computes one matrix product: the output matrix's.
    assert in_pass == calls[0] + len(stream.layers) * len(BATCHES), (in_pass, calls[0])
