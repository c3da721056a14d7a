"""Submit-to-first-row and total time of `exportsweep submit` on a local multi-node cluster.

Starts what tests/test_jobs.py starts (a head holding no CPU, a 2-CPU node, a 2-CPU node
advertising a fake GPU, all with `ray start`), an S3-compatible server on loopback (moto),
then submits the smoke-sized test zoo below and times, from the moment `exportsweep submit`
is called: the job accepted, the first row file on S3, the job finished.  Then it runs
`exportsweep report` on the S3 results.

    .venv/bin/python bench/cluster_submit.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from raynodes import LocalRayCluster  # noqa: E402

BIN = os.path.dirname(sys.executable)
ZOO = """version: 1
defaults: {timeout_s: 300}
entries:
  - {name: mlp, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}]}
  - {name: guard, entrypoint: models/tiny.py:make_guard, inputs: [{shape: [2, 3]}]}
  - {name: counter, entrypoint: models/tiny.py:make_counter, inputs: [{shape: [2, 4]}]}
  - {name: mlp_gpu, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}], device: cuda}
  - {name: guard_gpu, entrypoint: models/tiny.py:make_guard, inputs: [{shape: [2, 3]}], device: cuda}
families:
  - {source: torchvision, include: [resnet18, mobilenet_v3_small]}
"""


def main() -> None:
    work = tempfile.mkdtemp(prefix="clbench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = subprocess.Popen([os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    aws = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    os.environ.update(aws)
    cluster = LocalRayCluster({"cpu": {"cpus": 2}, "gpu": {"cpus": 2, "gpus": 1}},
                              temp_dir=os.path.join(work, "ray"))
    try:
        t0 = time.monotonic()
        cluster.start()
        print(f"cluster of 3 nodes up in {time.monotonic() - t0:.1f} s")
        import boto3
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        zoo = os.path.join(work, "zoo")
        shutil.copytree(os.path.join(ROOT, "tests", "models"), os.path.join(zoo, "models"))
        with open(os.path.join(zoo, "zoo.yaml"), "w") as f:
            f.write(ZOO)
        with open(os.path.join(zoo, "env.yaml"), "w") as f:
            json.dump({"env_vars": aws}, f)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        print(f"{'job':<10} {'flush':<22} {'exit':>4} {'pairs':>5} {'first row':>10} {'total':>7}")
        for job, flush in (("bench-1", []), ("bench-2", ["--flush-interval", "0"])):
            first_row, total, code, pairs = submit(cluster, s3, zoo, env, job, flush)
            print(f"{job:<10} {' '.join(flush) or 'default (10 s on S3)':<22} {code:>4} "
                  f"{pairs:>5} {first_row:>9.1f}s {total:>6.1f}s")
        report = subprocess.run([os.path.join(BIN, "exportsweep"), "report", "s3://bench/nightly",
                                 "-o", os.path.join(work, "report.html")], env=env,
                                capture_output=True, text=True)
        print(f"report from S3: exit {report.returncode}: {report.stdout.strip()[:200]}")
    finally:
        cluster.shutdown()
        moto.terminate()
        shutil.rmtree(work, ignore_errors=True)


def submit(cluster: LocalRayCluster, s3, zoo: str, env: dict, job: str,
           flush: list[str]) -> tuple[float, float, int, int]:
    """Submit and wait; returns (submit -> first rows file on S3, total, exit code, pairs)."""
    started = time.monotonic()
    proc = subprocess.Popen([os.path.join(BIN, "exportsweep"), "submit", "zoo.yaml",
                             "--address", cluster.dashboard, "--out", "s3://bench/nightly",
                             "--submission-id", job, "--runtime-env", "env.yaml",
                             "--cpu-workers", "2", "--gpu-workers", "1", *flush, "--wait"],
                            cwd=zoo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)     # unread: a pipe would fill and block it
    first_row = float("nan")
    while proc.poll() is None:
        if first_row != first_row:
            listed = s3.list_objects_v2(Bucket="bench", Prefix=f"nightly/run_id={job}/part-")
            if listed.get("KeyCount"):
                first_row = time.monotonic() - started
        time.sleep(0.2)
    total = time.monotonic() - started
    from orchestrator.results.runs import read_run
    pairs = len(read_run("s3://bench/nightly", job).final_rows)
    return first_row, total, proc.returncode, pairs


if __name__ == "__main__":
    main()
