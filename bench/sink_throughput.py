"""How fast the result sink publishes and the reader reads, on local disk and on S3.

Writes N small part files (one per finished entry, 2 rows each, as a sweep does) to a local
folder and to an S3-compatible server on loopback (moto; started here), then reads the run
back with orchestrator.results.runs.read_run, and compacts it.  The figures feed docs/cluster.md's
paper estimate of a 10,000-model sweep.

    .venv/bin/python bench/sink_throughput.py [N]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from exporter.record import Record  # noqa: E402
from exporter.schema import RowContext, row  # noqa: E402
from orchestrator.results.compact import compact_run  # noqa: E402
from orchestrator.results.layout import RunMeta  # noqa: E402
from orchestrator.results.runs import read_run  # noqa: E402
from orchestrator.results.sink import ResultSink  # noqa: E402
from orchestrator.results.storage import listing, location  # noqa: E402


def rows_for(i: int, run_id: str) -> list[dict]:
    out = []
    for mode in ("strict", "non-strict"):
        r = Record(entry=f"model_{i:05d}", family="timm", mode=mode, device="cuda")
        r.status, r.total_s, r.peak_rss_mb = "PASS", 12.5, 2048.0
        out.append(row(r, RowContext(run_id=run_id)))
    return out


def measure(out: str, n: int) -> dict[str, float]:
    sink = ResultSink(out, "bench", flush_interval_s=0)     # one file per entry: the worst case
    started = time.perf_counter()
    for i in range(n):
        sink.write(rows_for(i, "bench"))
    write_s = time.perf_counter() - started
    loc = location(out)
    parts = {i.base_name: 2 for i in listing(loc, loc.path("run_id=bench"))
             if i.base_name.endswith(".parquet")}
    sink.write_meta(RunMeta("bench", started_at="x", finished_at="y", parts=parts,
                            expected_pairs=2 * n))
    size = sum(i.size or 0 for i in listing(loc, loc.path("run_id=bench")))
    started = time.perf_counter()
    run = read_run(out, "bench")
    read_s = time.perf_counter() - started
    assert not run.problems and len(run.final_rows) == 2 * n, run.problems[:3]
    started = time.perf_counter()
    compact_run(out, "bench")
    compact_s = time.perf_counter() - started
    started = time.perf_counter()
    read_run(out, "bench")
    reread_s = time.perf_counter() - started
    return {"files/s": n / write_s, "ms/file": 1000 * write_s / n, "bytes/file": size / n,
            "read_s": read_s, "compact_s": compact_s, "read_after_compact_s": reread_s}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    results = {"local disk": measure(tempfile.mkdtemp(prefix="sinkbench"), n)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                               "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                          AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                          AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
        time.sleep(2)
        import boto3
        boto3.client("s3").create_bucket(Bucket="bench")
        results["S3 (moto, loopback)"] = measure("s3://bench/results", n)
    finally:
        server.terminate()
    print(f"{n} part files of 2 rows each")
    print(f"{'store':<22} {'files/s':>8} {'ms/file':>8} {'B/file':>7} {'read run':>9} "
          f"{'compact':>8} {'read after':>10}")
    for store, r in results.items():
        print(f"{store:<22} {r['files/s']:>8.0f} {r['ms/file']:>8.1f} {r['bytes/file']:>7.0f} "
              f"{r['read_s']:>8.2f}s {r['compact_s']:>7.2f}s {r['read_after_compact_s']:>9.2f}s")


if __name__ == "__main__":
    main()
