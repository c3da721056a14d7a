"""The status table: its documentation, its derived sets, and who reads it."""

from __future__ import annotations

import re

from exporter import status
from exporter.record import Record
from exporter.spec import Expectation
from exporter.status import (ATTENTION, EXPORTED, FAILED, FAILED_UNEXPECTEDLY, PASSING, SKIPPED,
                             STATUS_BY_NAME, STATUS_TABLE, STATUSES)
from exporter.taxonomy import Failure


def _documented() -> dict[str, tuple[str, ...]]:
    rows = {}
    for line in (status.__doc__ or "").splitlines():
        cells = line.split()
        if cells and cells[0] in STATUSES:
            rows[cells[0]] = tuple(cells[1:6])
    return rows


def test_the_docstring_table_matches_the_table():
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    expected = {s.name: (s.kind, yes(s.exported), yes(s.passing), yes(s.attention),
                         s.junit or "(pass)") for s in STATUS_TABLE}
    assert _documented() == expected


def test_derived_sets_follow_the_table_in_display_order():
    assert STATUSES == ("PASS", "XFAIL", "XPASS", "FAIL", "ERROR", "SKIP")
    assert PASSING == ("PASS", "XFAIL") and EXPORTED == ("PASS", "XPASS")
    assert FAILED == ("XFAIL", "FAIL", "ERROR") and ATTENTION == ("XPASS", "FAIL", "ERROR")
    assert FAILED_UNEXPECTEDLY == ("FAIL", "ERROR") and SKIPPED == ("SKIP",)
    assert sorted(STATUSES, key=status.SEVERITY.get) == ["FAIL", "ERROR", "XPASS", "XFAIL",
                                                          "SKIP", "PASS"]
    assert all(re.fullmatch(r"#[0-9a-f]{3,6}", c) for s in STATUS_TABLE
               for c in (s.colour, s.colour_dark, s.ink, s.ink_dark))


def test_every_status_a_record_can_reach_is_in_the_table():
    def record(category: str | None = None, expect: Expectation | None = None) -> str:
        r = Record(entry="e", family="manual", mode="strict", device="cpu")
        if category:
            r.fail(Failure.make(category, "export", "boom"))
        r.apply_expectation(expect)
        return r.status

    seen = {record(), record("GRAPH_BREAK"), record("TIMEOUT"),
            record(expect=Expectation()), record("GRAPH_BREAK", Expectation())}
    skipped = Record(entry="e", family="manual", mode="strict", device="cpu")
    skipped.skip("no worker")
    seen.add(skipped.status)
    assert seen == set(STATUSES)
    assert {STATUS_BY_NAME[s].kind for s in seen} == {"pass", "fail", "infra", "skip"}
