"""Reading runs back: run aliases, and damaged runs reported rather than read short."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.errors import UsageError
from exporter.manifest import load_manifest
from orchestrator.execute.config import SweepConfig
from orchestrator.execute.sweep import run_sweep
from orchestrator.results.layout import RUN_META_VERSION, RunMeta, parse_run_meta
from orchestrator.results.runs import list_runs, previous_run, read_run, resolve_run

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """Two real in-process sweeps of two tiny models, one file per entry (2 rows each)."""
    folder = tmp_path_factory.mktemp("runs")
    (folder / "models").symlink_to(Path(__file__).parent / "models", target_is_directory=True)
    manifest = folder / "m.yaml"
    manifest.write_text("""
version: 1
entries:
  - {name: mlp, entrypoint: models/tiny.py:make_mlp, inputs: [{shape: [2, 4]}]}
  - {name: guard, entrypoint: models/tiny.py:make_guard, inputs: [{shape: [2, 3]}]}
""")
    out = folder / "results"
    for run_id in ("night-1", "night-2"):
        run_sweep(load_manifest(str(manifest)), SweepConfig(out=str(out), run_id=run_id),
                  out=open("/dev/null", "w"))
    return out


@pytest.fixture
def results(two_runs: Path, tmp_path: Path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(two_runs, tmp_path / "results", symlinks=True))


def _parts(results: Path, run_id: str) -> list[Path]:
    return sorted((results / f"run_id={run_id}").glob("part-*.parquet"))


def test_a_complete_run_reads_whole_and_lists_its_files(two_runs):
    run = read_run(str(two_runs), "night-2")
    assert run.problems == []
    assert {(r["entry"], r["mode"]) for r in run.final_rows} == {
        ("mlp", "strict"), ("mlp", "non-strict"), ("guard", "strict"), ("guard", "non-strict")}
    assert run.meta.expected_pairs == 4
    assert sorted(run.meta.parts) == [p.name for p in _parts(two_runs, "night-2")]
    assert sum(run.meta.parts.values()) == 4


def test_aliases_name_the_latest_and_previous_runs(two_runs):
    assert [r.run_id for r in list_runs(str(two_runs))] == ["night-1", "night-2"]
    assert resolve_run(str(two_runs), "latest") == "night-2"
    assert resolve_run(str(two_runs), "previous") == "night-1"
    assert previous_run(str(two_runs), "night-2") == "night-1"
    assert previous_run(str(two_runs), "night-1") is None
    with pytest.raises(UsageError, match=r"no run 'night-3' \(runs there: night-1, night-2\)"):
        resolve_run(str(two_runs), "night-3")


def test_a_torn_file_is_reported_and_its_rows_not_counted(results):
    part = _parts(results, "night-2")[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])           # a copy that stopped half-way
    run = read_run(str(results), "night-2")
    assert any(p.startswith(f"{part.name}: torn or unreadable") for p in run.problems)
    assert any(p.startswith("2 of 4 (entry, mode) pairs have no result") for p in run.problems)
    assert len(run.final_rows) == 2


def test_a_missing_file_is_reported(results):
    part = _parts(results, "night-2")[1]
    part.unlink()
    run = read_run(str(results), "night-2")
    assert f"{part.name}: listed in _run.json with 2 rows but missing" in run.problems
    assert len(run.final_rows) == 2


def test_an_interrupted_run_says_how_to_finish_it(results):
    meta_path = results / "run_id=night-2" / "_run.json"
    meta = json.loads(meta_path.read_text())
    meta.update(finished_at=None, parts=None)           # the driver died before the end
    meta_path.write_text(json.dumps(meta))
    _parts(results, "night-2")[0].unlink()
    problems = read_run(str(results), "night-2").problems
    assert problems == [f"2 of 4 (entry, mode) pairs have no result: the run is not finished "
                        f"(running or interrupted); `exportsweep run MANIFEST --out {results} "
                        f"--resume night-2` completes it"]


def test_commands_warn_about_damage_and_diff_can_gate_on_it(results, tmp_path):
    _parts(results, "night-2")[0].write_bytes(b"PAR1 not really")
    junit = subprocess.run([str(BIN / "exportsweep"), "junit", str(results), "-o",
                            str(tmp_path / "j.xml")], capture_output=True, text=True, timeout=120)
    assert junit.returncode == 0 and "2 test cases of run night-2" in junit.stdout
    assert "warning: run night-2: part-" in junit.stderr and "torn or unreadable" in junit.stderr
    diff = subprocess.run([str(BIN / "exportsweep"), "diff", str(results), "previous", "latest",
                           "--format", "json", "--fail-on", "incomplete"],
                          capture_output=True, text=True, timeout=120)
    assert diff.returncode == 1, diff.stderr
    report = json.loads(diff.stdout)
    assert report["base_run"] == "night-1" and report["new_run"] == "night-2"
    assert any("torn or unreadable" in p for p in report["problems"])
    assert report["counts"]["MISSING"] == 2          # the torn file's pairs look absent


def test_an_unknown_run_is_bad_input(two_runs):
    proc = subprocess.run([str(BIN / "exportsweep"), "junit", str(two_runs), "--run", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no run 'nope' (runs there: night-1, night-2)" in proc.stderr


def test_the_first_night_passes_a_diff_against_previous(results):
    shutil.rmtree(results / "run_id=night-1")
    proc = subprocess.run([str(BIN / "exportsweep"), "diff", str(results), "previous", "latest",
                           "--fail-on", "regression,missing"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "night-2 is the first run" in proc.stdout
    named = subprocess.run([str(BIN / "exportsweep"), "diff", str(results), "night-0", "latest"],
                           capture_output=True, text=True, timeout=120)
    assert named.returncode == 2 and "no run 'night-0'" in named.stderr


# -- the run record (results/layout.py) -------------------------------------------------------

def test_run_meta_round_trips_and_keeps_what_a_newer_writer_added():
    meta = RunMeta("r1", started_at="2026-12-01T00:00:00+00:00", expected_pairs=4,
                   parts={"part-00000-abcd.parquet": 4}, extra={"future_field": [1, 2]})
    data = json.loads(meta.dumps())
    assert data["meta_version"] == RUN_META_VERSION and data["future_field"] == [1, 2]
    again, problems = parse_run_meta(meta.dumps().encode(), "r1")
    assert problems == [] and again == meta


def test_run_meta_reports_fields_of_the_wrong_type_and_ignores_them():
    data = {"run_id": "r1", "expected_pairs": "4", "finished_at": 17, "parts": [1],
            "rows": True, "wall_s": 3, "only": None}
    meta, problems = parse_run_meta(json.dumps(data).encode(), "r1")
    assert meta.expected_pairs is None and meta.finished_at is None and meta.parts is None
    assert meta.rows is None and meta.wall_s == 3 and meta.only == []
    assert sorted(p.split("'")[1] for p in problems) == ["expected_pairs", "finished_at",
                                                         "parts", "rows"]


def test_an_unreadable_run_record_is_a_problem_not_an_exception():
    for data in (b"{not json", b"[1, 2]", b"\xff\xfe", b"null"):
        meta, problems = parse_run_meta(data, "r1")
        assert meta is None and problems == ["_run.json is unreadable"]
    assert parse_run_meta(None, "r1") == (None, [])
