"""The manifest contract: every accepted form, and every mistake as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.errors import ManifestErrors
from exporter.manifest import load_manifest
from exporter.spec import DimSpec, Expectation, TensorSpec
from orchestrator.cli import main

from conftest import MANIFESTS, REPO, examples

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


def test_derived_dims_are_parsed(write_manifest):
    entry = load_manifest(write_manifest(
        "version: 1\nentries:" + GOOD_ENTRY +
        "    dynamic_shapes: {0: {0: {name: b, max: 8}, 1: '2 * b + 1'}}\n")).entries[0]
    assert entry.dynamic_shapes[0][1].derived == (2, "b", 1)


def test_discover_is_a_whole_entry_dynamic_spec(write_manifest):
    entry = load_manifest(write_manifest("version: 1\nentries:" + GOOD_ENTRY +
                                         "    dynamic_shapes: discover\n")).entries[0]
    assert entry.dynamic_shapes == "discover"


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
                                  "gpu.yaml", "nightly-sample.yaml", "dynamic.yaml",
                                  "localize.yaml"])
def test_shipped_manifests_validate(name):
    m = load_manifest(MANIFESTS / name)
    assert m.entries
    if name == "nightly.yaml":
        assert len(m.entries) >= 300


def test_the_nightly_sample_is_the_nightly_on_a_smaller_scale():
    """Benchmarks on the sample stand for the nightly only if its entries are the nightly's."""
    nightly = load_manifest(MANIFESTS / "nightly.yaml").entries
    sample = load_manifest(MANIFESTS / "nightly-sample.yaml").entries
    picked = {nightly[i * len(nightly) // 60].name for i in range(60)}
    assert {e.name for e in sample} == picked and len(sample) == 60
    by_name = {e.name: e for e in nightly}
    for e in sample:
        twin = by_name[e.name]
        assert (e.expect, e.kwargs, e.modes, e.timeout_s, e.entrypoint) == \
            (twin.expect, twin.kwargs, twin.modes, twin.timeout_s, twin.entrypoint), e.name


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
    ("dynamic-word", "version: 1\nentries:" + GOOD_ENTRY + "    dynamic_shapes: discovr\n",
     "manifest.yaml", "mlp", "dynamic_shapes", "must be 'auto', 'discover' or a mapping"),
    ("derived-form", "version: 1\nentries:" + GOOD_ENTRY +
     "    dynamic_shapes: {0: {0: {name: b}, 1: 'b*2'}}\n", "manifest.yaml", "mlp",
     "dynamic_shapes.0.1", "a dim derived from a named one such as '2*batch'"),
    ("derived-base", "version: 1\nentries:" + GOOD_ENTRY +
     "    dynamic_shapes: {0: {1: '2*batch'}}\n", "manifest.yaml", "mlp",
     "dynamic_shapes.0.1", "derived from 'batch', which no dim of this entry is named"),
    ("examples-count", "version: 1\nentries:" + GOOD_ENTRY +
     "    examples: [[{shape: [3, 4]}, {shape: [3, 4]}]]\n", "manifest.yaml", "mlp",
     "examples[0]", "has 2 inputs; 'inputs' has 1"),
    ("examples-dtype", "version: 1\nentries:" + GOOD_ENTRY +
     "    examples: [[{shape: [3, 4], dtype: int64}]]\n", "manifest.yaml", "mlp",
     "examples[0][0]", "is int64 of rank 2; inputs[0] is float32 of rank 2"),
    ("examples-form", "version: 1\nentries:" + GOOD_ENTRY + "    examples: [{shape: [3, 4]}]\n",
     "manifest.yaml", "mlp", "examples", "must be a non-empty list of input lists"),
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


# Hostile or tired input: each is one line, exit 2, naming the file (and entry, field).
BOMB = "version: 1\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nentries: *g\n"
MISTAKES += [
    ("duplicate-key", "version: 1\nentries:" + GOOD_ENTRY + "entries: []\n", "manifest.yaml", None,
     None, "key 'entries' appears twice in one mapping (lines 2 and 6)"),
    ("duplicate-entry-key", "version: 1\nentries:" + GOOD_ENTRY + "    inputs: []\n", "manifest.yaml",
     None, None, "key 'inputs' appears twice"),
    ("deep-nesting", "version: 1\nentries: " + "[" * 100 + "]" * 100 + "\n", "manifest.yaml", None,
     None, "nested more than 64 levels deep"),
    ("alias-bomb", BOMB, "manifest.yaml", None, None, "expands to more than 1,000,000 values"),
    ("version-true", "version: true\nentries: []\n", "manifest.yaml", None, "version",
     "unsupported manifest version True"),
    ("tolerance-nan", "version: 1\nentries:" + GOOD_ENTRY + "    tolerance: {atol: .nan}\n",
     "manifest.yaml", "mlp", "tolerance.atol", "non-negative number, got nan"),
    ("timeout-inf", "version: 1\nentries:" + GOOD_ENTRY + "    timeout_s: .inf\n", "manifest.yaml",
     "mlp", "timeout_s", "positive number of seconds"),
    ("timeout-bool", "version: 1\nentries:" + GOOD_ENTRY + "    timeout_s: true\n", "manifest.yaml",
     "mlp", "timeout_s", "got True"),
    ("timeout-year", "version: 1\nentries:" + GOOD_ENTRY + "    timeout_s: 31536000\n",
     "manifest.yaml", "mlp", "timeout_s", "at most 604800"),
    ("int8-bounds", "version: 1\nentries:\n  - name: ids\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [2], dtype: int8, low: -1000, high: 5}]\n", "manifest.yaml", "ids",
     "inputs[0]", "-128 <= low < high <= 128 for int8"),
    ("uint8-default-high", "version: 1\nentries:\n  - name: ids\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [2], dtype: uint8, low: 250}]\n", "manifest.yaml", "ids", "inputs[0]",
     "high=260"),
    ("bounds-bool", "version: 1\nentries:\n  - name: ids\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [2], dtype: int64, low: true}]\n", "manifest.yaml", "ids", "inputs[0]",
     "must be integers"),
    ("huge-tensor", "version: 1\nentries:\n  - name: big\n    entrypoint: models/tiny.py:make_mlp\n"
     "    inputs: [{shape: [100000, 100000, 100]}]\n", "manifest.yaml", "big", "inputs[0].shape",
     "1,000,000,000,000 elements"),
    ("seed-huge", "version: 1\nentries:" + GOOD_ENTRY + "    seed: 99999999999999999999999\n",
     "manifest.yaml", "mlp", "seed", "in [0, 2**63)"),
    ("dim-huge", "version: 1\nentries:" + GOOD_ENTRY + "    dynamic_shapes: {0: {0: {max: 1e30}}}\n",
     "manifest.yaml", "mlp", "dynamic_shapes.0.0.max", "in [0, 2**63)"),
    ("name-escape", 'version: 1\nentries:\n  - name: "bert\\e[31m red"\n    entrypoint: '
     'models/tiny.py:make_mlp\n', "manifest.yaml", "bert\x1b[31m red", "name", "control characters"),
    ("name-newline", 'version: 1\nentries:\n  - name: "two\\nlines"\n    entrypoint: '
     'models/tiny.py:make_mlp\n', "manifest.yaml", "two\nlines", "name", "control characters"),
    ("tag-escape", "version: 1\nentries:" + GOOD_ENTRY + '    tags: ["\\x07bell"]\n', "manifest.yaml",
     "mlp", "tags", "printable"),
    ("include-outside", "version: 1\ninclude: [../elsewhere.yaml]\nentries: []\n", "manifest.yaml",
     None, "include", "lies outside"),
    ("include-absolute", "version: 1\ninclude: [/etc/hostname]\nentries: []\n", "manifest.yaml",
     None, "include", "lies outside"),
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


def _one_line_exit_2(path, capsys) -> str:
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_undecodable_bytes_are_one_line(tmp_path, capsys):
    path = tmp_path / "manifest.yaml"
    path.write_bytes(b"version: 1\nentries:\n  - name: caf\xe9\n")
    assert "not UTF-8: byte 33 (line 3) is 0xe9" in _one_line_exit_2(path, capsys)


def test_a_file_past_the_size_limit_is_not_read(tmp_path, capsys):
    path = tmp_path / "manifest.yaml"
    path.write_bytes(b"version: 1\n" + b"# padding\n" * 500_000)
    assert "the limit is 4,194,304" in _one_line_exit_2(path, capsys)


def test_messages_quote_at_most_a_bounded_value(write_manifest, capsys):
    path = write_manifest("version: 1\nentries:" + GOOD_ENTRY + f"    device: {'x' * 100_000}\n"
                          f"  - name: {'n' * 50_000}\n    entrypoint: models/tiny.py:make_mlp\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert 1 <= len(err.splitlines()) <= 3 and max(map(len, err.splitlines())) < 400, err[:500]


def test_validate_never_runs_a_package_init(tmp_path, capsys, monkeypatch):
    """Finding ``pkg.models.net`` must not import ``pkg`` (its __init__ could do anything)."""
    marker = tmp_path / "ran"
    pkg = tmp_path / "site" / "evilpkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (pkg / "models" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (pkg / "models" / "net.py").write_text("def make():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nentries:\n  - name: net\n    entrypoint: evilpkg.models.net:make\n"
                    "    inputs: [{shape: [1]}]\n  - name: typo\n"
                    "    entrypoint: evilpkg.models.net:mkae\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'evilpkg.models.net' defines no 'mkae' (did you mean make?)" in err
    assert "entry 'net'" not in err          # found, and named correctly
    assert not marker.exists()


# -- properties: any document, any damage to a real manifest ---------------------------------

import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import yaml  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from exporter.manifest import ENTRY_KEYS, TOP_KEYS  # noqa: E402

KEYS = st.sampled_from(list(TOP_KEYS) + list(ENTRY_KEYS) + [
    "source", "include", "shape", "dtype", "low", "high", "atol", "rtol", "status", "category",
    "stage", "name", "min", "max", "strict", "non-strict", "0", "1"]) | st.text(max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers()
           # no subnormals: a library loaded earlier in the process may set flush-to-zero
           | st.floats(allow_nan=True, allow_subnormal=False)
           | st.text(max_size=40) | st.sampled_from(
               ["models/tiny.py:make_mlp", "auto", "FAIL", "PASS", "cpu", "cuda", "int8",
                "float32", "torchvision", "strict", "../x.yaml", "os:system", "\x1b[31m"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=5), max_leaves=25)
DOCUMENTS = st.fixed_dictionaries(
    {}, optional={"version": st.sampled_from([1, 1, 1, 2, True, "1", None]),
                  "entries": st.lists(st.dictionaries(KEYS, VALUES, max_size=8), max_size=4),
                  "defaults": VALUES, "include": VALUES, "families": VALUES}) | VALUES


def _loads_or_refuses(path) -> None:
    """The one contract: a Manifest, or ManifestErrors with bounded one-line messages."""
    started = time.monotonic()
    try:
        load_manifest(path)
    except ManifestErrors as exc:
        assert exc.errors
        for line in str(exc).splitlines():
            assert len(line) < 1000, line[:200]
            assert not any(ord(c) < 32 for c in line), line[:200]
    assert time.monotonic() - started < 20


@pytest.mark.property
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCUMENTS)
def test_any_yaml_document_loads_or_is_refused_line_by_line(doc, tmp_path_factory):
    folder = tmp_path_factory.mktemp("doc")
    (folder / "models").symlink_to(REPO / "tests" / "models", target_is_directory=True)
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _loads_or_refuses(path)


MUTATIONS = ("insert", "delete", "duplicate-line", "swap-lines", "replace-scalar")
REPLACEMENTS = [b".nan", b".inf", b"-1", b"true", b"1e400", b"99999999999999999999999", b"~",
                b"[", b"{a: 1, a: 2}", b"*nope", b"\xff", b"\x1b[31m", b"'" * 3, b"\t"]


@pytest.fixture(scope="module")
def manifest_copies(tmp_path_factory):
    """The repository's manifests and their model files, in a folder the test may write to."""
    folder = tmp_path_factory.mktemp("manifests")
    shutil.copytree(MANIFESTS / "models", folder / "models")
    for source in ("pathological.yaml", "gpu.yaml", "smoke.yaml"):
        load_manifest(MANIFESTS / source)      # families list their models once per process
    return folder


@pytest.mark.property
@settings(max_examples=examples(120), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_real_manifests_load_or_are_refused(data, manifest_copies):
    source = data.draw(st.sampled_from(["pathological.yaml", "gpu.yaml", "smoke.yaml"]))
    text = bytearray((MANIFESTS / source).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(MUTATIONS))
        lines = bytes(text).split(b"\n")
        if kind == "insert":
            at = data.draw(st.integers(0, len(text)))
            text[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            at = data.draw(st.integers(0, max(0, len(text) - 1)))
            del text[at:at + data.draw(st.integers(1, 40))]
        elif kind == "duplicate-line":
            i = data.draw(st.integers(0, len(lines) - 1))
            text = bytearray(b"\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]))
        elif kind == "swap-lines":
            i, j = data.draw(st.integers(0, len(lines) - 1)), data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = bytearray(b"\n".join(lines))
        else:
            spans = [m.span() for m in __import__("re").finditer(rb"(?<=: )[\w.\-/]+", bytes(text))]
            if spans:
                a, b = data.draw(st.sampled_from(spans))
                text[a:b] = data.draw(st.sampled_from(REPLACEMENTS))
    path = manifest_copies / f"mutated-{source}"
    path.write_bytes(bytes(text))
    tracemalloc.start()
    try:
        _loads_or_refuses(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20


def test_the_number_checks_refuse_what_yaml_calls_numbers():
    from exporter.manifest import _is_number
    assert _is_number(3) and _is_number(0.5)
    assert not any(_is_number(v) for v in (True, math.nan, math.inf, -math.inf, "3", None))
