"""The Ray supervisor with real Ray and real processes: faults, resume, pools, multi-node.

Each test runs ``exportsweep run`` as a user does (embedded Ray, started and
stopped by the CLI) or against a ``ray.cluster_utils.Cluster`` it starts itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.execute.scheduling import (BatchPolicy, RecyclePolicy, RetryPolicy, WorkItem,
                                             WorkQueue, can_run)
from orchestrator.results.runs import read_final_rows

from conftest import REPO

BIN = Path(sys.executable).parent
ENTRY = """
  - name: {name}
    entrypoint: models/{file}.py:{factory}
    inputs: [{{shape: [2, 3]}}]
    modes: {modes}
"""


def _manifest(write_manifest, *entries: tuple[str, str, str], modes: str = "[non-strict]",
              extra: str = "") -> Path:
    body = "".join(ENTRY.format(name=n, file=f, factory=k, modes=modes) for n, f, k in entries)
    return write_manifest("version: 1\ndefaults: {timeout_s: 60}\nentries:" + body + extra)


def _run(*args: str, timeout: int = 600, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "exportsweep"), "run", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})})


def _rows(out: Path) -> list[dict]:
    import pyarrow.dataset as ds
    return ds.dataset(str(out), partitioning="hive").to_table().to_pylist()


def _killed_after_files(path: Path, out: Path, files: int, within_s: float) -> Path:
    """Run ``path`` as run ``killed`` on two workers; SIGKILL the driver and its embedded Ray
    once the run holds ``files`` result files (or after ``within_s``). Returns its folder."""
    proc = subprocess.Popen([str(BIN / "exportsweep"), "run", str(path), "--out", str(out),
                             "--run-id", "killed", "--cpu-workers", "2"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run_dir = out / "run_id=killed"
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if run_dir.exists() and len(list(run_dir.glob("part-*.parquet"))) >= files:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)          # mid-run
    proc.wait()
    return run_dir


# -- policy, no Ray ----------------------------------------------------------------------------

def test_routing_and_pull_dispatch(write_manifest):
    from exporter.manifest import load_manifest
    m = load_manifest(write_manifest("version: 1\nentries:" + "".join(
        ENTRY.format(name=d, file="tiny", factory="make_mlp", modes="[strict]") +
        f"    device: {d}\n" for d in ("cpu", "cuda", "any"))))
    assert [can_run(p, d) for p in ("cpu", "gpu") for d in ("cpu", "cuda", "any")] == \
        [True, False, True, False, True, True]
    queue = WorkQueue(WorkItem(e, e.modes) for e in m.entries)
    assert queue.take("gpu").entry.name == "cuda"       # first item the GPU worker can run
    assert queue.take("cpu").entry.name == "cpu"
    assert queue.take("gpu").entry.name == "any"
    assert queue.take("cpu") is None and len(queue) == 0
    queue = WorkQueue(WorkItem(e, e.modes) for e in m.entries)
    assert [i.entry.name for i in queue.unrunnable({("cpu", "current")})] == ["cuda"]


def test_retry_and_recycle_policies():
    retry = RetryPolicy(max_attempts=2)
    assert retry.should_retry("WORKER_CRASH", 1) and retry.should_retry("OOM", 1)
    assert not retry.should_retry("WORKER_CRASH", 2) and not retry.should_retry("TIMEOUT", 1)
    assert RecyclePolicy(after=3).should_recycle(3, None)
    assert not RecyclePolicy(after=3).should_recycle(2, 10_000)
    assert RecyclePolicy(max_rss_mb=100).should_recycle(1, 150.0)


# -- real Ray ----------------------------------------------------------------------------------

def test_ray_sweep_end_to_end(write_manifest, tmp_path):
    path = _manifest(write_manifest, ("mlp", "tiny", "make_mlp"), ("guard", "tiny", "make_guard"),
                     modes="[non-strict, strict]")
    path.write_text(path.read_text().replace("inputs: [{shape: [2, 3]}]\n    modes: [non-strict, "
                                             "strict]\n", "inputs: [{shape: [2, 4]}]\n    modes: "
                                             "[non-strict, strict]\n", 1))
    # A model whose export fails on every other build: with --flaky-reruns its rerun (a fresh
    # process started by the Ray worker) flips the outcome; --localize runs in the worker too.
    counter = tmp_path / "count"
    path.write_text(path.read_text() + f"""
  - name: flips
    entrypoint: models/tiny.py:make_flaky
    kwargs: {{counter: {counter}}}
    inputs: [{{shape: [2, 4]}}]
    modes: [non-strict, strict]
