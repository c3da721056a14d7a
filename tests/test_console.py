"""The console's progress lines: what they count and how they estimate the time left."""

from __future__ import annotations

import io

from orchestrator.execute.console import Progress, summary


def _row(entry: str, status: str) -> dict:
    return {"entry": entry, "mode": "strict", "status": status, "total_s": 0.0,
            "category": None, "failed_stage": None}


def test_the_eta_follows_the_rows_that_took_work_not_the_instant_skips():
    stream = io.StringIO()
    progress = Progress(total=6, stream=stream)
    progress.rows_done([_row("a", "SKIP"), _row("a", "SKIP")])
    assert progress.eta(10.0) == 0.0            # nothing has taken work yet: no pace known
    progress.rows_done([_row("b", "PASS")])
    # 3 rows left at 10 s per working row; counting the skips would have said 10 s in all
    assert progress.eta(10.0) == 30.0
    progress.rows_done([_row("c", "FAIL")])
    assert progress.eta(10.0) == 10.0
    lines = stream.getvalue().splitlines()
    assert [ln.split("]")[0] for ln in lines] == ["[2/6", "[3/6", "[4/6"]


class _ClosedPipe:
    """A console whose reader has gone (`exportsweep run ... | head`)."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_console_that_went_away_ends_the_progress_lines_not_the_sweep():
    progress = Progress(total=3, stream=_ClosedPipe())
    progress.rows_done([_row("a", "PASS")])           # would raise into the supervisor
    progress.rows_done([_row("b", "PASS")])
    progress.close()
    assert progress.done == 2 and progress.stream is None


def test_pass_rates_leave_skipped_rows_out():
    rows = [dict(_row(f"t{i}", "SKIP"), family="timm", env="old", message=None, expected=None,
                 repro="r") for i in range(3)]
    rows += [dict(_row(f"t{i}", s), family="timm", env="current", message=None, expected=None,
                  repro="r") for i, s in enumerate(["PASS", "XFAIL", "FAIL"])]
    stream = io.StringIO()
    summary(rows, "out", 1.0, stream=stream)
    lines = {ln.split()[1]: ln for ln in stream.getvalue().splitlines()
             if ln.startswith("  timm")}
    assert lines["strict@current"].split()[2:] == ["2/3", "66.7%"]
    assert lines["strict@old"].split()[2:] == ["0/0", "—", "(3", "skipped)"]
