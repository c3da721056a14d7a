"""The cross-version stage's rows (execute/crossload.py) and the report's environment matrix
(views/matrix.py), on plain values; tests/test_matrix.py runs both for real."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from exporter.environments import CURRENT
from exporter.freshload import LoadResult
from exporter.schema import CROSSLOAD_SCHEMA, crossload_table
from exporter.spec import Entry
from exporter.taxonomy import Failure
from orchestrator.execute.crossload import crossload_row, direction
from orchestrator.views import matrix

ENTRY = Entry(name="m", entrypoint="models/tiny.py:make_mlp", source="m.yaml", base_dir=".")


@pytest.mark.parametrize("a, b, want", [
    ("2.13.0+cpu", "2.14.1+cu130", "forward"), ("2.14.1+cu130", "2.13.0+cpu", "backward"),
    ("2.14.1", "2.14.1+cpu", "same"), ("2.15.0.dev20261201+cpu", "2.14.1", "backward"),
    ("", "2.14.1", "unknown"), ("not a version", "2.14.1", "unknown"),
])
def test_direction_reads_torch_versions(a, b, want):
    assert direction(a, b) == want


def _row(result=None, fault=None):
    return crossload_row(ENTRY, "strict", "export", "old", "2.13.0+cpu", CURRENT,
                         "2.14.1+cu130", result, "cpu-1", "r", fault=fault)


def _failed(category: str) -> LoadResult:
    inner = Failure.make(category, "serialize", f"{category}: it broke", exception_type="E")
    return LoadResult(False, asdict(inner), load_s=0.5, run_s=0.1)


def test_a_program_that_loads_and_agrees_passes():
    r = _row(LoadResult(True, None, 1e-7, 1e-7, load_s=0.25, run_s=0.01))
    assert (r["status"], r["category"], r["direction"]) == ("PASS", None, "forward")
    assert r["max_abs_err"] == 1e-7 and r["load_s"] == 0.25


@pytest.mark.parametrize("inner, status, category", [
    ("DESERIALIZE_ERROR", "FAIL", "CROSS_VERSION_LOAD_ERROR"),
    ("EXPORTED_RUN_ERROR", "FAIL", "CROSS_VERSION_LOAD_ERROR"),
    ("ROUNDTRIP_MISMATCH", "FAIL", "CROSS_VERSION_MISMATCH"),
    ("AOTI_MISMATCH", "FAIL", "CROSS_VERSION_MISMATCH"),
    ("WORKER_CRASH", "ERROR", "WORKER_CRASH"),
])
def test_the_fresh_process_verdict_becomes_a_cross_version_category(inner, status, category):
    r = _row(_failed(inner))
    assert (r["status"], r["category"], r["load_category"]) == (status, category, inner)
    assert r["message"] and len(r["signature"]) == 12


def test_one_cause_is_one_signature_across_pairs_and_apart_from_the_reload_stage():
    a, b = _row(_failed("DESERIALIZE_ERROR")), _row(_failed("DESERIALIZE_ERROR"))
    assert a["signature"] == b["signature"]
    assert a["signature"] != _failed("DESERIALIZE_ERROR").failure["signature"]


def test_a_check_that_never_came_back_is_an_error_row():
    r = _row(fault=Failure.make("TIMEOUT", None, "no result after 130 s"))
    assert (r["status"], r["category"], r["max_abs_err"]) == ("ERROR", "TIMEOUT", None)


def test_rows_fit_the_cross_version_schema():
    table = crossload_table([_row(LoadResult(True, None)), _row(_failed("DESERIALIZE_ERROR"))])
    assert table.schema.equals(CROSSLOAD_SCHEMA) and table.num_rows == 2


def _main_row(entry, mode, env, status="PASS", category=None, stage=None, torch="2.14.1"):
    return {"entry": entry, "mode": mode, "env": env, "status": status, "category": category,
            "failed_stage": stage, "stage_ordinal": 8 if status == "PASS" else 3,
            "signature": None, "torch_version": torch, "repro": None}


def test_the_matrix_lists_differing_pairs_first_and_counts_changes():
    rows = [_main_row("a", "strict", CURRENT), _main_row("a", "strict", "old", torch="2.13.0"),
            _main_row("b", "strict", CURRENT),
            _main_row("b", "strict", "old", "FAIL", "EXPORT_ERROR", "export", torch="2.13.0")]
    html = matrix.section(rows)
    assert 'data-envs="2" data-differ="1"' in html
    assert html.index('data-entry="b"') < html.index('data-entry="a"')
    assert html.count('class="mx-diff"') == 1 and "torch 2.13.0" in html
    assert "1 new failure, 1 unchanged" in html
    assert matrix.section([r for r in rows if r["env"] == CURRENT]) == ""
    # rows written before environments existed read as `current`
    assert matrix.environments([{**rows[0], "env": None}, rows[1]]) == [CURRENT, "old"]
