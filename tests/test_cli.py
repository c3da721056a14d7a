"""The command line, run as a user runs it: real processes, real Parquet, real logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds

from conftest import REPO

BIN = Path(sys.executable).parent


def _run(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "exportsweep"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def test_in_process_run_writes_dataset_run_json_and_logs(write_manifest, tmp_path):
    path = write_manifest("""
        version: 1
        entries:
          - name: mlp
            entrypoint: models/tiny.py:make_mlp
            inputs: [{shape: [2, 4]}]
            dynamic_shapes: {0: {0: {name: batch, min: 1, max: 8}}}
          - name: guard
            entrypoint: models/tiny.py:make_guard
            inputs: [{shape: [2, 3]}]
            expect: {status: FAIL, category: DATA_DEPENDENT_GUARD}
          - name: fails
            entrypoint: models/tiny.py:make_guard
            inputs: [{shape: [2, 3]}]
            modes: [strict]
    """)
    out = tmp_path / "results"
    proc = _run("run", str(path), "--out", str(out), "--run-id", "night-1", "--in-process")
    assert proc.returncode == 0, proc.stderr       # model failures do not fail the sweep
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Could not guard" not in proc.stderr      # torch's own output stays in the log
    assert "results: " in proc.stdout and "run_id=night-1" in proc.stdout
    table = ds.dataset(str(out), partitioning="hive").to_table()
    rows = {(r["entry"], r["mode"]): r for r in table.to_pylist()}
    assert set(rows) == {("mlp", "non-strict"), ("mlp", "strict"), ("guard", "non-strict"),
                         ("guard", "strict"), ("fails", "strict")}
    assert rows[("mlp", "strict")]["status"] == "PASS"
    assert rows[("guard", "strict")]["status"] == "XFAIL"
    fails = rows[("fails", "strict")]
    assert fails["status"] == "FAIL" and fails["category"] == "DATA_DEPENDENT_GUARD"
    assert fails["repro"] == f"exportsweep repro {path} fails --mode strict"
    assert all(r["run_id"] == "night-1" and r["attempt"] == 1 for r in rows.values())
    run_dir = out / "run_id=night-1"
    meta = json.loads((run_dir / "_run.json").read_text())
    assert meta["counts"] == {"PASS": 2, "XFAIL": 2, "FAIL": 1} and meta["rows"] == 5
    assert len(meta["manifest_sha256"]) == 64 and meta["versions"]["torch"]
    assert meta["command_line"][1:3] == ["run", str(path)]
    events = [json.loads(line) for line in (run_dir / "_logs" / "driver.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "entry finished" and e["status"] == "FAIL"]
    assert failed and all(e["run"] == "night-1" and e["entry"] == "fails" and e["mode"] == "strict"
                          for e in failed)
    assert any(e["event"] == "captured output" for e in events)
    (finished,) = [e for e in events if e["event"] == "sweep finished"]
    assert finished["problems"] == []        # a whole run, read back whole at its end

    # The repro command in the row works as printed, and shows the full traceback.
    repro = subprocess.run(fails["repro"].replace("exportsweep", str(BIN / "exportsweep"), 1),
                           shell=True, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert repro.returncode == 1
    assert "DATA_DEPENDENT_GUARD" in repro.stdout and "Traceback (most recent call last)" in repro.stdout


def test_python_dash_m_orchestrator_is_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "--help"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0 and "run" in proc.stdout and "validate" in proc.stdout


def test_a_reader_that_leaves_early_gets_a_quiet_stop_not_a_traceback():
    """`exportsweep validate ... | head -1`: the pipe closes before the output is written."""
    proc = subprocess.Popen([str(BIN / "exportsweep"), "validate", "manifests/pathological.yaml"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()                 # the reader is gone before a line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def test_unknown_entry_in_repro_is_bad_input(tmp_path):
    proc = _run("repro", "manifests/pathological.yaml", "patho/no_such_model")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "entry 'patho/no_such_model': no such entry" in proc.stderr


def test_only_that_matches_nothing_is_bad_input(tmp_path):
    proc = _run("run", "manifests/pathological.yaml", "--only", "nothing*", "--out",
                str(tmp_path))
    assert proc.returncode == 2 and "matches no entry" in proc.stderr
    assert not os.listdir(tmp_path)


def test_options_must_be_spelled_out(tmp_path):
    """An abbreviation accepted today would change meaning when a longer option is added,
    and `submit` forwards run options verbatim: neither accepts them."""
    manifest = str(REPO / "manifests" / "smoke.yaml")
    cases = [
        (["run", manifest, "--comp"], "unrecognized arguments: --comp"),
        (["run", manifest, "--in-proc"], "unrecognized arguments: --in-proc"),
        (["submit", manifest, "--address", "http://127.0.0.1:1", "--cpu-work", "2"],
         "submit: run options: unrecognized arguments: --cpu-work"),
        (["submit", manifest, "--addr", "http://127.0.0.1:1"], "--addr"),
        (["submit", manifest, "--address", "http://127.0.0.1:1", "--in-process"],
         "--in-process is not a run option here"),
        (["diff", str(tmp_path), "a", "b", "--fail", "regression"], "--fail"),
    ]
    for args, phrase in cases:
        proc = _run(*args, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and phrase in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_numbers_on_the_command_line_are_finite(tmp_path):
    manifest = str(REPO / "manifests" / "smoke.yaml")
    for option, value in (("--timeout", "inf"), ("--timeout", "nan"), ("--cpus-per-worker", "1e999"),
                          ("--flush-interval", "-1"), ("--max-attempts", "0"),
                          ("--cpu-workers", "two")):
        proc = _run("run", manifest, "--out", str(tmp_path), option, value, timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, \
            (option, value, proc.stderr)
        assert option in proc.stderr
