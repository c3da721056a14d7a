"""Expectations: the file a manifest names, laid over entries' own ``expect``, and
``exportsweep expect update`` keeping it current from a real run (comments survive)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import ManifestErrors
from exporter.expectations import observed, read_file, rewrite
from exporter.manifest import load_manifest
from exporter.spec import Expectation

from conftest import REPO

MODELS = REPO / "manifests" / "models"
MANIFEST = f"""\
version: 1
expectations: expected.yaml
defaults: {{modes: [non-strict, strict]}}
entries:
  - name: deep
    entrypoint: {MODELS}/nested.py:make_outer
    inputs: [{{shape: [2, 4]}}]
  - name: fine
    entrypoint: {MODELS}/dynamic_shapes.py:make_projection
    inputs: [{{shape: [3, 5, 8]}}]
  - name: own
    entrypoint: {MODELS}/nested.py:make_own_forward
    inputs: [{{shape: [2, 4]}}]
    expect: {{status: FAIL}}
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=600)


def test_the_file_overrides_an_entrys_own_expect_per_mode(tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    (tmp_path / "expected.yaml").write_text(
        "version: 1\nexpectations:\n"
        "  deep: {strict: {status: FAIL, category: GRAPH_BREAK}}\n"
        "  own: {status: PASS}\n")
    m = load_manifest(tmp_path / "m.yaml")
    by = {e.name: e for e in m.entries}
    assert by["deep"].expect == {"strict": Expectation("FAIL", "GRAPH_BREAK")}
    assert by["own"].expect == {"non-strict": Expectation("PASS"), "strict": Expectation("PASS")}
    assert m.own_expect["own"]["strict"] == Expectation("FAIL")      # what update compares to
    assert str(tmp_path / "expected.yaml") in m.files                 # hashed into the run


@pytest.mark.parametrize("text, entry, field, phrase", [
    ("version: 1\nexpectations:\n  dep: {status: PASS}\n", "dep", "expectations",
     "no entry of the manifest has this name (did you mean deep?)"),
    ("version: 1\nexpectations:\n  deep: {status: FAIL, category: GRAPH_BRAKE}\n", "deep",
     "expect.category", "did you mean GRAPH_BREAK"),
    ("version: 1\nexpectations:\n  deep: {strict: {status: FAIL}, eager: {status: PASS}}\n",
     "deep", "expect.eager", "unknown key"),
    ("version: 2\nexpectations: {}\n", None, "version", "unsupported expectations version"),
    ("version: 1\nexpectations: [deep]\n", None, "expectations", "must map entry names"),
])
def test_mistakes_in_the_file_name_it_the_entry_and_the_field(tmp_path, text, entry, field,
                                                              phrase):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    (tmp_path / "expected.yaml").write_text(text)
    with pytest.raises(ManifestErrors) as caught:
        load_manifest(tmp_path / "m.yaml")
    [err] = caught.value.errors
    assert err.file.endswith("expected.yaml") and err.entry == entry and err.field == field
    assert phrase in err.message


def test_an_expectations_path_outside_the_manifests_folder_is_refused(tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("expected.yaml", "../elsewhere.yaml"))
    with pytest.raises(ManifestErrors, match="lies outside"):
        load_manifest(tmp_path / "m.yaml")


def test_observed_outcomes_are_the_models_only():
    assert observed("PASS", None, None) == observed("XPASS", None, None) == Expectation("PASS")
    assert observed("XFAIL", "GRAPH_BREAK", "export") == Expectation("FAIL", "GRAPH_BREAK",
                                                                     "export")
    assert observed("ERROR", "TIMEOUT", None) is None and observed("SKIP", None, None) is None


HAND = """\
# Known failures of our zoo. Owner: compiler team.
version: 1
expectations:
  # tracked in BUG-1234
  zeta: {status: FAIL, category: GRAPH_BREAK, stage: export}
  alpha: {status: PASS}   # fixed upstream, keep an eye on it
  gone: {status: FAIL}
"""


def test_rewrite_keeps_comments_order_and_untouched_lines():
    out = rewrite(HAND, {"alpha": {"status": "FAIL", "category": "NUMERIC_MISMATCH"},
                         "gone": None, "new": {"strict": {"status": "FAIL"}}})
    assert out.splitlines()[:5] == HAND.splitlines()[:5]           # header, zeta and its note
    assert "alpha: {status: FAIL, category: NUMERIC_MISMATCH}" in out
    assert "gone" not in out and out.index("zeta") < out.index("alpha") < out.index("new")
    assert "  new: {strict: {status: FAIL}}" in out
    assert rewrite(out, {}) == out


names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="#"),
                min_size=1, max_size=20).filter(lambda s: s.strip() == s)
