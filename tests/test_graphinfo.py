"""graphinfo: the facts a record keeps about a program, and when two exports are one program."""

from __future__ import annotations

import copy

import pytest
import torch

from exporter import graphinfo
from exporter.pipeline import Decomposed
from exporter.record import Record

from models.tiny import make_convnet, make_mlp

BATCH = torch.export.Dim("batch", min=1, max=16)


def _export(model, strict, x=None, dynamic=True):
    x = torch.randn(2, 3, 8, 8) if x is None else x
    return torch.export.export(model, (x,), dynamic_shapes=({0: BATCH},) if dynamic else None,
                               strict=strict)


def _record(ep) -> Record:
    record = Record(entry="e", family="f", mode="m", device="cpu")
    graphinfo.describe_decomposed(ep.run_decompositions(), record)
    return record


def test_the_two_modes_of_one_model_are_one_program():
    model = make_convnet()
    loose, strict = _export(model, False), _export(model, True)
    assert graphinfo.program_key(loose) is not None
    assert graphinfo.program_key(loose) == graphinfo.program_key(strict)
    assert graphinfo.same_state(loose, strict)


def test_a_shared_decomposition_describes_the_other_mode_as_decomposing_it_would():
    # The promise that lets the pipeline decompose once: what it writes for the second mode
    # from the first mode's decomposition equals what decomposing the second program writes.
    model = make_convnet()
    first, second = _export(model, False), _export(model, True)
    done = Decomposed.of(first, _record(first))
    predicted = Record(entry="e", family="f", mode="strict", device="cpu")
    done.describe(second, predicted)
    actual = _record(second)
    assert (predicted.decomposed_node_count, predicted.non_core_ops, predicted.graph_outputs) \
        == (actual.decomposed_node_count, actual.non_core_ops, actual.graph_outputs)


@pytest.mark.parametrize("other", [
    dict(activation="gelu"),          # another operator
    dict(scale=3.0),                  # another literal
])
def test_another_computation_is_another_program(other):
    model, changed = make_convnet(), make_convnet(**other)
    changed.load_state_dict(model.state_dict())
    assert graphinfo.program_key(_export(model, True)) != \
        graphinfo.program_key(_export(changed, True))


def test_other_shapes_or_ranges_are_another_program():
    model = make_convnet()
    base = graphinfo.program_key(_export(model, True))
    assert base != graphinfo.program_key(_export(model, True, x=torch.randn(2, 3, 6, 6)))
    assert base != graphinfo.program_key(_export(model, True, dynamic=False))


def test_other_tensors_are_not_the_same_state():
    model = make_convnet()
    twin = copy.deepcopy(model)
    a, b = _export(model, False), _export(twin, True)
    assert graphinfo.program_key(a) == graphinfo.program_key(b)
    assert not graphinfo.same_state(a, b)     # equal values, but not the model the stage ran


def test_a_program_with_subgraphs_has_no_key():
    class Branch(torch.nn.Module):
        def forward(self, x):
            return torch.cond(x.sum() > 0, lambda t: t + 1, lambda t: t - 1, (x,))

    assert graphinfo.program_key(torch.export.export(Branch(), (torch.randn(3),))) is None
    assert graphinfo.program_key(torch.export.export(make_mlp(), (torch.randn(2, 4),))) \
        is not None
