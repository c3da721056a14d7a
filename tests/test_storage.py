"""Results on object storage: a real S3-compatible server on loopback (moto), no mocks of pyarrow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from exporter.errors import UsageError
from orchestrator.results import storage
from orchestrator.results.runs import list_runs, read_run

BIN = Path(sys.executable).parent

MANIFEST = """
version: 1
entries:
  - {name: mlp, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}]}
  - name: guard
    entrypoint: models/tiny.py:make_guard
    inputs: [{shape: [2, 3]}]
    expect: {status: FAIL, category: DATA_DEPENDENT_GUARD}
"""


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "exportsweep"), *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def _keys(bucket: str, prefix: str = "") -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_publish_leaves_no_temporary_file_locally(tmp_path):
    loc = storage.location(str(tmp_path))
    storage.publish_bytes(loc, loc.path("a", "x.json"), b"{}")
    assert os.listdir(tmp_path / "a") == ["x.json"]


def test_an_unknown_scheme_is_bad_input(tmp_path):
    with pytest.raises(UsageError, match="results location 'nosuch://b/x'"):
        storage.location("nosuch://b/x")
    proc = _cli("junit", "nosuch://b/x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_sweep_to_s3_then_every_reader_reads_it_back(write_manifest, s3_bucket, tmp_path):
    manifest = write_manifest(MANIFEST)
    out = f"s3://{s3_bucket}/nightly"
    for run_id, flush in (("n1", []), ("n2", ["--flush-interval", "0"])):
        proc = _cli("run", str(manifest), "--out", out, "--run-id", run_id, "--in-process",
                    *flush)
        assert proc.returncode == 0, proc.stderr
    keys = _keys(s3_bucket)
    # Rows are gathered for 10 s on object stores (one PUT for both entries here), and
    # published per entry with --flush-interval 0.
    assert len([k for k in keys if k.startswith("nightly/run_id=n1/part-")]) == 1
    assert len([k for k in keys if k.startswith("nightly/run_id=n2/part-")]) == 2
    assert "nightly/run_id=n2/_run.json" in keys
    assert "nightly/run_id=n2/_logs/driver.jsonl" in keys          # uploaded at the end
    assert "nightly/_clusters/run_id=n2/clusters.parquet" in keys
    assert not [k for k in keys if "/." in k or k.endswith(".tmp")]
    assert [r.run_id for r in list_runs(out)] == ["n1", "n2"]
    run = read_run(out, "n2")
    assert run.problems == [] and len(run.final_rows) == 4
    assert {r["status"] for r in run.final_rows} == {"PASS", "XFAIL"}

    diff = _cli("diff", out, "previous", "latest", "--format", "json", "--fail-on",
                "regression,missing,incomplete")
    assert diff.returncode == 0, diff.stderr
    assert json.loads(diff.stdout)["counts"] == {"UNCHANGED": 4}
    junit = _cli("junit", out, "-o", f"s3://{s3_bucket}/ci/junit.xml")
    assert junit.returncode == 0, junit.stderr
    xml = boto3.client("s3").get_object(Bucket=s3_bucket, Key="ci/junit.xml")["Body"].read()
    assert xml.count(b"<testcase") == 4

    report = _cli("report", out, "-o", f"s3://{s3_bucket}/reports/n2.html")
    assert report.returncode == 0, report.stderr
    html = boto3.client("s3").get_object(Bucket=s3_bucket, Key="reports/n2.html")["Body"].read()
    assert b"n2" in html and b"n1" in html                  # the run and its baseline

    compact = _cli("compact", out, "--run", "n2")
    assert compact.returncode == 0 and "2 files -> 1" in compact.stdout, compact.stderr
    parts = [k for k in _keys(s3_bucket, "nightly/run_id=n2/") if k.endswith(".parquet")]
    assert len(parts) == 1 and "part-compacted-" in parts[0]
    after = read_run(out, "n2")
    assert after.problems == [] and len(after.rows) == 4


def test_resume_on_s3_runs_only_what_is_missing(write_manifest, s3_bucket):
    manifest = write_manifest(MANIFEST)
    out = f"s3://{s3_bucket}/r"
    assert _cli("run", str(manifest), "--out", out, "--run-id", "n1", "--in-process",
                "--flush-interval", "0").returncode == 0
    s3 = boto3.client("s3")
    parts = [k for k in _keys(s3_bucket, "r/run_id=n1/") if k.endswith(".parquet")]
    lost = parts[0]
    s3.delete_object(Bucket=s3_bucket, Key=lost)
    damaged = read_run(out, "n1")
    assert any("but missing" in p for p in damaged.problems) and len(damaged.final_rows) == 2
    proc = _cli("run", str(manifest), "--out", out, "--resume", "n1", "--in-process")
    assert proc.returncode == 0, proc.stderr
    healed = read_run(out, "n1")
    assert healed.problems == [] and len(healed.final_rows) == 4
    assert len(healed.rows) == 4                                 # nothing ran twice


def test_the_sink_gathers_rows_for_its_interval(tmp_path):
    from exporter.record import Record
    from exporter.schema import RowContext, row
    from orchestrator.results.sink import ResultSink

    def rows(name: str) -> list[dict]:
        return [row(Record(entry=name, family="manual", mode="strict", device="cpu"),
                    RowContext(run_id="r"))]

    sink = ResultSink(str(tmp_path), "r", flush_interval_s=3600)
    assert sink.write(rows("a")) is None and sink.write(rows("b")) is None
    folder = tmp_path / "run_id=r"
    assert not list(folder.glob("*.parquet"))            # gathered, not yet published
    name = sink.flush()
    assert [p.name for p in folder.glob("*.parquet")] == [name] and sink.rows_written == 2
    assert sink.flush() is None
    eager = ResultSink(str(tmp_path), "e")                 # local default: per entry
    assert eager.flush_interval_s == 0 and eager.write(rows("a")) is not None
