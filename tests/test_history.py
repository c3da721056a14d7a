"""History for the scheduler: durations read back from real runs, longest first on the next run."""

from __future__ import annotations

from pathlib import Path

from exporter.manifest import load_manifest
from orchestrator.execute.config import SweepConfig
from orchestrator.execute.sweep import run_sweep
from orchestrator.results.history import entry_history
from orchestrator.results.runs import read_run

MANIFEST = """
version: 1
defaults: {modes: [non-strict]}
entries:
  - {name: quick, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}]}
  - {name: slow, entrypoint: models/faults.py:make_slow, kwargs: {seconds: 1.5},
     inputs: [{shape: [2, 4]}]}
  - {name: quick2, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}]}
"""


def _started_order(out: Path, run_id: str) -> list[str]:
    rows = read_run(str(out), run_id).final_rows
    return [r["entry"] for r in sorted(rows, key=lambda r: r["started_at"])]


def test_the_next_run_starts_the_slowest_entry_first(write_manifest, tmp_path):
    manifest = load_manifest(write_manifest(MANIFEST))
    out = tmp_path / "results"
    devnull = open("/dev/null", "w")
    run_sweep(manifest, SweepConfig(out=str(out), run_id="n1"), out=devnull)
    assert _started_order(out, "n1") == ["quick", "slow", "quick2"]     # nothing known yet
    history = entry_history(str(out))
    assert history.runs == ("n1",) and history.problems == ()
    assert set(history.seconds) == {"quick", "slow", "quick2"}
    assert min(history.seconds.values()) > 0
    # Normally "slow"; on a loaded machine the first entry's warm-up may outlast it: the
    # order follows what was measured, whatever it was.
    longest = max(history.seconds, key=history.seconds.__getitem__)
    run_sweep(manifest, SweepConfig(out=str(out), run_id="n2"), out=devnull)
    assert _started_order(out, "n2")[0] == longest
    run_sweep(manifest, SweepConfig(out=str(out), run_id="n3", schedule="manifest"),
              out=devnull)
    assert _started_order(out, "n3") == ["quick", "slow", "quick2"]
    # the newest run that ran an entry gives its duration; a run can be left out
    assert entry_history(str(out)).runs == ("n3", "n2", "n1")
    assert entry_history(str(out), exclude=("n3",)).runs == ("n2", "n1")
    # Runs of one entry each (a benchmark's, a repro's) must not hide the others' history:
    # further back it looks, until every wanted entry is known.
    for i in range(4):
        run_sweep(manifest, SweepConfig(out=str(out), run_id=f"q{i}", only=("quick",)),
                  out=devnull)
    wanted = {"quick", "slow", "quick2"}
    assert set(entry_history(str(out)).seconds) == {"quick"}          # the last 3: quick only
    deep = entry_history(str(out), wanted=wanted)
    assert deep.runs == ("q3", "q2", "q1", "q0", "n3") and set(deep.seconds) == wanted
    assert entry_history(str(out), wanted=wanted, max_runs=4).runs == ("q3", "q2", "q1", "q0")


def test_damaged_history_orders_nothing_and_stops_nothing(tmp_path):
    out = tmp_path / "results"
    assert entry_history(str(out)).seconds == {}                       # no folder at all
    run = out / "run_id=broken"
    run.mkdir(parents=True)
    (run / "part-00000.parquet").write_bytes(b"PAR1 torn")
    (run / "_run.json").write_text("{not json")
    history = entry_history(str(out))
    assert history.seconds == {}
