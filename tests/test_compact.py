"""exportsweep compact: one file per run, not a row changed, safe beside running sweeps."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from exporter.record import Record
from exporter.schema import RowContext, row
from orchestrator.results.compact import CompactError, compact_run, row_hashes
from orchestrator.results.layout import RUN_META, RunMeta
from orchestrator.results.runs import read_run
from orchestrator.results.sink import ResultSink

BIN = Path(sys.executable).parent


def _rows(run_id: str, names: list[str]) -> list[dict]:
    ctx = RowContext(run_id=run_id)
    out = []
    for name in names:
        r = Record(entry=name, family="manual", mode="strict", device="cpu")
        r.status, r.total_s, r.message = "FAIL", 1.5, f"boom <{name}>"
        out.append(row(r, ctx))
    return out


def _finished_run(out: Path, run_id: str, files: int, per_file: int = 3) -> ResultSink:
    sink = ResultSink(str(out), run_id)
    for f in range(files):
        sink.write(_rows(run_id, [f"m{f}-{i}" for i in range(per_file)]))
    parts = {p.name: per_file for p in Path(sink.dir).glob("part-*.parquet")}
    sink.write_meta(RunMeta(run_id, started_at="2026-11-26T00:00:00+00:00",
                            finished_at="2026-11-26T01:00:00+00:00",
                            expected_pairs=files * per_file, parts=parts))
    return sink


def _dataset_hashes(folder: Path) -> Counter:
    return Counter(row_hashes(ds.dataset(str(folder), format="parquet").to_table()))


def test_compaction_merges_every_file_without_changing_a_row(tmp_path):
    out = tmp_path / "results"
    _finished_run(out, "r1", files=12)
    folder = out / "run_id=r1"
    before = _dataset_hashes(folder)
    result = compact_run(str(out), "r1")
    assert (result.files_before, result.rows) == (12, 36)
    assert [p.name for p in folder.glob("*.parquet")] == [result.output]
    assert _dataset_hashes(folder) == before
    run = read_run(str(out), "r1")
    assert run.problems == [] and len(run.rows) == 36
    meta = json.loads((folder / RUN_META).read_text())
    assert meta["parts"] == {result.output: 36} and meta["compacted"]["files"] == 12
    assert not list((out / "_compacting").glob("r1-*"))       # nothing staged is left
    again = compact_run(str(out), "r1")
    assert again.output is None and "nothing to do" in again.summary()


def test_readers_never_count_a_row_twice_while_old_files_linger(tmp_path):
    out = tmp_path / "results"
    _finished_run(out, "r1", files=3)
    folder = out / "run_id=r1"
    saved = {p.name: p.read_bytes() for p in folder.glob("part-*.parquet")}
    compact_run(str(out), "r1")
    for name, data in saved.items():      # the moment between publishing and deleting
        (folder / name).write_bytes(data)
    run = read_run(str(out), "r1")
    assert len(run.rows) == 9 and run.problems == []


def test_compaction_beside_a_sweep_writing_another_run(tmp_path):
    out = tmp_path / "results"
    _finished_run(out, "done", files=20)
    writer = ResultSink(str(out), "running")
    stop = threading.Event()

    def write_forever() -> None:
        i = 0
        while not stop.is_set():
            writer.write(_rows("running", [f"w{i}"]))
            i += 1

    thread = threading.Thread(target=write_forever)
    thread.start()
    try:
        result = compact_run(str(out), "done")
    finally:
        stop.set()
        thread.join()
    assert result.rows == 60
    assert len(read_run(str(out), "done").rows) == 60
    running = read_run(str(out), "running")
    assert len(running.rows) == writer.rows_written > 0
    with pytest.raises(CompactError, match="not finished"):
        compact_run(str(out), "running")


def test_a_damaged_run_is_left_alone(tmp_path):
    out = tmp_path / "results"
    _finished_run(out, "r1", files=3)
    folder = out / "run_id=r1"
    victim = sorted(folder.glob("part-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    files = sorted(p.name for p in folder.glob("*.parquet"))
    with pytest.raises(CompactError, match="torn or unreadable"):
        compact_run(str(out), "r1")
    assert sorted(p.name for p in folder.glob("*.parquet")) == files


def test_cli_compacts_and_refuses_a_run_in_use(tmp_path):
    out = tmp_path / "results"
    _finished_run(out, "r1", files=4)
    lock = out / "_compacting" / "r1.lock"
    lock.parent.mkdir()
    with open(lock, "w") as held:                       # another compaction holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.run([str(BIN / "exportsweep"), "compact", str(out), "--run", "r1"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "another compaction of this run is running" in proc.stderr
    assert len(list((out / "run_id=r1").glob("part-*.parquet"))) == 4   # untouched
    proc = subprocess.run([str(BIN / "exportsweep"), "compact", str(out), "--run", "r1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 files -> 1" in proc.stdout and "12 rows unchanged (row hashes match)" in proc.stdout


def test_a_sweep_can_compact_itself_when_it_finishes(write_manifest, tmp_path):
    path = write_manifest("""
        version: 1
        entries:
          - {name: a, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}]}
          - {name: b, entrypoint: models/tiny.py:make_guard, inputs: [{shape: [2, 3]}]}
    """)
    out = tmp_path / "results"
    proc = subprocess.run([str(BIN / "exportsweep"), "run", str(path), "--out", str(out),
                           "--run-id", "c", "--in-process", "--compact"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = list((out / "run_id=c").glob("*.parquet"))
    assert len(files) == 1 and files[0].name.startswith("part-compacted-")
    run = read_run(str(out), "c")
    assert run.problems == [] and len(run.final_rows) == 4
    assert run.meta.compacted["files"] == 2


# -- killed at any instant ---------------------------------------------------------------------

class Killed(BaseException):
    """Stands for the process dying at a step: nothing after it runs."""


def _glob_hashes(out: Path) -> Counter:
    """What a plain DuckDB glob over the results sees."""
    import duckdb
    table = duckdb.sql(f"SELECT * FROM read_parquet('{out}/*/*.parquet', "
                       f"hive_partitioning = false)").fetch_arrow_table()
    return Counter(row_hashes(table))


def _exactly_once(out: Path, run_id: str, expected: Counter, glob_exact: bool = True) -> None:
    run = read_run(str(out), run_id)
    assert run.problems == [] and len(run.final_rows) == sum(expected.values())
    if glob_exact:
        pyarrow_view = ds.dataset(str(out), partitioning="hive").to_table()
        assert pyarrow_view.num_rows == sum(expected.values())
        hashes = _glob_hashes(out)
        assert sum(hashes.values()) == sum(expected.values()) and max(hashes.values()) == 1


def _steps(tmp_path: Path, metadata_protocol: bool, monkeypatch) -> list[str]:
    import orchestrator.results.compact as compact
    if metadata_protocol:
        monkeypatch.setattr(compact, "_exchange_supported", lambda root: False)
    seen: list[str] = []
    out = tmp_path / "probe"
    _finished_run(out, "r1", files=5)
    (out / "run_id=r1" / "_logs").mkdir()
    compact_run(str(out), "r1", on_step=seen.append)
    return seen


@pytest.mark.parametrize("protocol", ["exchange", "metadata"])
def test_a_compaction_killed_at_every_step_leaves_each_row_once(tmp_path, monkeypatch, protocol):
    steps = _steps(tmp_path, protocol == "metadata", monkeypatch)
    assert steps == (["staged", "exchanged", "moved back _logs", "cleaned"]
                     if protocol == "exchange" else ["published", "recorded", "cleaned"])
    for at in steps:
        out = tmp_path / f"kill-{at.replace(' ', '-')}"
        _finished_run(out, "r1", files=5)
        logs = out / "run_id=r1" / "_logs"
        logs.mkdir()
        (logs / "driver.jsonl").write_text("{}\n")
        expected = Counter(row_hashes(ds.dataset(str(out / "run_id=r1")).to_table()))

        def die(name: str, at: str = at) -> None:
            if name == at:
                raise Killed(name)

        with pytest.raises(Killed):
            compact_run(str(out), "r1", on_step=die)
        # Our readers always see each row once; so do glob readers, except between the
        # metadata protocol's publish and its deletes (documented for object stores).
        glob_exact = protocol == "exchange" or at == "cleaned"
        _exactly_once(out, "r1", expected, glob_exact)
        result = compact_run(str(out), "r1")          # the next compact finishes the job
        assert result.recovered >= (0 if at == "cleaned" else 1) or result.output
        _exactly_once(out, "r1", expected)
        assert len(list((out / "run_id=r1").glob("*.parquet"))) == 1
        assert (out / "run_id=r1" / "_logs" / "driver.jsonl").read_text() == "{}\n"
        assert not list((out / "_compacting").glob("r1-*"))


def test_compaction_sigkilled_at_random_moments(tmp_path):
    """Real processes, real SIGKILL, at moments spread over a whole compaction."""
    import os
    import random
    import signal
    import time

    rng = random.Random(20261202)
    template = tmp_path / "template"
    _finished_run(template, "r1", files=40)
    expected = Counter(row_hashes(ds.dataset(str(template / "run_id=r1")).to_table()))
    started = time.monotonic()
    subprocess.run([str(BIN / "exportsweep"), "compact", str(template), "--run", "r1"],
                   check=True, capture_output=True, timeout=120)
    whole = time.monotonic() - started
    for trial in range(8):
        out = tmp_path / f"t{trial}"
        _finished_run(out, "r1", files=40)
        proc = subprocess.Popen([str(BIN / "exportsweep"), "compact", str(out), "--run", "r1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3 * whole, 1.1 * whole))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _exactly_once(out, "r1", expected)
        again = subprocess.run([str(BIN / "exportsweep"), "compact", str(out), "--run", "r1"],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        _exactly_once(out, "r1", expected)
        assert len(list((out / "run_id=r1").glob("*.parquet"))) == 1
