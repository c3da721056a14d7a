"""--flaky-reruns: fresh-process reruns mark an entry whose outcome flips as flaky (real
processes, real pipeline), and diff treats flaky entries apart."""

from __future__ import annotations

import subprocess
import sys

from orchestrator.execute.rerun import outcome
from orchestrator.results.runs import read_final_rows
from orchestrator.views import diff

from conftest import REPO

MODELS = REPO / "tests" / "models"


def _manifest(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(f"""version: 1
entries:
  - name: flips
    entrypoint: {MODELS}/tiny.py:make_flaky
    kwargs: {{counter: {tmp_path / "count"}}}
    inputs: [{{shape: [2, 4]}}]
  - name: steady
    entrypoint: {MODELS}/tiny.py:make_mlp
    inputs: [{{shape: [2, 4]}}]
""")
    return path


def test_an_entry_whose_outcome_flips_is_flaky_and_a_steady_one_is_not(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(_manifest(tmp_path)),
                           "--out", str(out), "--in-process", "--run-id", "r",
                           "--flaky-reruns", "1"], capture_output=True, text=True, cwd=REPO,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["entry"], r["mode"]): r for r in read_final_rows(str(out), "r")}
    for mode in ("non-strict", "strict"):
        flips, steady = rows[("flips", mode)], rows[("steady", mode)]
        assert (flips["status"], flips["category"]) == ("FAIL", "DATA_DEPENDENT_GUARD")
        assert flips["flaky"] is True and flips["reruns"] == 1
        assert flips["flaky_outcomes"] == ["FAIL DATA_DEPENDENT_GUARD @export", "PASS"]
        assert steady["flaky"] is False and steady["reruns"] == 1
        assert steady["flaky_outcomes"] == []
    # Two builds: the run's and the rerun's, in its own process.
    assert (tmp_path / "count").read_text() == "2"


def test_outcomes_leave_the_expectation_out():
    assert outcome("XFAIL", "GRAPH_BREAK", "export") == outcome("FAIL", "GRAPH_BREAK", "export")
    assert outcome("XPASS", None, None) == outcome("PASS", None, None) == "PASS"
    assert outcome("ERROR", "TIMEOUT", None) == "ERROR TIMEOUT"


def _row(status, category=None, stage=None, flaky=None):
    return {"entry": "e", "mode": "strict", "status": status, "category": category,
            "failed_stage": stage, "stage_ordinal": 3 if stage else 8, "signature": None,
            "flaky": flaky, "repro": None}


def test_diff_sets_flaky_changes_apart_from_regressions():
    [change] = diff.compare_runs([_row("PASS")], [_row("FAIL", "GRAPH_BREAK", "export", True)])
    assert change.change == "FLAKY"
    assert diff.gate([change], ["regression"]) == [] and diff.gate([change], ["flaky"])
    [change] = diff.compare_runs([_row("PASS")], [_row("FAIL", "GRAPH_BREAK", "export")])
    assert change.change == "NEW_FAILURE"
