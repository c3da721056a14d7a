"""Chaos: a sweep on local Ray while workers, the driver and compactions are killed at random.

Rounds of ``exportsweep run`` / ``--resume`` over about 20 tiny entries; in each round a seeded
script SIGKILLs worker processes, the whole driver (with its embedded Ray), and compactions of
the run and of another finished run in the same folder, at random moments.  When the run
finally completes, every (entry, mode) has exactly one final row, no row appears twice to
pyarrow or to a DuckDB glob, and the run's provenance is the first round's.

Slow (minutes): ``make test-chaos`` runs it; ``EXPORTSWEEP_CHAOS_SEED=N make test-chaos``
replays a printed seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from orchestrator.results.compact import row_hashes
from orchestrator.results.runs import read_run

from conftest import REPO

BIN = Path(sys.executable).parent
ENTRIES = 20
MAX_ROUNDS = 8


def _manifest(folder: Path) -> Path:
    body = "".join(
        f"  - name: e{i:02d}\n    entrypoint: models/{'faults.py:make_slow' if i % 4 == 0 else 'tiny.py:make_mlp'}\n"
        f"    inputs: [{{shape: [2, {3 if i % 4 == 0 else 4}]}}]\n"
        + ("    kwargs: {seconds: 1.5}\n" if i % 4 == 0 else "")
        for i in range(ENTRIES))
    path = folder / "chaos.yaml"
    path.write_text("version: 1\ndefaults: {timeout_s: 120, modes: [non-strict, strict]}\n"
                    "entries:\n" + body)
    return path


def _workers() -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ExportWorker" in cmdline:
            pids.append(int(pid))
    return pids


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "exportsweep"), *args], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.mark.slow
def test_chaos_rounds_end_with_each_row_exactly_once(write_manifest, tmp_path):
    models = tmp_path / "models"
    if not models.exists():
        models.symlink_to(REPO / "tests" / "models", target_is_directory=True)
    manifest = _manifest(tmp_path)
    out = tmp_path / "results"
    seed = int(os.environ.get("EXPORTSWEEP_CHAOS_SEED", time.time_ns() % 10**9))
    print(f"chaos seed {seed} (replay: EXPORTSWEEP_CHAOS_SEED={seed} make test-chaos)")
    rng = random.Random(seed)
    # Another, finished run in the same folder: its compaction is killed too, and must neither
    # lose nor double its rows nor touch the chaos run.
    base = subprocess.run([str(BIN / "exportsweep"), "run", str(manifest), "--out", str(out),
                           "--run-id", "base", "--in-process", "--only", "e0[1-5]"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert base.returncode == 0, base.stderr
    base_rows = Counter(row_hashes(ds.dataset(str(out / "run_id=base")).to_table()))

    faults = Counter()
    finished = False
    for round_no in range(1, MAX_ROUNDS + 1):
        round_seed = rng.randrange(10**9)
        r = random.Random(round_seed)
        print(f"round {round_no}: seed {round_seed}")
        args = ["run", str(manifest), "--out", str(out), "--cpu-workers", "2",
                *(["--resume", "chaos"] if round_no > 1 else ["--run-id", "chaos"])]
        driver = _start(args)
        # The first two rounds always see faults; later ones may end by themselves.
        calm = round_no == MAX_ROUNDS or (round_no > 2 and r.random() < 0.3)
        deadline = time.monotonic() + 400
        kill_driver_at = time.monotonic() + r.uniform(15, 45)
        compaction = None
        while driver.poll() is None and time.monotonic() < deadline:
            time.sleep(r.uniform(0.5, 2.5))
            action = r.choice(["worker", "worker", "compact-base", "compact-run", "nothing"])
            if action == "worker" and not calm and (pids := _workers()):
                os.kill(r.choice(pids), signal.SIGKILL)
                faults["worker"] += 1
            elif action in ("compact-base", "compact-run") and compaction is None:
                compaction = _start(["compact", str(out), "--run",
                                     "base" if action == "compact-base" else "chaos"])
                time.sleep(r.uniform(0.0, 1.5))
                if compaction.poll() is None:
                    faults["compaction"] += 1
                _kill_group(compaction)
                compaction = None
            if not calm and time.monotonic() > kill_driver_at:
                _kill_group(driver)
                faults["driver"] += 1
                break
        if driver.poll() is None and time.monotonic() >= deadline:
            _kill_group(driver)
            pytest.fail(f"round {round_no} (seed {round_seed}) did not end in time")
        code = driver.wait()
        stderr = driver.stderr.read() if driver.stderr else ""
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-3000:]
        if code == 0:
            finished = True
            break
        assert code == -signal.SIGKILL, (round_no, code, stderr[-3000:])
    assert finished, f"the run did not finish in {MAX_ROUNDS} rounds (seed {seed})"
    print(f"faults injected: {dict(faults)}")

    # A last compaction of the finished run, killed at a random moment, then finished.
    killed = _start(["compact", str(out), "--run", "chaos"])
    time.sleep(rng.uniform(0.2, 2.0))
    _kill_group(killed)
    done = subprocess.run([str(BIN / "exportsweep"), "compact", str(out), "--run", "chaos"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    # Exactly once, for every reader.
    run = read_run(str(out), "chaos")
    assert run.problems == [], run.problems
    pairs = Counter((r["entry"], r["mode"]) for r in run.final_rows)
    assert len(pairs) == 2 * ENTRIES and set(pairs.values()) == {1}
    # A row's identity: the same attempt of the same pair, run by the same worker at one time.
    identity = ("run_id", "entry", "mode", "attempt", "worker_id", "started_at")
    table = ds.dataset(str(out), partitioning="hive").to_table(columns=list(identity[1:]))
    seen = Counter(zip(*(table.column(c).to_pylist() for c in identity[1:])))
    assert max(seen.values()) == 1, "a row is visible twice to pyarrow"
    import duckdb
    glob = f"read_parquet('{out}/*/*.parquet', hive_partitioning=false)"
    twice = duckdb.sql(f"SELECT {', '.join(identity)}, count(*) AS n FROM {glob} "
                       f"GROUP BY ALL HAVING n > 1").fetchall()
    assert twice == [], "a row is visible twice to a DuckDB glob"
    assert duckdb.sql(f"SELECT count(*) FROM {glob}").fetchall()[0][0] == table.num_rows
    finals = duckdb.sql(f"SELECT entry, mode, count(*) AS n FROM read_parquet('{out}/*/*.parquet',"
                        f" hive_partitioning=true) WHERE run_id = 'chaos' AND final "
                        f"GROUP BY entry, mode HAVING n > 1").fetchall()
    assert finals == []
    assert Counter(row_hashes(ds.dataset(str(out / "run_id=base")).to_table())) == base_rows
    # Provenance: the first round's, with every round in the history.
    meta = json.loads((out / "run_id=chaos" / "_run.json").read_text())
    assert meta["command_line"][-2:] == ["--run-id", "chaos"]
    assert len(meta["history"]) == round_no and meta["history"][0]["command_line"] == \
        meta["command_line"]
    assert meta["selection"]["only"] == [] and meta["rows"] == 2 * ENTRIES
