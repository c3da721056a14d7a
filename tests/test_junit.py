"""JUnit XML, parsed back by an established reader (junitparser) as CI systems would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import junitparser

from conftest import REPO
from test_diff import _record, _write

BIN = Path(sys.executable).parent


def test_junit_round_trip(tmp_path):
    out = tmp_path / "results"
    skipped = _record("gpu_only", "SKIP")
    skipped.skip_reason = "entry needs a GPU worker and the cluster has none"
    skipped.status = "SKIP"
    _write(out, "night", [
        _record("ok", total_s=3.5),
        _record("broken", "FAIL", "DATA_DEPENDENT_GUARD", "export", message="Could not guard\nmore",
                seconds={"export": 1.25}),
        _record("known", "XFAIL", "GRAPH_BREAK", "export"),
        _record("hung", "ERROR", "TIMEOUT", None, message="no result after 8.0 s"),
        _record("stale", "XPASS", expected="FAIL GRAPH_BREAK"),
        skipped,
    ])
    xml = tmp_path / "junit.xml"
    proc = subprocess.run([str(BIN / "exportsweep"), "junit", str(out), "--run", "night", "-o",
                           str(xml)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    suites = junitparser.JUnitXml.fromfile(str(xml))
    (suite,) = list(suites)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 2, 1, 2)
    cases = {c.name: c for c in suite}
    assert set(cases) == {f"{n}[strict]" for n in
                          ("ok", "broken", "known", "hung", "stale", "gpu_only")}
    assert cases["ok[strict]"].is_passed and cases["ok[strict]"].time == 3.5
    assert cases["ok[strict]"].classname == "exportsweep.manual"
    (failure,) = cases["broken[strict]"].result
    assert isinstance(failure, junitparser.Failure) and failure.type == "DATA_DEPENDENT_GUARD"
    assert failure.message.startswith("DATA_DEPENDENT_GUARD at export: Could not guard")
    assert isinstance(cases["hung[strict]"].result[0], junitparser.Error)
    assert isinstance(cases["known[strict]"].result[0], junitparser.Skipped)
    assert "update the expectation" in cases["stale[strict]"].result[0].message
    assert "GPU worker" in cases["gpu_only[strict]"].result[0].message
    text = xml.read_text()
    assert 'name="signature"' in text and 'name="seconds_export" value="1.250"' in text
    assert "repro: exportsweep repro m.yaml broken --mode strict" in text


def test_any_bytes_in_a_message_still_make_well_formed_xml(tmp_path):
    out = tmp_path / "results"
    nasty = "\x1b[31mred\x1b[0m \x00nul \x08bs \ufffe end"
    _write(out, "night", [_record("ansi", "FAIL", "EXPORT_ERROR", "export", message=nasty),
                          _record("ent\x1bry", "ERROR", "TIMEOUT", None, message=nasty)])
    xml = tmp_path / "junit.xml"
    proc = subprocess.run([str(BIN / "exportsweep"), "junit", str(out), "--run", "night", "-o",
                           str(xml)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    (suite,) = list(junitparser.JUnitXml.fromfile(str(xml)))
    assert (suite.failures, suite.errors) == (1, 1)
    text = xml.read_text(encoding="utf-8")
    assert "\\x1b[31mred" in text and "\\x00nul" in text and "\x1b" not in text
