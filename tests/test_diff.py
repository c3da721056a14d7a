"""exportsweep diff over two real runs written as Parquet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from exporter.record import Record
from exporter.schema import RowContext, row
from exporter.taxonomy import Failure
from orchestrator.results.runs import read_final_rows
from orchestrator.results.sink import ResultSink
from orchestrator.views import diff

from conftest import REPO

BIN = Path(sys.executable).parent


def _record(entry: str, status: str = "PASS", category: str | None = None,
            stage: str | None = None, message: str = "boom", **facts) -> Record:
    r = Record(entry=entry, family="manual", mode="strict", device="cpu",
               repro=f"exportsweep repro m.yaml {entry} --mode strict")
    for s in ("build", "eager", "export", "verify", "numerics", "dynamic", "decompose",
              "serialize"):
        if stage == s:
            break
        r.passed(s)
    if category:
        r.fail(Failure.make(category, stage, message, exception_type="RuntimeError"))
    r.status = status
    for k, v in facts.items():
        setattr(r, k, v)
    return r


def _write(out: Path, run_id: str, records: list[Record]) -> None:
    ResultSink(str(out), run_id).write([row(r, RowContext(run_id=run_id)) for r in records])


def _two_runs(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    _write(out, "base", [
        _record("stays_ok", total_s=10.0, peak_rss_mb=1000.0, max_abs_err=1e-6),
        _record("breaks"),
        _record("gets_fixed", "FAIL", "GRAPH_BREAK", "export"),
        _record("fails_earlier", "FAIL", "DECOMPOSITION_ERROR", "decompose"),
        _record("fails_later", "FAIL", "DATA_DEPENDENT_GUARD", "export"),
        _record("other_category", "FAIL", "GRAPH_BREAK", "export"),
        _record("other_cause", "FAIL", "GRAPH_BREAK", "export", message="cause one"),
        _record("same_failure", "XFAIL", "GRAPH_BREAK", "export"),
        _record("drops_out"),
        _record("now_xpass", "XFAIL", "GRAPH_BREAK", "export"),
        _record("now_skipped"),
        _record("failing_now_skipped", "FAIL", "GRAPH_BREAK", "export"),
        _record("skipped_now_runs", "SKIP"),
        _record("skipped_now_fails", "SKIP"),
        _record("stays_skipped", "SKIP"),
    ])
    _write(out, "new", [
        _record("stays_ok", total_s=20.0, peak_rss_mb=2000.0, max_abs_err=0.5),
        _record("breaks", "FAIL", "DATA_DEPENDENT_GUARD", "export"),
        _record("gets_fixed"),
        _record("fails_earlier", "FAIL", "EXPORT_ERROR", "export"),
        _record("fails_later", "FAIL", "NUMERIC_MISMATCH", "numerics"),
        _record("other_category", "FAIL", "EXPORT_ERROR", "export"),
        _record("other_cause", "FAIL", "GRAPH_BREAK", "export", message="cause two"),
        _record("same_failure", "XFAIL", "GRAPH_BREAK", "export"),
        _record("new_model"),
        _record("now_xpass", "XPASS"),
        _record("now_skipped", "SKIP"),
        _record("failing_now_skipped", "SKIP"),
        _record("skipped_now_runs"),
        _record("skipped_now_fails", "FAIL", "GRAPH_BREAK", "export"),
        _record("stays_skipped", "SKIP"),
    ])
    return out


def test_every_kind_of_change_is_named(tmp_path):
    out = _two_runs(tmp_path)
    changes = diff.compare_runs(read_final_rows(str(out), "base"),
                                read_final_rows(str(out), "new"))
    by = {c.entry: c for c in changes}
    assert {e: c.change for e, c in by.items()} == {
        "stays_ok": "UNCHANGED", "breaks": "NEW_FAILURE", "gets_fixed": "FIXED",
        "fails_earlier": "REGRESSED", "fails_later": "PROGRESSED",
        "other_category": "CATEGORY_CHANGED", "other_cause": "SIGNATURE_CHANGED",
        "same_failure": "UNCHANGED", "drops_out": "MISSING", "new_model": "NEW_ENTRY",
        "now_xpass": "FIXED",
        # skipped now: not compared, and never a fix (a pass or a failure alike)
        "now_skipped": "SKIPPED", "failing_now_skipped": "SKIPPED",
        "skipped_now_runs": "FIXED", "skipped_now_fails": "NEW_FAILURE",
        "stays_skipped": "UNCHANGED"}
    drift = " ".join(by["stays_ok"].drift)
    assert "max_abs_err" in drift and "wall 10.0s -> 20.0s" in drift and "peak memory" in drift
    assert by["now_xpass"].update_expectation and not by["gets_fixed"].update_expectation
    assert changes[0].change == "NEW_FAILURE"         # the worst news first
    assert diff.gate(changes, ["regression"]) and {c.entry for c in diff.gate(
        changes, ["regression"])} == {"breaks", "fails_earlier", "skipped_now_fails"}
    assert [c.entry for c in diff.gate(changes, ["missing"])] == ["drops_out"]
    assert sorted(c.entry for c in diff.gate(changes, ["skipped"])) == [
        "failing_now_skipped", "now_skipped"]
    assert [c.entry for c in diff.gate(changes, ["xpass"])] == ["now_xpass"]
    assert diff.gate(changes, []) == []


def test_diff_command_formats_and_gates(tmp_path):
    out = _two_runs(tmp_path)
    exe = str(BIN / "exportsweep")
    table = subprocess.run([exe, "diff", str(out), "base", "new"], capture_output=True, text=True,
                           cwd=REPO)
    assert table.returncode == 0, table.stderr
    assert "NEW_FAILURE" in table.stdout and "MISSING" in table.stdout
    assert "update the expectation" in table.stdout
    as_json = subprocess.run([exe, "diff", str(out), "base", "new", "--format", "json"],
                             capture_output=True, text=True, cwd=REPO)
    data = json.loads(as_json.stdout)
    assert data["counts"]["NEW_FAILURE"] == 2 and data["counts"]["MISSING"] == 1
    assert data["counts"]["SKIPPED"] == 2
    md = subprocess.run([exe, "diff", str(out), "base", "new", "--format", "markdown"],
                        capture_output=True, text=True, cwd=REPO)
    assert md.stdout.startswith("### exportsweep: `base` → `new`") and "| MISSING |" in md.stdout
    gated = subprocess.run([exe, "diff", str(out), "base", "new", "--fail-on", "regression,missing"],
                           capture_output=True, text=True, cwd=REPO)
    assert gated.returncode == 1 and "trip the gate" in gated.stderr
    clean = subprocess.run([exe, "diff", str(out), "base", "base", "--fail-on", "regression,missing"],
                           capture_output=True, text=True, cwd=REPO)
    assert clean.returncode == 0
    bad = subprocess.run([exe, "diff", str(out), "base", "nope"], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode == 2 and "no run 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_base_run_from_another_folder(tmp_path):
    out = _two_runs(tmp_path)
    other = tmp_path / "yesterday"
    _write(other, "old", [_record("breaks")])
    proc = subprocess.run([str(BIN / "exportsweep"), "diff", str(out), "old", "new", "--base-dir",
                           str(other), "--format", "json"], capture_output=True, text=True,
                          cwd=REPO)
    data = json.loads(proc.stdout)
    assert data["counts"]["NEW_FAILURE"] == 1 and data["counts"]["NEW_ENTRY"] == 14
