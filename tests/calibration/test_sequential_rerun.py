"""The sequential pass's rerun of a layer after its output matrix changed: only what can have changed runs."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from tiny_models import CONFIGS, build_model

from prunenet.calibration.layer_stream import LayerStream
from prunenet.calibration.statistics import LayerChange, statistics_pass
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


@contextmanager
def layer_inputs(stream: LayerStream) -> Iterator[list[list[torch.Tensor]]]:
    """What every decoder layer of `stream` receives while the block runs: inputs[layer][call]."""
    inputs: list[list[torch.Tensor]] = [[] for _ in stream.layers]
    hooks = [layer.register_forward_pre_hook(
        lambda m, args, kwargs, i=i: inputs[i].append((args[0] if args else kwargs["hidden_states"]).clone()),
        with_kwargs=True) for i, layer in enumerate(stream.layers)]
    try:
        yield inputs
    finally:
        for hook in hooks:
            hook.remove()


def assert_the_pass_gave_what_the_changed_model_gives(stream: LayerStream, received: list[list[torch.Tensor]]):
    """The pass changed the model in place: its plain forward is the reference for what each layer received."""
    with layer_inputs(stream) as expected, torch.no_grad():
        for tokens in BATCHES:
            stream.base(input_ids=tokens, use_cache=False)
    for index in range(1, len(stream.layers)):
        # Layer i ran its batches once before its change and once again after: the first run is what it received.
        for mine, theirs in zip(received[index][: len(BATCHES)], expected[index]):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_rerun_gives_the_next_layer_what_the_changed_model_gives_it(name, monkeypatch):
    model = build_model(name).eval()
    family = family_for(model.config.model_type)
    stream = LayerStream.of_model(model, family)
    generator = torch.Generator().manual_seed(7)

    def decide(index, stats, output):
        # Any new output matrix: zero some columns and perturb the rest, and a new bias where there is one.
        weight = output.weight * (torch.rand(output.weight.shape[1], generator=generator) > 0.3)
        weight = weight + 0.1 * torch.randn(output.weight.shape, generator=generator)
        bias = None if output.bias is None else output.bias + torch.randn(output.bias.shape, generator=generator)
        return LayerChange(weight, bias)

    calls = _counting_linears(model, monkeypatch)
    with layer_inputs(stream) as received:
        statistics_pass(stream, BATCHES, decide, sequential=True)
    in_pass = calls[0]
    calls[0] = 0
    assert_the_pass_gave_what_the_changed_model_gives(stream, received)
    # Per layer and micro-batch, the rerun computes one matrix product: the output matrix's.
    assert in_pass == calls[0] + len(stream.layers) * len(BATCHES), (in_pass, calls[0])


@pytest.mark.parametrize("name", ["llama", "phi3", "falcon"])
def test_the_rerun_with_new_input_matrices_feeds_the_output_matrix_what_they_give(name):
    model = build_model(name).eval()
    family = family_for(model.config.model_type)
    stream = LayerStream.of_model(model, family)
    generator = torch.Generator().manual_seed(3)

    def decide(index, stats, output):
        # New input matrices, changed in place, and the output matrix's input they give on the recorded inputs.
        assert output.ffn is not None and stats.inputs is not None
        with torch.no_grad():
            for name in output.ffn.row_sliced:
                tensor = output.ffn.module.get_parameter(name)
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
        seen = []
        module = output.ffn.module.get_submodule(output.ffn.output)
        handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        with torch.no_grad():
            output.ffn.module(stats.inputs)
        handle.remove()
        return LayerChange(output.weight.clone(), output.bias, activations=seen[0])

    with layer_inputs(stream) as received:
        statistics_pass(stream, BATCHES, decide, sequential=True, record_inputs=True)
    assert_the_pass_gave_what_the_changed_model_gives(stream, received)
