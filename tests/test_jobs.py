"""exportsweep submit / jobs against a real multi-node Ray cluster started with `ray start`.

The cluster: a head holding no CPU (the driver never holds resources, as on KubeRay), a CPU
node and a node advertising a fake GPU.  Results go to the S3-compatible server on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest

from orchestrator.results.runs import read_run
from raynodes import LocalRayCluster

BIN = Path(sys.executable).parent
MODELS = Path(__file__).parent / "models"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="rayjobs")      # short: Ray's socket paths must fit
    c = LocalRayCluster({"cpu": {"cpus": 2}, "gpu": {"cpus": 2, "gpus": 1}}, temp_dir=temp)
    try:
        yield c.start()
    finally:
        c.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path: Path, s3_server: str) -> Path:
    """What a user submits from: a manifest, its model files and a runtime_env with the
    object store's credentials (the cluster's processes do not have them otherwise)."""
    wd = tmp_path / "zoo"
    shutil.copytree(MODELS, wd / "models")
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                                      "AWS_EC2_METADATA_DISABLED")}
    (wd / "runtime_env.yaml").write_text(json.dumps({"env_vars": env}))
    return wd


def _cli(*args: str, cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([str(BIN / "exportsweep"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


def _entries(*specs: str) -> str:
    return "version: 1\ndefaults: {modes: [non-strict], timeout_s: 120}\nentries:\n" + \
        "".join(f"  - {s}\n" for s in specs)


def test_submit_runs_on_the_cluster_and_results_land_on_s3(cluster, workdir, s3_bucket):
    (workdir / "zoo.yaml").write_text(_entries(
        *[f"{{name: cpu{i}, entrypoint: models/tiny.py:make_mlp, inputs: [{{shape: [2, 4]}}]}}"
          for i in range(3)],
        *[f"{{name: gpu{i}, entrypoint: models/tiny.py:make_guard, inputs: [{{shape: [2, 3]}}],"
          f" device: cuda}}" for i in range(2)]))
    out = f"s3://{s3_bucket}/nightly"
    submit = ["submit", "zoo.yaml", "--address", cluster.dashboard, "--out", out,
              "--submission-id", "nightly-1", "--runtime-env", "runtime_env.yaml",
              "--cpu-workers", "2", "--gpu-workers", "1"]
    proc = _cli(*submit, "--wait", cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted job nightly-1" in proc.stdout and "job nightly-1: SUCCEEDED" in proc.stdout
    assert "[5/5]" in proc.stdout                     # the sweep's own progress, streamed

    run = read_run(out, "nightly-1")
    assert run.problems == [] and len(run.final_rows) == 5
    rows = {r["entry"]: r for r in run.final_rows}
    gpu_node, cpu_node = cluster.nodes["gpu"].node_id, cluster.nodes["cpu"].node_id
    for i in range(2):
        r = rows[f"gpu{i}"]
        assert (r["pool"], r["node_id"], r["requested_device"]) == ("gpu", gpu_node, "cuda")
        assert r["category"] == "DATA_DEPENDENT_GUARD"
    assert all(rows[f"cpu{i}"]["pool"] == "cpu" and rows[f"cpu{i}"]["status"] == "PASS"
               for i in range(3))
    assert {r["node_id"] for r in rows.values()} >= {gpu_node, cpu_node}   # > 1 node
    assert cluster.nodes["head"].node_id not in {r["node_id"] for r in rows.values()}
    assert run.meta.cluster["nodes"] == 3 and run.meta.executor == "ray"

    report = _cli("report", out, "-o", str(workdir / "report.html"), cwd=workdir)
    assert report.returncode == 0, report.stderr        # read back from S3 by the report
    html = (workdir / "report.html").read_text()
    assert "nightly-1" in html and len(re.findall(r'<tr[^>]*data-status="FAIL"', html)) == 2

    again = _cli(*submit, cwd=workdir)                # a nightly retried: refused, clearly
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "submission id 'nightly-1' already exists" in again.stderr
    status = _cli("jobs", "status", "nightly-1", "--address", cluster.dashboard, cwd=workdir)
    assert status.returncode == 0 and "job nightly-1: SUCCEEDED" in status.stdout
    assert f"results:    {out} (run nightly-1)" in status.stdout
    logs = _cli("jobs", "logs", "nightly-1", "--address", cluster.dashboard, cwd=workdir)
    assert logs.returncode == 0 and "results: " + out + "/run_id=nightly-1" in logs.stdout


def test_bad_submissions_fail_before_reaching_the_cluster(cluster, workdir, tmp_path):
    (workdir / "zoo.yaml").write_text(_entries(
        "{name: a, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}]}"))
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(_entries(
        f"{{name: far, entrypoint: {MODELS}/tiny.py:make_mlp, inputs: [{{shape: [2, 4]}}]}}"))
    cases = [
        (["zoo.yaml", "--cpu-workers", "-1"], "submit: run options: argument --cpu-workers"),
        (["zoo.yaml", "--in-process"], "--in-process is not a run option here"),
        ([str(outside)], "lies outside the working dir"),
        (["missing.yaml"], "missing.yaml"),
    ]
    for args, message in cases:
        proc = _cli("submit", *args, "--address", cluster.dashboard, cwd=workdir)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    unknown = _cli("jobs", "status", "no-such-job", "--address", cluster.dashboard, cwd=workdir)
    assert unknown.returncode == 2 and "no job 'no-such-job'" in unknown.stderr


def test_a_job_can_be_stopped(cluster, workdir, s3_bucket):
    (workdir / "zoo.yaml").write_text(_entries(
        "{name: slow, entrypoint: models/faults.py:make_slow, inputs: [{shape: [2, 4]}], "
        "kwargs: {seconds: 60}}"))
    proc = _cli("submit", "zoo.yaml", "--address", cluster.dashboard, "--out",
                f"s3://{s3_bucket}/r", "--runtime-env", "runtime_env.yaml", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split()[2]
    _wait_for(lambda: "RUNNING" in _cli("jobs", "status", job_id, "--address",
                                        cluster.dashboard, cwd=workdir).stdout, 120)
    stop = _cli("jobs", "stop", job_id, "--address", cluster.dashboard, cwd=workdir)
    assert stop.returncode == 0 and "stop requested" in stop.stdout
    follow = _cli("jobs", "logs", job_id, "--address", cluster.dashboard, "--follow",
                  cwd=workdir, timeout=120)
    assert follow.returncode == 130 and f"job {job_id}: STOPPED" in follow.stderr


def test_losing_a_worker_node_mid_run_reschedules_its_entries(cluster, workdir, s3_bucket):
    """Last in this module: it takes the CPU node away for good."""
    (workdir / "zoo.yaml").write_text(_entries(
        *[f"{{name: slow{i}, entrypoint: models/faults.py:make_slow, inputs: [{{shape: [2, 4]}}],"
          f" kwargs: {{seconds: 4}}, device: any}}" for i in range(8)]))
    out = f"s3://{s3_bucket}/lossy"
    proc = _cli("submit", "zoo.yaml", "--address", cluster.dashboard, "--out", out,
                "--submission-id", "lossy", "--runtime-env", "runtime_env.yaml",
                "--cpu-workers", "2", "--gpu-workers", "1", "--worker-start-timeout", "40",
                cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    s3 = boto3.client("s3")

    def rows_written() -> int:
        listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="lossy/run_id=lossy/part-")
        return listed.get("KeyCount", 0)

    _wait_for(lambda: rows_written() >= 1, 180)      # workers are busy with entries
    stopping = time.monotonic()
    cluster.stop_node("cpu")
    print(f"node stopped in {time.monotonic() - stopping:.1f} s")
    follow = _cli("jobs", "logs", "lossy", "--address", cluster.dashboard, "--follow",
                  cwd=workdir, timeout=400)
    assert follow.returncode == 0, follow.stdout[-3000:] + follow.stderr[-2000:]
    run = read_run(out, "lossy")
    assert run.problems == []
    assert sorted(r["entry"] for r in run.final_rows) == [f"slow{i}" for i in range(8)]
    assert all(r["status"] == "PASS" for r in run.final_rows)
    log = s3.get_object(Bucket=s3_bucket, Key="lossy/run_id=lossy/_logs/driver.jsonl")
    events = [json.loads(line) for line in log["Body"].read().decode().splitlines()]
    requeued = [e for e in events if e["event"] == "node lost: entry requeued"]
    assert requeued and all(e["node"] == cluster.nodes["cpu"].node_id for e in requeued)
    assert {r["entry"] for r in run.final_rows} >= {e["entry"] for e in requeued}


def _wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(1)
