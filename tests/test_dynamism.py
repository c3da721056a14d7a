"""Dynamic-shape discovery: what the program kept dynamic, what torch fixed and why, the
relations it found, and the sizes the dynamic stage then tries (real torch.export)."""

from __future__ import annotations

import logging

import pytest
import torch

from exporter import dynamism
from exporter.manifest import load_manifest
from exporter.pipeline import run_entry
from exporter.spec import PipelineOptions

from conftest import MANIFESTS

DYNAMIC = {e.name: e for e in load_manifest(MANIFESTS / "dynamic.yaml").entries}
FIELDS = ("status", "category", "dynamic_requested", "dynamic_achieved", "dynamic_specialized",
          "dynamic_relations", "dynamic_sizes_tested")


def _both_modes(name, fresh_loader):
    return _both_modes_fields(name, fresh_loader, FIELDS)


def _both_modes_fields(name, fresh_loader, fields):
    records = run_entry(DYNAMIC[name], loader=fresh_loader)
    assert [r.mode for r in records] == ["non-strict", "strict"]
    one, other = ({f: getattr(r, f) for f in fields} for r in records)
    assert one == other, "the two modes must describe one model's dynamism alike"
    return records[0]


def test_a_fully_dynamic_model_keeps_every_dim(fresh_loader):
    r = _both_modes("dyn/elementwise", fresh_loader)
    assert r.status == "PASS", r.message
    assert r.dynamic_requested == [f"x.shape[{d}] (auto)" for d in range(3)]
    assert r.dynamic_achieved == [f"x.shape[{d}] in [2, inf]" for d in range(3)]
    assert r.dynamic_specialized == [] and r.dynamic_relations == []
    # Discovery tries the bottom of each range, a top (twice the example: the range is
    # unbounded) and random sizes, all seeded: the same sizes every time.
    assert r.dynamic_sizes_tested[:2] == ["x.shape[0]=2,x.shape[1]=2,x.shape[2]=2",
                                          "x.shape[0]=6,x.shape[1]=10,x.shape[2]=14"]
    assert len(r.dynamic_sizes_tested) == 2 + PipelineOptions().dynamic_sizes


def test_a_branch_on_a_size_is_named_with_the_models_line(fresh_loader):
    r = _both_modes("dyn/branch_on_width", fresh_loader)
    assert r.status == "PASS"
    assert r.dynamic_achieved == ["x.shape[0] in [2, inf]"]
    [why] = r.dynamic_specialized
    assert why == ("x.shape[1] = 6: Eq(x.shape[1], 6) at "
                   "manifests/models/dynamic_shapes.py:23: if x.shape[1] == 6:")


def test_a_dim_fixed_inside_torch_points_at_the_models_call(fresh_loader):
    r = _both_modes("dyn/projection", fresh_loader)
    [why] = r.dynamic_specialized
    assert why.startswith("x.shape[2] = 8: Eq(x.shape[2], 8) at manifests/models/dynamic_shapes.py")
    assert why.endswith("return self.proj(x)")


def test_equal_and_derived_dims_are_relations(fresh_loader):
    r = _both_modes("dyn/pair_sum", fresh_loader)
    assert r.status == "PASS"
    assert r.dynamic_relations == ["y.shape[0] == x.shape[0]", "y.shape[1] == x.shape[1]",
                                   "z.shape[0] == x.shape[0]", "z.shape[1] == 2*x.shape[1]"]
    assert "z.shape[1] = 2*x.shape[1]" in r.dynamic_achieved
    # Sizes tried keep the relations: only the two free dims are assigned.
    assert all(label.count("=") == 2 for label in r.dynamic_sizes_tested)


def test_a_range_wider_than_the_model_fails_at_its_edge(fresh_loader):
    r = _both_modes("dyn/position_table", fresh_loader)
    assert (r.status, r.category, r.failed_stage) == ("XFAIL", "DYNAMIC_SHAPE_FAILURE", "dynamic")
    assert r.dynamic_achieved == ["tokens.shape[0] in [2, inf]", "tokens.shape[1] in [2, inf]"]
    assert "eager fails at tokens.shape[0]=3,tokens.shape[1]=20" in r.message
    assert "index out of range" in r.message


def test_an_example_of_size_one_is_explained():
    class Rows(torch.nn.Module):
        def forward(self, x):
            return x * 2

    x = torch.randn(1, 5)
    spec = ({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO},)
    asked = dynamism.requested(Rows(), (x,), {}, spec)
    with dynamism.captured() as log:
        ep = torch.export.export(Rows(), (x,), dynamic_shapes=spec)
    found = dynamism.describe(ep, Rows(), (x,), {}, asked, log)
    assert found.achieved == ["x.shape[1] in [2, inf]"]
    assert found.specialized == ["x.shape[0] = 1: the example size is 1, which torch.export "
                                 "always specializes (give an example of size 2 or more)"]


