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


# -- damaged folders: every reader lists the damage, none raises -------------------------------

import io  # noqa: E402
import random  # noqa: E402
from contextlib import redirect_stderr, redirect_stdout  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from orchestrator.cli import main  # noqa: E402

from conftest import examples  # noqa: E402

DAMAGE = ("truncate", "delete", "duplicate", "retype", "null-entry", "bad-status", "garbage-meta",
          "no-meta", "meta-wrong-types", "stray-file", "stray-parquet", "empty-file")


def _damage(results: Path, run_id: str, kind: str, rng: random.Random) -> None:
    folder = results / f"run_id={run_id}"
    parts = _parts(results, run_id)
    victim = rng.choice(parts) if parts else None
    if kind == "truncate" and victim:
        data = victim.read_bytes()
        victim.write_bytes(data[: rng.randrange(len(data))])
    elif kind == "delete" and victim:
        victim.unlink()
    elif kind == "duplicate" and victim:
        shutil.copy(victim, folder / f"part-99999-{rng.randrange(1 << 30):08x}.parquet")
    elif kind in ("retype", "null-entry", "bad-status") and victim:
        try:
            table = pq.read_table(victim)
        except (pa.ArrowException, OSError):
            return                                    # already destroyed by earlier damage
        column = {"retype": rng.choice(table.column_names), "null-entry": "entry",
                  "bad-status": "status"}[kind]
        i = table.column_names.index(column)
        if kind == "retype":
            values = pa.array([rng.random() for _ in range(table.num_rows)]) \
                if table.schema.field(column).type != pa.float64() else \
                pa.array(["x"] * table.num_rows)
        elif kind == "null-entry":
            values = pa.nulls(table.num_rows, pa.string())
        else:
            values = pa.array(["EXPLODED\x1b[31m"] * table.num_rows)
        pq.write_table(table.set_column(i, column, values), victim)
    elif kind == "garbage-meta":
        (folder / "_run.json").write_bytes(bytes(rng.randrange(256) for _ in range(64)))
    elif kind == "no-meta":
        (folder / "_run.json").unlink(missing_ok=True)
    elif kind == "meta-wrong-types":
        try:
            meta = json.loads((folder / "_run.json").read_text())
        except (OSError, ValueError):
            return                                    # already gone or garbage
        if not isinstance(meta, dict):
            return
        meta.update(parts=["x"], expected_pairs="four", finished_at=7, history={})
        (folder / "_run.json").write_text(json.dumps(meta))
    elif kind == "stray-file":
        (folder / f"notes-{rng.randrange(100)}.txt").write_text("hello")
        (results / "README").write_text("not a run")
        (results / "run_id=bad id").mkdir(exist_ok=True)
    elif kind == "stray-parquet":
        (folder / f"zz-{rng.randrange(100)}.parquet").write_bytes(b"junk" * rng.randrange(1, 50))
    elif kind == "empty-file" and victim:
        victim.write_bytes(b"")


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _readers(results: Path, tmp: Path) -> list[tuple[str, int, str, str]]:
    runs = ("night-1", "night-2")
    calls = [("report", str(results), "--run", "night-2", "-o", str(tmp / "r.html")),
             ("diff", str(results), "night-1", "night-2", "--format", "json",
              "--fail-on", "incomplete"),
             ("diff", str(results), "previous", "latest"),
             ("junit", str(results), "--run", "night-2", "-o", str(tmp / "j.xml"))]
    calls += [("compact", str(results), "--run", r) for r in runs]
    return [(c[0], *_cli(*c)) for c in calls]


@pytest.mark.property
@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.sampled_from(["night-1", "night-2"]),
                                 st.sampled_from(DAMAGE)), min_size=1, max_size=3),
       seed=st.integers(0, 2**32))
def test_damaged_folders_are_listed_never_raised(two_runs, tmp_path_factory, damage, seed):
    tmp = tmp_path_factory.mktemp("damaged")
    results = Path(shutil.copytree(two_runs, tmp / "results", symlinks=True))
    rng = random.Random(seed)
    for run_id, kind in damage:
        _damage(results, run_id, kind, rng)
    outcomes = _readers(results, tmp)
    for command, code, out, err in outcomes:
        assert code in (0, 1, 2), (command, code, err[-2000:])
        assert "Traceback" not in err and "internal error" not in err, (command, err[-2000:])
        assert "\x1b" not in out + err, command        # hostile bytes never reach a terminal
    harmful = [k for _, k in damage if k not in ("stray-file",)]
    if harmful:
        # The damage is said somewhere: a warning, a refusal, or the gate on incomplete runs.
        report, diff_json = outcomes[0], outcomes[1]
        assert any(("warning" in err or code == 2) for _, code, _, err in outcomes[:4]), outcomes
        if report[1] == 0:
            assert "data problem" in report[2] or "warning" in report[3]
        assert diff_json[1] in (1, 2), diff_json
    junit = tmp / "j.xml"
    if junit.exists():
        import xml.etree.ElementTree as ET
        ET.parse(junit)                               # well-formed, whatever the messages held


def test_compact_and_readers_refuse_references_outside_the_folder(results, tmp_path):
    """`--run 'r1/../../elsewhere'` once merged and deleted files outside DIR."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(results / "run_id=night-1", elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    for command in (("compact", str(results), "--run", "night-1/../../elsewhere"),
                    ("report", str(results), "--run", "../elsewhere"),
                    ("junit", str(results), "--run", "night-1/../x"),
                    ("diff", str(results), "../../elsewhere", "latest")):
        code, _, err = _cli(*command)
        assert code == 2 and "use letters, digits" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_a_run_without_its_record_is_not_an_empty_success(results, tmp_path):
    (results / "run_id=night-2" / "_run.json").unlink()
    code, out, err = _cli("junit", str(results), "--run", "night-2", "-o", str(tmp_path / "j.xml"))
    assert code == 0 and "no _run.json" in err
    code, out, err = _cli("diff", str(results), "night-1", "night-2", "--fail-on", "incomplete,missing")
    assert code == 1 and "no _run.json" in err
    shutil.rmtree(results / "run_id=night-1")
    (results / "run_id=night-1").mkdir()                   # a run folder with nothing in it
    code, out, err = _cli("junit", str(results), "--run", "night-1", "-o", str(tmp_path / "k.xml"))
    assert code == 0 and "the run has no rows" in err and "no _run.json" in err


def test_unknown_statuses_are_errors_never_passes(results, tmp_path):
    victim = _parts(results, "night-2")[0]
    table = pq.read_table(victim)
    i = table.column_names.index("status")
    pq.write_table(table.set_column(i, "status", pa.array(["GREAT"] * table.num_rows)), victim)
    code, out, err = _cli("junit", str(results), "--run", "night-2", "-o", str(tmp_path / "j.xml"))
    assert code == 0 and "unknown status 'GREAT': counted as errors" in err
    import junitparser
    suite = next(iter(junitparser.JUnitXml.fromfile(str(tmp_path / "j.xml"))))
    assert suite.errors >= table.num_rows


def test_report_to_a_folder_is_refused_and_leaves_nothing(results, tmp_path):
    target = tmp_path / "a-folder"
    target.mkdir()
    code, _, err = _cli("report", str(results), "-o", str(target))
    assert code == 2 and "is a folder" in err and list(target.iterdir()) == []
    assert not list(tmp_path.glob(".*.tmp"))