values = st.one_of(st.none(), st.fixed_dictionaries(
    {"status": st.sampled_from(["FAIL", "PASS"])},
    optional={"category": st.sampled_from(["GRAPH_BREAK", "EXPORT_ERROR"])}))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, values, max_size=6), st.dictionaries(names, values, max_size=6))
def test_whatever_is_written_reads_back_as_written(tmp_path_factory, first, second):
    path = tmp_path_factory.mktemp("exp") / "expected.yaml"
    text = rewrite("", first)
    text = rewrite(text, second)
    path.write_text(text)
    errors: list = []
    found = read_file(str(path), errors)
    assert not errors and found is not None
    want = {k: v for k, v in {**first, **second}.items() if v is not None}
    want = {k: v for k, v in want.items() if not (k in second and second[k] is None)}
    assert found.raw == want


def test_update_from_a_real_run_then_every_entry_comes_out_as_expected(tmp_path):
    manifest, out = tmp_path / "m.yaml", tmp_path / "out"
    manifest.write_text(MANIFEST)
    (tmp_path / "expected.yaml").write_text(
        "version: 1\n# our notes survive the update\nexpectations:\n"
        "  fine: {status: FAIL}   # a stale hand entry: it passes now\n")
    first = _cli("run", str(manifest), "--out", str(out), "--in-process", "--run-id", "one")
    assert first.returncode == 0, first.stderr
    dry = _cli("expect", "update", str(manifest), "--from", str(out), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+  deep: {status: FAIL, category: DATA_DEPENDENT_GUARD, stage: export}" in dry.stdout
    assert "-  fine: {status: FAIL}" in dry.stdout
    assert "own" not in dry.stdout           # its own expect (any FAIL) already says it
    assert (tmp_path / "expected.yaml").read_text().count("fine") == 1   # dry: nothing written
    done = _cli("expect", "update", str(manifest), "--from", str(out))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "expected.yaml").read_text()
    assert "# our notes survive the update" in text and "fine" not in text
    again = _cli("run", str(manifest), "--out", str(out), "--in-process", "--run-id", "two")
    assert again.returncode == 0, again.stderr
    from orchestrator.results.runs import read_final_rows
    statuses = {(r["entry"], r["mode"]): r["status"] for r in read_final_rows(str(out), "two")}
    assert set(statuses.values()) <= {"PASS", "XFAIL"}, statuses
    assert statuses[("deep", "strict")] == "XFAIL" and statuses[("fine", "strict")] == "PASS"
    quiet = _cli("expect", "update", str(manifest), "--from", str(out), "--dry-run")
    assert quiet.stdout.strip().endswith("no change")


def test_update_needs_a_named_file_and_a_real_run(tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("expectations: expected.yaml\n", ""))
    proc = _cli("expect", "update", str(tmp_path / "m.yaml"), "--from", str(tmp_path))
    assert proc.returncode == 2 and "names no expectations file" in proc.stderr
    (tmp_path / "m.yaml").write_text(MANIFEST)
    proc = _cli("expect", "update", str(tmp_path / "m.yaml"), "--from", str(tmp_path / "none"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