def test_named_dims_and_keyword_inputs_are_labelled_by_parameter():
    class Pair(torch.nn.Module):
        def forward(self, ids, mask=None):
            return ids * mask

    batch = torch.export.Dim("batch", min=1, max=8)
    ids, mask = torch.randn(3, 4), torch.randn(3, 4)
    spec = {"ids": {0: batch}, "mask": {0: batch, 1: torch.export.Dim.STATIC}}
    asked = dynamism.requested(Pair(), (ids,), {"mask": mask}, spec)
    assert [(a.label, a.asked) for a in asked] == [("ids.shape[0]", "batch"),
                                                   ("mask.shape[0]", "batch")]
    ep = torch.export.export(Pair(), (ids,), {"mask": mask}, dynamic_shapes=spec)
    found = dynamism.describe(ep, Pair(), (ids,), {"mask": mask}, asked, None)
    assert found.achieved == ["ids.shape[0] in [1, 8]", "mask.shape[0] in [1, 8]"]
    assert found.relations == ["mask.shape[0] == ids.shape[0]"]


def test_the_shape_log_is_read_quietly_and_put_back(capfd):
    logger = logging.getLogger(dynamism.SHAPES_LOGGER)
    before = (logger.level, logger.propagate, list(logger.handlers))
    with dynamism.captured() as log:
        torch.export.export(torch.nn.ReLU(), (torch.randn(3, 4),),
                            dynamic_shapes=({0: torch.export.Dim.AUTO},))
    assert log.symbols and "create_symbol" not in capfd.readouterr().err
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


@pytest.mark.parametrize("garbage", [
    logging.makeLogRecord({"msg": "create_symbol %s", "args": ()}),
    logging.makeLogRecord({"msg": "%s %s [guard added] %s", "args": (None, None, None)}),
    logging.makeLogRecord({"msg": "set_replacement %s = %s (%s) %s", "args": ("s0",)}),
])
def test_log_lines_of_another_shape_are_one_fact_fewer_not_an_error(garbage):
    log = dynamism.ShapeLog()
    log.add(garbage)
    assert not log.symbols and not log.replacements


def test_discover_for_a_whole_run_overrides_an_entrys_own_dims(write_manifest, fresh_loader):
    entry = load_manifest(write_manifest("""
version: 1
entries:
  - name: mlp
    entrypoint: models/tiny.py:mlp_case_with_kwargs
""")).entries[0]
    [r] = run_entry(entry, PipelineOptions(discover_dynamic=True), loader=fresh_loader,
                    modes=("non-strict",))
    assert r.dynamic_requested == ["x.shape[0] (auto)", "x.shape[1] (auto)"]
    assert r.dynamic_achieved == ["x.shape[0] in [2, inf]"]
    assert r.dynamic_specialized[0].startswith("x.shape[1] = 4: Eq(x.shape[1], 4) at ")


SMOKE = {e.name: e for e in load_manifest(MANIFESTS / "smoke.yaml").entries}


def _discovered(name, fresh_loader):
    records = run_entry(SMOKE[name], PipelineOptions(discover_dynamic=True), loader=fresh_loader)
    one, other = ({f: getattr(r, f) for f in FIELDS} for r in records)
    assert one == other
    return records[0]


def test_a_real_transformer_shares_its_sequence_length_and_bounds_it(fresh_loader):
    r = _discovered("transformers/bert", fresh_loader)
    assert r.status == "PASS", r.message
    assert "input_ids.shape[1] in [2, 128]" in r.dynamic_achieved   # max_position_embeddings
    assert r.dynamic_relations == ["attention_mask.shape[1] == input_ids.shape[1]"]
    assert r.dynamic_specialized == []


@pytest.mark.parametrize("name, line", [
    ("torchvision/resnet18", "torchvision/models/resnet.py"),
    pytest.param("timm/resnet18", "timm/models/resnet.py", marks=pytest.mark.slow),
])
def test_a_real_convnet_fixes_its_channels_and_rejects_its_smallest_image(name, line,
                                                                          fresh_loader):
    r = _discovered(name, fresh_loader)
    [why] = r.dynamic_specialized
    assert why.startswith(f"x.shape[1] = 3: Eq(x.shape[1], 3) at {line}:")
    assert why.endswith("x = self.conv1(x)")
    assert "x.shape[2] in [2, inf]" in r.dynamic_achieved
    # torch's range says 2x2 images are fine; the program's own guard refuses them.
    assert (r.status, r.category) == ("FAIL", "DYNAMIC_SHAPE_FAILURE")
    assert "the program fails at x.shape[0]=4,x.shape[2]=2,x.shape[3]=2" in r.message