""")
    out = tmp_path / "out"
    proc = _run(str(path), "--out", str(out), "--run-id", "e2e", "--cpu-workers", "2",
                "--flaky-reruns", "1", "--localize")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert sorted((r["entry"], r["mode"], r["status"]) for r in rows) == [
        ("flips", "non-strict", "FAIL"), ("flips", "strict", "FAIL"),
        ("guard", "non-strict", "FAIL"), ("guard", "strict", "FAIL"),
        ("mlp", "non-strict", "PASS"), ("mlp", "strict", "PASS")]
    by = {(r["entry"], r["mode"]): r for r in rows}
    for mode in ("non-strict", "strict"):
        assert by[("flips", mode)]["flaky"] is True and by[("flips", mode)]["reruns"] == 1
        assert by[("flips", mode)]["flaky_outcomes"] == ["FAIL DATA_DEPENDENT_GUARD @export",
                                                         "PASS"]
        assert by[("guard", mode)]["flaky"] is False and by[("mlp", mode)]["flaky"] is False
        assert by[("guard", mode)]["localized_paths"] == [""]     # the model itself, no children
        assert by[("guard", mode)]["localize_complete"] is True
        assert by[("mlp", mode)]["localized_paths"] == [] and by[("mlp", mode)]["localize_s"] is None
    assert counter.read_text() == "2"
    assert all(r["pool"] == "cpu" and r["worker_id"].startswith("cpu-") and r["node_id"]
               and r["final"] for r in rows)
    meta = json.loads((out / "run_id=e2e" / "_run.json").read_text())
    assert meta["executor"] == "ray" and meta["cluster"]["cpu_workers"] == 2
    # the default memory ceiling is sized from the node: its workers' share, per worker
    physical_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert 256 < meta["cluster"]["max_worker_rss_mb"] < 0.6 * physical_mb
    logs = list((out / "run_id=e2e" / "_logs").glob("worker-*.jsonl"))
    assert logs, "workers log through the setup hook"
    events = [json.loads(line) for f in logs for line in f.read_text().splitlines()]
    finished = [e for e in events if e["event"] == "entry finished"]
    assert {(e["entry"], e["mode"]) for e in finished} == {(r["entry"], r["mode"]) for r in rows}
    assert all(e["run"] == "e2e" and e["worker"].startswith("cpu-") for e in finished)
    assert "Traceback" not in proc.stderr and "(raylet)" not in proc.stdout


def test_faults_are_rows_and_the_sweep_goes_on(write_manifest, tmp_path):
    path = _manifest(
        write_manifest,
        ("segfault", "faults", "make_segfault"), ("exit", "faults", "make_exit"),
        ("sigkill", "faults", "make_sigkill"),
        ("gil_loop", "faults", "make_gil_loop"), ("sleep_hang", "faults", "make_sleep_hang"),
        ("unprintable", "faults", "make_unprintable_error"), ("after", "tiny", "make_guard"))
    out = tmp_path / "out"
    started = time.monotonic()
    proc = _run(str(path), "--out", str(out), "--run-id", "faults", "--timeout", "8",
                "--cpu-workers", "2")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    final = {r["entry"]: r for r in rows if r["final"]}
    assert set(final) == {"segfault", "exit", "sigkill", "gil_loop", "sleep_hang", "unprintable",
                          "after"}
    for name in ("segfault", "exit", "sigkill"):
        attempts = sorted((r["attempt"], r["final"]) for r in rows if r["entry"] == name)
        assert attempts == [(1, False), (2, True)], (name, attempts)     # retried once, fresh actor
        assert all(r["category"] == "WORKER_CRASH" and r["status"] == "ERROR"
                   for r in rows if r["entry"] == name)
        workers = {r["worker_id"] for r in rows if r["entry"] == name}
        assert len(workers) == 2
    for name in ("gil_loop", "sleep_hang"):
        r = final[name]
        assert r["category"] == "TIMEOUT" and r["status"] == "ERROR" and r["attempt"] == 1
        assert "no result after" in r["message"] and r["total_s"] >= 8
    assert final["unprintable"]["category"] == "EAGER_ERROR"
    assert "cannot be read" in final["unprintable"]["message"]
    assert final["after"]["category"] == "DATA_DEPENDENT_GUARD"
    assert time.monotonic() - started < 240
    # The resume view agrees: one final row per pair.
    assert len(read_final_rows(str(out), "faults")) == 7
    assert len(rows) == 10          # 7 entries, 3 of them crashed once and were retried


def test_batches_are_only_for_cheap_entries_and_never_starve_the_tail(write_manifest):
    from dataclasses import replace

    from exporter.manifest import load_manifest
    policy = BatchPolicy()
    assert policy.size(queued=10_000, workers=2) == 1            # nothing known: one at a time
    policy.observe(entries=1, seconds=12.0)
    assert policy.size(queued=10_000, workers=2) == 1            # real models: one at a time
    policy = BatchPolicy()
    policy.observe(entries=100, seconds=0.01)                    # 0.1 ms each
    assert policy.size(queued=10_000, workers=2) == policy.max_size
    assert policy.size(queued=40, workers=2) == 10               # a fair share of the tail
    policy.observe(entries=100, seconds=1.0)                     # slower now: 10 ms each
    assert 10 < policy.size(queued=10_000, workers=2) < policy.max_size
    m = load_manifest(write_manifest("version: 1\nentries:" + "".join(
        ENTRY.format(name=f"e{i}", file="tiny", factory="make_mlp", modes="[strict]")
        for i in range(6))))
    items = [WorkItem(e, e.modes) for e in m.entries]
    items[3] = replace(items[3], solo=True)
    queue = WorkQueue(items)
    assert [i.entry.name for i in queue.take_batch("cpu", 5)] == ["e0", "e1", "e2", "e4", "e5"]
    assert [i.entry.name for i in queue.take_batch("cpu", 5)] == ["e3"]    # alone
    assert queue.take_batch("cpu", 5) == []


def test_a_batch_whose_worker_dies_is_rerun_entry_by_entry(write_manifest, tmp_path):
    """Cheap entries travel in batches; a crash inside one splits it: the crashing entry
    gets its own WORKER_CRASH rows, every other entry exactly one PASS row."""
    # include, then entries, then families: the crashing entry sits between 200 noops
    path = write_manifest("""
        version: 1
        include: [first.yaml]
        defaults: {modes: [non-strict], timeout_s: 60}
        entries:
          - {name: crash, entrypoint: models/faults.py:make_segfault, inputs: [{shape: [2, 3]}]}
        families:
          - {source: noop, count: 400, include: ["0002*", "0003*"]}
    """)
    (path.parent / "first.yaml").write_text(
        'version: 1\nfamilies:\n  - {source: noop, count: 400, include: ["0000*", "0001*"]}\n')
    out = tmp_path / "out"
    proc = _run(str(path), "--out", str(out), "--run-id", "batched", "--cpu-workers", "2",
                "--schedule", "manifest")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    finals = [r for r in rows if r["final"]]
    assert len(finals) == 401 and len({r["entry"] for r in finals}) == 401     # exactly once
    crash = [r for r in rows if r["entry"] == "crash"]
    assert [r["category"] for r in crash] == ["WORKER_CRASH", "WORKER_CRASH"]  # retried alone
    assert all(r["status"] == "PASS" for r in finals if r["entry"] != "crash")
    files = list((out / "run_id=batched").glob("part-*.parquet"))
    assert len(files) < 200, len(files)                  # batches: one file per call
    events = [json.loads(line) for line in
              (out / "run_id=batched" / "_logs" / "driver.jsonl").read_text().splitlines()]
    assert any(e["event"] == "batch split" for e in events)


def test_the_driver_of_a_ray_sweep_never_imports_torch(write_manifest, tmp_path):
    """torch is half a gigabyte of RSS: the driver holds the queue and the rows, never a
    model, so neither it nor anything it unpickles (rows) may import torch."""
    path = write_manifest("version: 1\ndefaults: {modes: [non-strict]}\n"
                          "families:\n  - {source: noop, count: 40}\n")
    code = ("import sys\nfrom orchestrator.cli import main\n"
            f"code = main(['run', {str(path)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
            "assert code == 0, code\n"
            "assert 'torch' not in sys.modules, 'the driver imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_rows(tmp_path / "out")) == 40


def test_driver_sigkill_then_resume_completes_without_duplicates(write_manifest, tmp_path):
    names = [f"slow{i}" for i in range(8)]
    path = _manifest(write_manifest, *[(n, "faults", "make_slow") for n in names])
    out = tmp_path / "out"
    run_dir = _killed_after_files(path, out, files=2, within_s=180)
    before = {(r["entry"], r["mode"]) for r in _rows(out)}
    assert 2 <= len(before) < len(names), before
    resumed = _run(str(path), "--out", str(out), "--resume", "killed", "--cpu-workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(out)
    finals = [(r["entry"], r["mode"]) for r in rows if r["final"]]
    assert sorted(finals) == sorted((n, "non-strict") for n in names)     # complete, no dupes
    assert all(r["status"] == "PASS" for r in rows)
    meta = json.loads((run_dir / "_run.json").read_text())
    assert meta["resumed_from_rows"] == len(before) and meta["rows"] == len(names)


@pytest.mark.slow
def test_driver_sigkill_amid_batches_then_resume_is_exactly_once(write_manifest, tmp_path):
    """Batched calls write one file per call: a kill loses the batches in flight, never
    half a batch, and --resume runs exactly what has no row."""
    path = write_manifest("version: 1\ndefaults: {modes: [non-strict]}\n"
                          "families:\n  - {source: noop, count: 4000, sleep_s: 0.002}\n")
    out = tmp_path / "out"
    _killed_after_files(path, out, files=6, within_s=240)
    before = {(r["entry"], r["mode"]) for r in _rows(out)}
    assert 6 <= len(before) < 4000, len(before)
    resumed = _run(str(path), "--out", str(out), "--resume", "killed", "--cpu-workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    finals = [r["entry"] for r in _rows(out) if r["final"]]
    assert len(finals) == len(set(finals)) == 4000


@pytest.mark.parametrize("limit", [
    pytest.param(("--recycle-after", "1"), id="after-one-entry"),
    # the same replacement path, triggered by memory instead (slow: the default run has one)
    pytest.param(("--max-worker-rss-mb", "1"), id="above-a-memory-ceiling",
                 marks=pytest.mark.slow)])
def test_workers_are_recycled_without_failing_entries(write_manifest, tmp_path, limit):
    path = _manifest(write_manifest, *[(f"g{i}", "tiny", "make_guard") for i in range(3)])
    out = tmp_path / "out"
    proc = _run(str(path), "--out", str(out), "--run-id", "recycle", "--cpu-workers", "1",
                *limit)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert len(rows) == 3 and all(r["category"] == "DATA_DEPENDENT_GUARD" and r["attempt"] == 1
                                  for r in rows)
    assert len({r["worker_id"] for r in rows}) == 3      # a fresh worker for every entry
    events = [json.loads(line) for line in
              (out / "run_id=recycle" / "_logs" / "driver.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "worker replaced" and "recycled" in e["reason"] for e in events) == 3


def test_cuda_entries_without_gpus_are_skipped_not_failed(write_manifest, tmp_path):
    path = _manifest(write_manifest, ("mlp", "tiny", "make_guard"),
                     extra="    device: cuda\n")
    out = tmp_path / "out"
    proc = _run(str(path), "--out", str(out), "--run-id", "nogpu", "--cpu-workers", "1")
    assert proc.returncode == 0, proc.stderr
    (r,) = _rows(out)
    assert r["status"] == "SKIP" and "GPU worker" in r["skip_reason"]


@pytest.fixture
def gpu_cluster():
    """A head node with 2 CPUs and a second node with 1 CPU and a fake GPU."""
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 150 << 20})
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=100 << 20)
    cluster.wait_for_nodes()
    try:
        yield cluster, gpu_node
    finally:
        cluster.shutdown()


def test_cpu_and_gpu_pools_on_a_multi_node_cluster(write_manifest, tmp_path, gpu_cluster):
    cluster, _ = gpu_cluster
    entries = [(f"cpu{i}", "tiny", "make_guard") for i in range(2)]
    path = write_manifest("version: 1\ndefaults: {timeout_s: 60}\nentries:" + "".join(
        ENTRY.format(name=n, file=f, factory=k, modes="[non-strict]") for n, f, k in entries) +
        "".join(ENTRY.format(name=f"gpu{i}", file="tiny", factory="make_guard",
                             modes="[non-strict]") + "    device: cuda\n" for i in range(2)))
    out = tmp_path / "out"
    proc = _run(str(path), "--out", str(out), "--run-id", "multi", "--address", cluster.address,
                "--cpu-workers", "1", "--gpu-workers", "1")
    assert proc.returncode == 0, proc.stderr
    rows = {r["entry"]: r for r in _rows(out)}
    for name in ("gpu0", "gpu1"):
        r = rows[name]
        assert r["pool"] == "gpu" and r["requested_device"] == "cuda"
        assert r["device"] == "cpu"          # the fake GPU has no CUDA: ran on CPU, flagged
        assert r["category"] == "DATA_DEPENDENT_GUARD"
    assert all(rows[n]["pool"] == "cpu" for n in ("cpu0", "cpu1"))
    assert len({r["node_id"] for r in rows.values()}) == 2        # rows came from both nodes
    import ray
    ray.init(address=cluster.address)    # the CLI joined and left; the cluster still runs
    try:
        assert sum(n["Alive"] for n in ray.nodes()) == 2
    finally:
        ray.shutdown()


def test_node_loss_reschedules_in_flight_entries(write_manifest, tmp_path, gpu_cluster):
    cluster, gpu_node = gpu_cluster
    path = _manifest(write_manifest, *[(f"slow{i}", "faults", "make_slow") for i in range(4)],
                     extra="")
    text = path.read_text().replace("make_slow\n", "make_slow\n    device: any\n    kwargs: "
                                                   "{seconds: 6}\n")
    path.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "exportsweep"), "run", str(path), "--out", str(out),
                             "--run-id", "lost", "--address", cluster.address, "--cpu-workers",
                             "1", "--gpu-workers", "1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(15)             # workers warm up and take their first entries
    cluster.remove_node(gpu_node)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = _rows(out)
    finals = sorted(r["entry"] for r in rows if r["final"])
    assert finals == [f"slow{i}" for i in range(4)]
    assert all(r["status"] == "PASS" for r in rows if r["final"])


def test_gpu_work_is_skipped_when_the_last_gpu_node_is_lost(write_manifest, tmp_path,
                                                            gpu_cluster):
    cluster, gpu_node = gpu_cluster
    path = _manifest(write_manifest, *[(f"gpu{i}", "faults", "make_slow") for i in range(3)],
                     ("cpu0", "tiny", "make_guard"))
    text = path.read_text()
    for i in range(3):
        text = text.replace(f"name: gpu{i}\n    entrypoint: models/faults.py:make_slow\n",
                            f"name: gpu{i}\n    entrypoint: models/faults.py:make_slow\n"
                            f"    device: cuda\n    kwargs: {{seconds: 8}}\n")
    path.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "exportsweep"), "run", str(path), "--out", str(out),
                             "--run-id", "nogpu", "--address", cluster.address, "--cpu-workers",
                             "1", "--gpu-workers", "1", "--worker-start-timeout", "15"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)
    cluster.remove_node(gpu_node)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = {r["entry"]: r for r in _rows(out) if r["final"]}
    assert sorted(rows) == ["cpu0", "gpu0", "gpu1", "gpu2"]      # nothing lost, nothing hangs
    assert rows["cpu0"]["category"] == "DATA_DEPENDENT_GUARD"
    skipped = [r for n, r in rows.items() if n.startswith("gpu") and r["status"] == "SKIP"]
    assert skipped and all("none could start" in r["skip_reason"] for r in skipped)


@pytest.mark.slow
def test_memory_monitor_kill_is_an_oom_row(write_manifest, tmp_path):
    path = _manifest(write_manifest, ("hog", "faults", "make_memory_hog"),
                     ("after", "tiny", "make_guard"))
    out = tmp_path / "out"
    proc = _run(str(path), "--out", str(out), "--run-id", "oom", "--cpu-workers", "1",
                "--max-attempts", "1", env={"RAY_memory_usage_threshold": "0.4",
                                            "RAY_memory_monitor_refresh_ms": "100"})
    assert proc.returncode == 0, proc.stderr
    rows = {r["entry"]: r for r in _rows(out)}
    assert rows["hog"]["category"] == "OOM" and rows["hog"]["status"] == "ERROR"
    assert rows["after"]["category"] == "DATA_DEPENDENT_GUARD"


def test_unreachable_cluster_is_a_quick_orchestrator_failure(write_manifest, tmp_path):
    path = _manifest(write_manifest, ("g", "tiny", "make_guard"))
    started = time.monotonic()
    proc = _run(str(path), "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1",
                timeout=120)
    assert proc.returncode == 3
    assert "cannot reach Ray at 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60
