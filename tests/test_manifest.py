"""The manifest contract: every accepted form, and every mistake as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.errors import ManifestErrors
from exporter.manifest import load_manifest
from exporter.spec import DimSpec, Expectation, TensorSpec
from orchestrator.cli import main

from conftest import MANIFESTS, REPO

GOOD_ENTRY = """
  - name: mlp
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
"""


def test_full_entry_form_is_parsed(write_manifest):
    path = write_manifest("""
        version: 1
        defaults: {modes: [non-strict], timeout_s: 60, tags: [base]}
        entries:
          - name: vision/tiny
            entrypoint: models/tiny.py:make_mlp
            kwargs: {width: 16}
            inputs:
              - {shape: [2, 4], dtype: float32}
            dynamic_shapes: {0: {0: {name: batch, min: 1, max: 64}}}
            modes: [non-strict, strict]
            device: cpu
            tolerance: {atol: 1.0e-3, rtol: 1.0e-3}
            timeout_s: 120
            tags: [vision]
            expect: {status: FAIL, category: DATA_DEPENDENT_GUARD}
          - name: defaults-only
            entrypoint: models/tiny.py:make_mlp
            inputs: models/tiny.py:mlp_inputs
          - name: per-mode
            entrypoint: models/tiny.py:make_guard
            inputs: [{shape: [2, 3]}]
            expect: {strict: {status: FAIL, category: DATA_DEPENDENT_GUARD, stage: export},
                     non-strict: {status: PASS}}
    """)
    m = load_manifest(path)
    tiny, defaulted, per_mode = m.entries
    assert tiny.kwargs == {"width": 16}
    assert tiny.inputs == (TensorSpec((2, 4), "float32"),)
    assert tiny.dynamic_shapes == {0: {0: DimSpec("batch", 1, 64)}}
    assert tiny.modes == ("non-strict", "strict") and tiny.timeout_s == 120
    assert tiny.tolerance.atol == 1e-3 and tiny.tags == ("vision",)
    assert tiny.expect == {m_: Expectation("FAIL", "DATA_DEPENDENT_GUARD") for m_ in tiny.modes}
    assert defaulted.modes == ("non-strict",) and defaulted.timeout_s == 60
    assert defaulted.tags == ("base",) and defaulted.inputs == "models/tiny.py:mlp_inputs"
    assert per_mode.expect["non-strict"] == Expectation("PASS")
    assert per_mode.expect["strict"] == Expectation("FAIL", "DATA_DEPENDENT_GUARD", "export")


def test_include_and_scoped_defaults(write_manifest):
    write_manifest("""
        version: 1
        defaults: {timeout_s: 10}
        entries:
          - name: included
            entrypoint: models/tiny.py:make_mlp
            inputs: [{shape: [2, 4]}]
    """, name="child.yaml")
    path = write_manifest("""
        version: 1
        defaults: {modes: [strict], timeout_s: 99}
        include: [child.yaml]
        entries:
          - name: own
            entrypoint: models/tiny.py:make_mlp
            inputs: [{shape: [2, 4]}]
    """)
    m = load_manifest(path)
    by_name = {e.name: e for e in m.entries}
    # The included file inherits its includer's defaults; its own defaults win.
    assert by_name["included"].modes == ("strict",) and by_name["included"].timeout_s == 10
    assert by_name["own"].timeout_s == 99
    assert len(m.files) == 2


def test_family_expansion_with_overrides(write_manifest):
    path = write_manifest("""
        version: 1
        families:
          - source: torchvision
            include: [resnet18, "squeezenet1_*"]
            defaults: {timeout_s: 77}
            overrides:
              "torchvision/squeezenet1_1": {expect: {status: FAIL, category: EXPORT_ERROR}}
    """)
    m = load_manifest(path)
    names = [e.name for e in m.entries]
    assert names == ["torchvision/resnet18", "torchvision/squeezenet1_0",
                     "torchvision/squeezenet1_1"]
    assert all(e.family == "torchvision" and e.timeout_s == 77 for e in m.entries)
    assert m.entries[2].expect["strict"].category == "EXPORT_ERROR"
    assert not m.entries[0].expect


def test_file_defaults_set_the_device_of_family_entries(write_manifest):
    path = write_manifest("""
        version: 1
        defaults: {device: cuda}
        families:
          - {source: torchvision, include: [resnet18]}
          - source: torchvision
            include: [squeezenet1_0]
            defaults: {device: any}
            overrides: {"torchvision/squeezenet1_0": {device: cpu}}
          - source: torchvision
            include: [squeezenet1_1]
            defaults: {device: any}
    """)
    devices = {e.name: e.device for e in load_manifest(path).entries}
    assert devices == {"torchvision/resnet18": "cuda", "torchvision/squeezenet1_0": "cpu",
                       "torchvision/squeezenet1_1": "any"}


@pytest.mark.parametrize("name", ["smoke.yaml", "pathological.yaml", "nightly.yaml", "full.yaml",
                                  "gpu.yaml"])
def test_shipped_manifests_validate(name):
    m = load_manifest(MANIFESTS / name)
    assert m.entries
    if name == "nightly.yaml":
        assert len(m.entries) >= 300


# (id, manifest text, file that must be named, entry that must be named, field that must be
# named, and a phrase of the explanation).  Every case is one mistake, so exactly one line.
MISTAKES = [
    ("yaml-syntax", "version: 1\nentries: [\n", "manifest.yaml", None, None, "invalid YAML at line"),
    ("top-level-list", "- 1\n- 2\n", "manifest.yaml", None, None, "top level must be a mapping"),
    ("version", "version: 7\nentries: []\n", "manifest.yaml", None, "version", "unsupported manifest version"),
    ("top-level-key", "version: 1\nentrys: []\n", "manifest.yaml", None, "entrys", "did you mean 'entries'"),
    ("entry-key-typo", "version: 1\nentries:\n  - name: mlp\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [2, 4]}]\n    dynamic_shape: auto\n", "manifest.yaml", "mlp", "dynamic_shape",
     "did you mean 'dynamic_shapes'"),
    ("missing-name", "version: 1\nentries:\n  - entrypoint: models/tiny.py:make_mlp\n", "manifest.yaml",
     "#1", "name", "non-empty string 'name'"),
    ("missing-entrypoint", "version: 1\nentries:\n  - name: mlp\n    inputs: [{shape: [2, 4]}]\n",
     "manifest.yaml", "mlp", "entrypoint", "'pkg.module:attr'"),
    ("duplicate-name", "version: 1\nentries:" + GOOD_ENTRY + GOOD_ENTRY, "manifest.yaml", "mlp", "name",
     "duplicate entry name"),
    ("entrypoint-form", "version: 1\nentries:\n  - name: mlp\n    entrypoint: models/tiny.py.make_mlp\n",
     "manifest.yaml", "mlp", "entrypoint", "must be 'pkg.module:attr'"),
    ("entrypoint-file", "version: 1\nentries:\n  - name: mlp\n    entrypoint: models/nope.py:make_mlp\n",
     "manifest.yaml", "mlp", "entrypoint", "file 'models/nope.py' not found"),
    ("entrypoint-attr", "version: 1\nentries:\n  - name: mlp\n    entrypoint: models/tiny.py:make_mpl\n"
     "    inputs: [{shape: [2, 4]}]\n", "manifest.yaml", "mlp", "entrypoint", "did you mean make_mlp"),
    ("entrypoint-module", "version: 1\nentries:\n  - name: mlp\n    entrypoint: no_such_pkg.models:build\n",
     "manifest.yaml", "mlp", "entrypoint", "module 'no_such_pkg.models' cannot be imported"),
    ("mode", "version: 1\nentries:" + GOOD_ENTRY + "    modes: [strcit]\n", "manifest.yaml", "mlp", "modes",
     "unknown mode 'strcit'"),
    ("device", "version: 1\nentries:" + GOOD_ENTRY + "    device: tpu\n", "manifest.yaml", "mlp", "device",
     "must be one of cpu, cuda, any"),
    ("dtype", "version: 1\nentries:\n  - name: mlp\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [2, 4], dtype: flaot32}]\n", "manifest.yaml", "mlp", "inputs[0].dtype",
     "did you mean float32"),
    ("shape", "version: 1\nentries:\n  - name: mlp\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [2, -4]}]\n", "manifest.yaml", "mlp", "inputs[0].shape", "non-negative integers"),
    ("dyn-input-index", "version: 1\nentries:" + GOOD_ENTRY + "    dynamic_shapes: {3: {0: {name: b}}}\n",
     "manifest.yaml", "mlp", "dynamic_shapes.3", "input 3 does not exist"),
    ("dyn-dim-index", "version: 1\nentries:" + GOOD_ENTRY + "    dynamic_shapes: {0: {5: {name: b}}}\n",
     "manifest.yaml", "mlp", "dynamic_shapes.0.5", "rank 2"),
    ("dyn-min-max", "version: 1\nentries:" + GOOD_ENTRY +
     "    dynamic_shapes: {0: {0: {name: b, min: 8, max: 4}}}\n", "manifest.yaml", "mlp",
     "dynamic_shapes.0.0", "impossible range: min 8 > max 4"),
    ("dyn-example-outside", "version: 1\nentries:" + GOOD_ENTRY +
     "    dynamic_shapes: {0: {0: {name: b, min: 4, max: 8}}}\n", "manifest.yaml", "mlp",
     "dynamic_shapes.0.0", "example size 2 lies outside [4, 8]"),
    ("dyn-name-ranges", "version: 1\nentries:\n  - name: mlp\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [2, 4]}, {shape: [2, 4]}]\n"
     "    dynamic_shapes: {0: {0: {name: b, max: 8}}, 1: {0: {name: b, max: 16}}}\n",
     "manifest.yaml", "mlp", "dynamic_shapes.1.0", "two different ranges"),
    ("timeout", "version: 1\nentries:" + GOOD_ENTRY + "    timeout_s: -5\n", "manifest.yaml", "mlp",
     "timeout_s", "positive number of seconds"),
    ("tags", "version: 1\nentries:" + GOOD_ENTRY + "    tags: vision\n", "manifest.yaml", "mlp", "tags",
     "list of strings"),
    ("tolerance", "version: 1\nentries:" + GOOD_ENTRY + "    tolerance: {atol: -1}\n", "manifest.yaml",
     "mlp", "tolerance.atol", "non-negative number"),
    ("kwargs", "version: 1\nentries:" + GOOD_ENTRY + "    kwargs: [1, 2]\n", "manifest.yaml", "mlp",
     "kwargs", "mapping of keyword arguments"),
    ("expect-category", "version: 1\nentries:" + GOOD_ENTRY + "    expect: {category: DATA_DEPENDENT_GAURD}\n",
     "manifest.yaml", "mlp", "expect.category", "did you mean DATA_DEPENDENT_GUARD"),
    ("expect-stage", "version: 1\nentries:" + GOOD_ENTRY + "    expect: {status: FAIL, stage: lowering}\n",
     "manifest.yaml", "mlp", "expect.stage", "unknown stage 'lowering'"),
    ("expect-status", "version: 1\nentries:" + GOOD_ENTRY + "    expect: {status: BROKEN}\n",
     "manifest.yaml", "mlp", "expect.status", "status must be one of PASS, FAIL"),
    ("include-missing", "version: 1\ninclude: [other.yaml]\nentries: []\n", "other.yaml", None, None,
     "manifest file not found"),
    ("family-source", "version: 1\nfamilies:\n  - {source: keras, include: ['*']}\n", "manifest.yaml",
     "families[0]", "source", "unknown family source 'keras'"),
    ("family-model", "version: 1\nfamilies:\n  - {source: torchvision, include: [resnet181]}\n",
     "manifest.yaml", "families[torchvision]", "include", "resnet18"),
    ("family-override", "version: 1\nfamilies:\n  - source: torchvision\n    include: [resnet18]\n"
     "    overrides: {'torchvision/vgg*': {timeout_s: 5}}\n", "manifest.yaml", "families[torchvision]",
     "overrides", "matches no model"),
]


@pytest.mark.parametrize("case", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_line_with_exit_code_2(case, write_manifest, capsys):
    _, text, file, entry, field, phrase = case
    path = write_manifest(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert "Traceback" not in err
    assert line.startswith("exportsweep: ") and file in line
    if entry is not None:
        assert f"entry {entry!r}" in line
    if field is not None:
        assert f"field {field!r}" in line
    assert phrase in line


def test_missing_manifest_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: manifest file not found" in capsys.readouterr().err


def test_include_cycle_is_reported(write_manifest, capsys):
    write_manifest("version: 1\ninclude: [a.yaml]\n", name="b.yaml")
    path = write_manifest("version: 1\ninclude: [b.yaml]\n", name="a.yaml")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "include cycle: a.yaml -> b.yaml -> a.yaml" in err and "field 'include'" in err


def test_every_mistake_is_reported_at_once(write_manifest):
    path = write_manifest("version: 1\nentries:" + GOOD_ENTRY + "    device: tpu\n    modes: [x]\n"
                          "  - name: other\n    entrypoint: nope\n")
    with pytest.raises(ManifestErrors) as info:
        load_manifest(path)
    fields = sorted(e.field for e in info.value.errors)
    assert fields == ["device", "entrypoint", "modes"]


def test_validate_prints_expanded_table(capsys):
    assert main(["validate", str(MANIFESTS / "smoke.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["NAME", "FAMILY", "MODES", "DEVICE"]
    assert "torchvision/resnet18" in out and "is valid" in out


def test_cli_exit_code_2_in_a_real_process(write_manifest):
    path = write_manifest("version: 1\nentries:" + GOOD_ENTRY + "    device: tpu\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(path), "--out",
                           str(path.parent / "out")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "field 'device'" in proc.stderr
    assert not (path.parent / "out").exists()      # nothing ran, nothing was written