def test_a_violated_spec_gets_torchs_fix_as_a_snippet_that_exports(fresh_loader, write_manifest):
    r = _both_modes_fields("dyn/pair_sum_declared_apart", fresh_loader,
                           FIELDS + ("dynamic_suggested", "signature"))
    assert (r.status, r.category) == ("XFAIL", "CONSTRAINT_VIOLATION")   # the spec as written
    assert r.dynamic_suggested == (
        "dynamic_shapes: {0: {0: {name: a, min: 2, max: 64}, 1: {name: b, min: 2, max: 32}}, "
        "1: {0: {name: a, min: 2, max: 64}, 1: {name: b, min: 2, max: 32}}, "
        "2: {0: {name: a, min: 2, max: 64}, 1: '2*b'}}")
    assert r.dynamic_relations[-1] == "z.shape[1] == 2*x.shape[1]"
    # Pasted into the manifest, the snippet exports and passes every stage.
    pasted = load_manifest(write_manifest(
        "version: 1\nentries:\n  - name: pasted\n"
        "    entrypoint: " + str(MANIFESTS / "models" / "dynamic_shapes.py") + ":make_pair_sum\n"
        "    inputs: [{shape: [4, 3]}, {shape: [4, 3]}, {shape: [4, 6]}]\n"
        "    " + r.dynamic_suggested.split("   #")[0] + "\n")).entries[0]
    assert [x.status for x in run_entry(pasted, loader=fresh_loader)] == ["PASS", "PASS"]


def test_a_spec_the_model_cannot_honour_at_all_is_suggested_static(fresh_loader):
    [r] = run_entry(load_manifest(MANIFESTS / "pathological.yaml").select(
        ["patho/constraint_violation"])[0], loader=fresh_loader, modes=("non-strict",))
    assert r.category == "CONSTRAINT_VIOLATION"
    assert r.dynamic_suggested == "dynamic_shapes: {}   # x.shape[0] = 4 (fixed by the model)"


def test_several_examples_make_the_dims_that_differ_dynamic(fresh_loader):
    r = _both_modes("dyn/examples", fresh_loader)
    assert r.status == "PASS", r.message
    assert r.dynamic_requested == ["x.shape[0] (dynamic)", "x.shape[1] (dynamic)"]
    assert r.dynamic_achieved == ["x.shape[0] in [2, inf]", "x.shape[1] in [2, inf]"]
    assert r.dynamic_sizes_tested[:2] == ["example 1: x=[4, 5, 7]", "example 2: x=[3, 9, 7]"]


def test_an_example_the_model_cannot_run_fails_by_name(fresh_loader):
    r = _both_modes("dyn/examples_past_the_table", fresh_loader)
    assert (r.status, r.category) == ("XFAIL", "DYNAMIC_SHAPE_FAILURE")
    assert r.message.startswith("eager fails at example 2: tokens=[3, 20]: ")


def test_examples_from_a_case_dict(write_manifest, fresh_loader, tmp_path):
    (tmp_path / "case.py").write_text(
        "import torch\n"
        "class Add(torch.nn.Module):\n"
        "    def forward(self, x, y):\n"
        "        return x + y\n"
        "def make():\n"
        "    return {'model': Add(), 'args': (torch.randn(2, 3), torch.randn(2, 3)),\n"
        "            'examples': [(torch.randn(5, 3), torch.randn(5, 3)),\n"
        "                         {'args': (torch.randn(4, 3), torch.randn(4, 3))}]}\n")
    entry = load_manifest(write_manifest(
        "version: 1\nentries:\n  - name: add\n    entrypoint: case.py:make\n")).entries[0]
    [r] = run_entry(entry, loader=fresh_loader, modes=("non-strict",))
    assert r.status == "PASS", r.message
    assert r.dynamic_relations == ["y.shape[0] == x.shape[0]"]
    assert r.dynamic_sizes_tested[:2] == ["example 1: x=[5, 3], y=[5, 3]",
                                          "example 2: x=[4, 3], y=[4, 3]"]


def test_a_shapes_collection_from_a_case_names_its_tensors_dims():
    class Add(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    x, y = torch.randn(3, 4), torch.randn(3, 4)
    shapes = torch.export.ShapesCollection()
    batch = torch.export.Dim("batch", min=2, max=16)
    shapes[x] = {0: batch}
    shapes[y] = {0: batch}
    asked = dynamism.requested(Add(), (x, y), {}, shapes)
    assert [(a.label, a.asked) for a in asked] == [("x.shape[0]", "batch"),
                                                   ("y.shape[0]", "batch")]
    ep = torch.export.export(Add(), (x, y), dynamic_shapes=shapes)
    found = dynamism.describe(ep, Add(), (x, y), {}, asked, None)
    assert found.achieved == ["x.shape[0] in [2, 16]", "y.shape[0] in [2, 16]"]
