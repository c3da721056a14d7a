"""The one per-entry path: both executors run an entry through ``run_one`` and log it alike.

The comparison runs real sweeps: ``--in-process`` and on embedded Ray (one CPU worker),
the same manifest, and compares what they wrote: rows and log events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds

from exporter.record import Record
from exporter.schema import RowContext
from orchestrator.execute.entry import repro_command, travelling_rows

from conftest import REPO

BIN = Path(sys.executable).parent
MANIFEST = """version: 1
defaults: {timeout_s: 120, modes: [non-strict, strict]}
entries:
  - name: mlp
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 3]}]
  - name: guard
    entrypoint: models/tiny.py:make_guard
    inputs: [{shape: [2, 3]}]
    expect: {strict: {status: FAIL, category: DATA_DEPENDENT_GUARD}}
"""
# Where and when a row ran: the only columns allowed to differ between executors.
PLACE_AND_TIME = {"worker_id", "pool", "node_id", "hostname", "started_at", "finished_at",
                  "total_s", "peak_rss_mb", "run_id"}


def _sweep(manifest: Path, out: Path, run_id: str, *extra: str) -> list[dict]:
    proc = subprocess.run([str(BIN / "exportsweep"), "run", str(manifest), "--out", str(out),
                           "--run-id", run_id, *extra], capture_output=True, text=True,
                          cwd=REPO, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ds.dataset(str(out / f"run_id={run_id}"), partitioning=None).to_table().to_pylist()


def _finished_events(folder: Path) -> list[dict]:
    events = [json.loads(line) for f in sorted(folder.glob("*.jsonl"))
              for line in f.read_text().splitlines()]
    return [e for e in events if e["event"] == "entry finished"]


def test_both_executors_write_the_same_rows_and_log_one_shape(write_manifest, tmp_path):
    manifest = write_manifest(MANIFEST)
    out = tmp_path / "out"
    local = _sweep(manifest, out, "local", "--in-process")
    on_ray = _sweep(manifest, out, "ray", "--cpu-workers", "1")

    def comparable(rows: list[dict]) -> dict:
        return {(r["entry"], r["mode"]): {k: v for k, v in r.items()
                                          if k not in PLACE_AND_TIME and not k.startswith("seconds_")}
                for r in rows}

    a, b = comparable(local), comparable(on_ray)
    assert set(a) == {("mlp", "non-strict"), ("mlp", "strict"), ("guard", "non-strict"),
                      ("guard", "strict")}
    assert a == b
    assert a[("guard", "strict")]["status"] == "XFAIL" and a[("guard", "non-strict")]["status"] == "FAIL"
    assert {r["pool"] for r in local} == {"in-process"} and {r["pool"] for r in on_ray} == {"cpu"}

    local_events = _finished_events(out / "run_id=local" / "_logs")
    ray_events = _finished_events(out / "run_id=ray" / "_logs")
    assert len(local_events) == len(ray_events) == 4
    keys = {frozenset(e) for e in local_events + ray_events}
    assert len(keys) == 1, keys                       # one shape, whatever the executor or status
    (shape,) = keys
    assert {"run", "worker", "attempt", "entry", "mode", "stage", "status", "category",
            "signature", "message", "seconds"} <= shape
    assert {(e["entry"], e["mode"], e["status"]) for e in local_events} == \
        {(e["entry"], e["mode"], e["status"]) for e in ray_events}


def test_a_row_that_cannot_pickle_becomes_an_infra_error_row():
    class Unpicklable(str):
        def __reduce__(self):
            raise TypeError("no pickling for you")

    record = Record(entry="e", family="manual", mode="strict", device="cpu")
    record.message = Unpicklable("poisoned")
    (out,) = travelling_rows([record], RowContext(run_id="r"))
    assert out["status"] == "ERROR" and out["category"] == "INFRA_ERROR"
    assert "could not be pickled" in out["message"] and "no pickling for you" in out["message"]


def test_repro_command_quotes_what_a_shell_would_split():
    make = repro_command("my manifests/zoo.yaml")
    assert make("hf/bert base", "strict") == \
        "exportsweep repro 'my manifests/zoo.yaml' 'hf/bert base' --mode strict"
