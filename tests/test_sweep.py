"""A run's lifecycle: ids claimed once, selections fixed, resumes appended, bad --out refused.

Real ``exportsweep run --in-process`` processes on tiny models, real Parquet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exporter.errors import UsageError
from orchestrator.results.claim import claim_run

from conftest import REPO

BIN = Path(sys.executable).parent
MANIFEST = """
version: 1
defaults: {modes: [non-strict]}
entries:
  - name: a1
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
  - name: a2
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
  - name: b1
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
"""


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "exportsweep"), "run", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


def _one_line_2(proc: subprocess.CompletedProcess[str], phrase: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def _meta(out: Path, run_id: str) -> dict:
    return json.loads((out / f"run_id={run_id}" / "_run.json").read_text())


def test_a_run_id_is_claimed_once(write_manifest, tmp_path):
    path = write_manifest(MANIFEST)
    out = tmp_path / "out"
    procs = [subprocess.Popen([str(BIN / "exportsweep"), "run", str(path), "--out", str(out),
                               "--run-id", "same", "--in-process", "--only", "a1"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "--run-id same: that run already exists" in loser
    assert _meta(out, "same")["history"][0]["command_line"][-2:] == ["--only", "a1"]
    assert len(_meta(out, "same")["history"]) == 1


def _race(out: str, claimants: int, settle_s: float) -> tuple[int, int]:
    """``claimants`` threads claim one run id at once: (wins, refusals)."""
    wins, errors = [], []

    def claim() -> None:
        try:
            claim_run(out, "race", settle_s=settle_s)
            wins.append(1)
        except UsageError:
            errors.append(1)

    threads = [threading.Thread(target=claim) for _ in range(claimants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(wins), len(errors)


def test_claims_race_in_threads_and_exactly_one_wins(tmp_path):
    assert _race(str(tmp_path / "out"), 8, 0.0) == (1, 7)


def test_object_store_claims_let_one_of_several_win(s3_bucket):
    out = f"s3://{s3_bucket}/claims"
    assert _race(out, 4, 0.5) == (1, 3)
    with pytest.raises(UsageError, match="already exists"):
        claim_run(out, "race", settle_s=0.1)


@pytest.mark.parametrize("run_id,phrase", [
    ("latest", "'latest' is reserved"), ("previous", "'previous' is reserved"),
    ("x" * 300, "at most 128 characters"), ("../../etc", "use letters, digits"),
    ("-rf", "starts with a letter or a digit"), ("a b", "use letters, digits"),
])
def test_bad_run_ids_are_one_line(write_manifest, tmp_path, run_id, phrase):
    path = write_manifest(MANIFEST)
    _one_line_2(_run(str(path), "--out", str(tmp_path / "out"), f"--run-id={run_id}",
                     "--in-process"), phrase)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unusable_out_paths_are_one_line_and_leave_nothing(write_manifest, tmp_path):
    path = write_manifest(MANIFEST)
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    _one_line_2(_run(str(path), "--out", str(a_file), "--in-process"), "is a file, not a folder")
    assert a_file.read_text() == "not a folder"
    _one_line_2(_run(str(path), "--out", str(a_file / "below"), "--in-process"),
                "cannot create the folder")
    if not os.access("/sys/kernel", os.W_OK) or not _can_mkdir("/sys/kernel/exportsweep-probe"):
        _one_line_2(_run(str(path), "--out", "/sys/kernel/exportsweep-results", "--in-process"),
                    "cannot create the folder")


def _can_mkdir(path: str) -> bool:
    try:
        os.mkdir(path)
    except OSError:
        return False
    os.rmdir(path)
    return True


def test_a_resume_cannot_shrink_the_run_or_rewrite_its_provenance(write_manifest, tmp_path):
    path = write_manifest(MANIFEST)
    out = tmp_path / "out"
    first = _run(str(path), "--out", str(out), "--run-id", "r", "--in-process", "--only", "a*")
    assert first.returncode == 0, first.stderr
    before = _meta(out, "r")
    # Another --only, or another mode, is another selection: refused, nothing written.
    _one_line_2(_run(str(path), "--out", str(out), "--resume", "r", "--in-process"),
                "selects other pairs than the run did (only: ['a*'] -> []")
    _one_line_2(_run(str(path), "--out", str(out), "--resume", "r", "--in-process", "--only",
                     "a*", "--mode", "strict"), "modes: None -> ['strict']")
    assert _meta(out, "r") == before
    # The same selection resumes (nothing left to do) and appends to the history.
    again = _run(str(path), "--out", str(out), "--resume", "r", "--in-process", "--only", "a*")
    assert again.returncode == 0, again.stderr
    after = _meta(out, "r")
    assert {k: after[k] for k in ("started_at", "command_line", "manifest_sha256")} == \
        {k: before[k] for k in ("started_at", "command_line", "manifest_sha256")}
    assert len(after["history"]) == 2 and after["history"][1]["command_line"][-3:] == \
        ["--in-process", "--only", "a*"]
    assert after["expected_pairs"] == 2 and after["rows"] == 2
    # A changed manifest is another selection too; --force resumes and says so in the run.
    path.write_text(path.read_text() + "  - name: a3\n    entrypoint: models/tiny.py:make_mlp\n"
                    "    inputs: [{shape: [2, 4]}]\n")
    _one_line_2(_run(str(path), "--out", str(out), "--resume", "r", "--in-process", "--only",
                     "a*"), "manifest_sha256")
    forced = _run(str(path), "--out", str(out), "--resume", "r", "--in-process", "--only", "a*",
                  "--force")
    assert forced.returncode == 0, forced.stderr
    final = _meta(out, "r")
    assert final["history"][-1]["forced"][0].startswith("manifest_sha256: ")
    assert final["rows"] == 3 and final["started_at"] == before["started_at"]


def test_force_without_resume_and_resume_of_nothing_are_bad_input(write_manifest, tmp_path):
    path = write_manifest(MANIFEST)
    _one_line_2(_run(str(path), "--out", str(tmp_path), "--force", "--in-process"),
                "--force goes with --resume")
    _one_line_2(_run(str(path), "--out", str(tmp_path), "--resume", "nope", "--in-process"),
                "--resume: no run 'nope'")


def test_dynamic_discover_is_part_of_the_runs_selection(write_manifest, tmp_path):
    from orchestrator.results.runs import read_final_rows
    path = write_manifest(MANIFEST)
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "orchestrator", "run", str(path), "--out", str(out),
           "--in-process", "--only", "a1"]
    first = subprocess.run(cli + ["--run-id", "d", "--dynamic", "discover"], capture_output=True,
                           text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr
    [row] = read_final_rows(str(out), "d")
    assert row["dynamic_requested"] == ["x.shape[0] (auto)", "x.shape[1] (auto)"]
    assert row["dynamic_achieved"] == ["x.shape[0] in [2, inf]"]
    assert _meta(out, "d")["selection"]["pipeline"]["dynamic"] == "discover"
    # Resuming without it would mix two kinds of rows in one run: refused.
    again = subprocess.run(cli + ["--resume", "d"], capture_output=True, text=True, cwd=REPO,
                           timeout=600)
    _one_line_2(again, "pipeline")
    bad = subprocess.run(cli + ["--dynamic", "sometimes"], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert bad.returncode == 2 and "invalid choice: 'sometimes'" in bad.stderr
