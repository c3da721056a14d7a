"""The torch-version matrix for real: one sweep of manifests/matrix.yaml in two environments
(this torch, and torch 2.13.0 in .venv-torch213 built by `make env-torch213`) on local Ray,
its cross-version table, and the views that read it (report, diff across environments,
JUnit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from exporter.environments import CURRENT
from exporter.schema import CROSSLOAD_DIR, CROSSLOAD_SCHEMA
from orchestrator.results.runs import read_run

from conftest import MANIFESTS, REPO

BIN = Path(sys.executable).parent
OLD_PYTHON = REPO / ".venv-torch213" / "bin" / "python"
OLD = "torch213"


def _exportsweep(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "exportsweep"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    if not OLD_PYTHON.exists():
        message = f"{OLD_PYTHON} is missing: `make env-torch213` builds it (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("matrix") / "out"
    proc = _exportsweep("run", str(MANIFESTS / "matrix.yaml"), "--out", str(out), "--run-id",
                        "m", "--cpu-workers", "2", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_every_entry_runs_in_both_environments_with_their_torch(matrix_run):
    run = read_run(str(matrix_run), "m")
    assert run.problems == []
    rows = run.final_rows
    by_env = Counter(r["env"] for r in rows)
    assert set(by_env) == {CURRENT, OLD} and by_env[CURRENT] == by_env[OLD]
    old_versions = {r["torch_version"] for r in rows if r["env"] == OLD and r["torch_version"]}
    new_versions = {r["torch_version"] for r in rows if r["env"] == CURRENT and r["torch_version"]}
    assert old_versions == {"2.13.0+cpu"} and len(new_versions) == 1, (old_versions, new_versions)
    assert not new_versions & old_versions
    assert all(r["worker_id"].startswith(f"{OLD}-") for r in rows
               if r["env"] == OLD and r["status"] != "SKIP")
    meta = json.loads((matrix_run / "run_id=m" / "_run.json").read_text())
    envs = meta["environments"]
    assert set(envs) == {CURRENT, OLD} and envs[OLD]["torch"] == "2.13.0+cpu"
    assert envs[OLD]["declaration"]["python"] == str(OLD_PYTHON.resolve()) or \
        envs[OLD]["declaration"]["python"].endswith(".venv-torch213/bin/python")
    assert meta["selection"]["environments"] == sorted([CURRENT, OLD])
    # torch213 holds no torchvision: its entry is skipped there, saying why, and runs here
    assert envs[OLD]["unavailable"] == {"torchvision": "not installed"}
    assert envs[CURRENT]["unavailable"] == {}
    skipped = [r for r in rows if r["status"] == "SKIP"]
    assert {(r["entry"], r["env"]) for r in skipped} == {("torchvision/squeezenet1_1", OLD)}
    assert len(skipped) == 2 and all(
        r["skip_reason"] == "the torchvision family cannot run in environment 'torch213': "
                           "torchvision is not installed there" for r in skipped)
    assert all(r["status"] == "PASS" for r in rows
               if r["entry"] == "torchvision/squeezenet1_1" and r["env"] == CURRENT)


def test_programs_are_loaded_in_the_other_environment_both_ways(matrix_run):
    table = ds.dataset(str(matrix_run / "run_id=m" / CROSSLOAD_DIR), format="parquet",
                       schema=CROSSLOAD_SCHEMA).to_table()
    cross = table.to_pylist()
    assert cross, "no cross-version rows"
    assert {(r["from_env"], r["to_env"]) for r in cross} == {(CURRENT, OLD), (OLD, CURRENT)}
    directions = {(r["from_env"], r["direction"]) for r in cross}
    assert directions == {(OLD, "forward"), (CURRENT, "backward")}
    rows = read_run(str(matrix_run), "m").final_rows
    serialized = {(r["entry"], r["mode"], r["env"]) for r in rows
                  if dict(r["stage_status"] or {}).get("serialize") == "passed"}
    # every program that reloaded where it was made was checked in the other environment
    checked = {(r["entry"], r["mode"], r["from_env"]) for r in cross if r["kind"] == "export"}
    assert checked == serialized
    for r in cross:
        assert r["status"] in ("PASS", "FAIL", "ERROR")
        assert (r["status"] == "PASS") == (r["category"] is None)
        if r["status"] == "FAIL":
            assert r["category"] in ("CROSS_VERSION_LOAD_ERROR", "CROSS_VERSION_MISMATCH")
            assert r["load_category"] and r["message"] and len(r["signature"]) == 12
    controls = [r for r in cross if r["entry"] == "patho/control_dict_output"]
    assert controls and all(r["status"] == "PASS" for r in controls), controls
    # a program needs torch, not the library that built the model: the torchvision model's
    # programs load in torch213, where torchvision itself is missing
    vision = [r for r in cross if r["entry"] == "torchvision/squeezenet1_1"]
    assert {(r["mode"], r["to_env"], r["status"]) for r in vision} == {
        ("non-strict", OLD, "PASS"), ("strict", OLD, "PASS")}, vision


def test_diff_compares_two_environments_of_one_run(matrix_run):
    proc = _exportsweep("diff", str(matrix_run), "m", "--env", CURRENT, "--vs-env", OLD,
                        "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    changes = report["changes"]
    rows = read_run(str(matrix_run), "m").final_rows
    assert len(changes) == sum(1 for r in rows if r["env"] == CURRENT)
    assert {c["env"] for c in changes} == {f"{CURRENT} -> {OLD}"}
    assert report["counts"]["SKIPPED"] == 2          # torchvision: not a change of outcome
    assert sum(report["counts"].values()) == len(changes)
    bad = _exportsweep("diff", str(matrix_run), "m", "--env", CURRENT, "--vs-env", "nope")
    assert bad.returncode == 2 and "has no environment 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("args, said", [
    (["--vs-env", OLD], "--vs-env B goes with --env A"),
    (["m", "--env", CURRENT, "--vs-env", OLD], "compares two environments of one run"),
    (["--base-dir", ".", "--env", CURRENT, "--vs-env", OLD], "no NEW_RUN, no --base-dir"),
    ([], "diff needs BASE_RUN and NEW_RUN"),
])
def test_diff_across_environments_misused_is_one_line(matrix_run, args, said):
    proc = _exportsweep("diff", str(matrix_run), "m", *args)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_expect_update_names_an_environment_of_the_run(matrix_run, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nexpectations: expected.yaml\nentries:\n"
                        f"  - name: mlp\n    entrypoint: {REPO}/tests/models/tiny.py:make_mlp\n"
                        "    inputs: [{shape: [2, 4]}]\n")
    proc = _exportsweep("expect", "update", str(manifest), "--from", str(matrix_run), "--run",
                        "m", "--env", "nope", "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().endswith(f"--env nope: run m has no such environment (it has "
                                        f"{CURRENT}, {OLD})"), proc.stderr
    proc = _exportsweep("expect", "update", str(manifest), "--from", str(matrix_run), "--run",
                        "m", "--env", OLD, "--dry-run")
    assert proc.returncode == 0, proc.stderr


def test_report_and_junit_show_the_matrix(matrix_run, tmp_path):
    html = tmp_path / "report.html"
    proc = _exportsweep("report", str(matrix_run), "--run", "m", "--output", str(html))
    assert proc.returncode == 0, proc.stderr
    text = html.read_text()
    assert 'id="matrix" data-envs="2"' in text and "torch 2.13.0+cpu" in text
    xml = tmp_path / "junit.xml"
    proc = _exportsweep("junit", str(matrix_run), "--run", "m", "--output", str(xml))
    assert proc.returncode == 0, proc.stderr
    junit = xml.read_text()
    assert "[non-strict@torch213]" in junit and "[strict@current]" in junit


@pytest.mark.slow
def test_aoti_packages_are_loaded_in_the_other_environment_both_ways(tmp_path):
    """--aoti: each environment's AOTInductor package (native code for its torch) is loaded
    and run by the other torch too (about a minute: two compilations)."""
    if not OLD_PYTHON.exists():
        pytest.skip(f"{OLD_PYTHON} is missing: `make env-torch213` builds it")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"version: 1\nenvironments:\n  {OLD}: {{python: {OLD_PYTHON}}}\n"
                        "entries:\n  - name: mlp\n"
                        f"    entrypoint: {REPO}/tests/models/tiny.py:make_mlp\n"
                        "    inputs: [{shape: [2, 4]}]\n    modes: [non-strict]\n")
    out = tmp_path / "out"
    proc = _exportsweep("run", str(manifest), "--out", str(out), "--run-id", "a", "--aoti",
                        timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_run(str(out), "a").final_rows
    assert {(r["env"], r["status"], dict(r["stage_status"])["aoti"]) for r in rows} == {
        (CURRENT, "PASS", "passed"), (OLD, "PASS", "passed")}
    cross = ds.dataset(str(out / "run_id=a" / CROSSLOAD_DIR), format="parquet",
                       schema=CROSSLOAD_SCHEMA).to_table().to_pylist()
    assert sorted((r["kind"], r["direction"], r["status"]) for r in cross) == [
        ("aoti", "backward", "PASS"), ("aoti", "forward", "PASS"),
        ("export", "backward", "PASS"), ("export", "forward", "PASS")]
