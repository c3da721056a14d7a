"""How long each entry took in a results folder's recent runs: what the scheduler orders by.

A sweep's wall time is decided by its tail: the slowest model started last holds every
worker but one idle.  The folder a sweep writes to already knows each entry's duration from
earlier runs (any status: a failure that took a minute will take a minute again), so the
supervisor can start the longest first.  History only orders work: a damaged or missing
run is skipped and said, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.results.runs import list_runs, read_run

RECENT_RUNS = 3       # runs read at least (newest first) when every entry is known sooner
MAX_RUNS = 50         # and at most, looking further back for entries not yet seen


@dataclass(frozen=True)
class History:
    seconds: dict[str, float] = field(default_factory=dict)   # entry -> wall seconds
    runs: tuple[str, ...] = ()                                 # the runs read, newest first
    problems: tuple[str, ...] = ()


def entry_history(out: str, exclude: tuple[str, ...] = (), recent: int = RECENT_RUNS,
                  wanted: set[str] | None = None, max_runs: int = MAX_RUNS) -> History:
    """Each entry's wall time (first start to last finish over its modes, in any
    environment) in the most recent run of ``out`` that ran it. Reads the last ``recent``
    runs, then further back while some ``wanted`` entry is still unknown (a folder holding
    one-entry runs, say), at most ``max_runs``; ``exclude``: runs not to read (the run being
    resumed: its finished entries are not scheduled again anyway)."""
    problems: list[str] = []
    try:
        runs = [r.run_id for r in list_runs(out) if r.run_id not in exclude]
    except OSError as exc:        # history is advisory: an unreadable folder orders nothing
        return History(problems=(f"{out}: runs cannot be listed ({exc})",))
    seconds: dict[str, float] = {}
    read: list[str] = []
    for run_id in reversed(runs):                 # newest first: the first duration wins
        if len(read) >= max_runs or len(read) >= recent and (
                wanted is None or wanted <= seconds.keys()):
            break
        read.append(run_id)
        try:
            data = read_run(out, run_id, columns=("started_at",))
        except Exception as exc:  # noqa: BLE001 - a damaged old run must not stop a sweep
            problems.append(f"run {run_id}: not read for scheduling ({type(exc).__name__})")
            continue
        for entry, took in _durations(data.final_rows).items():
            seconds.setdefault(entry, took)
    return History(seconds, tuple(read), tuple(problems))


def _durations(rows: list[dict[str, Any]]) -> dict[str, float]:
    spans: dict[str, list[Any]] = {}
    for r in rows:
        start, end = r.get("started_at"), r.get("finished_at")
        if start is None or end is None:
            continue
        span = spans.setdefault(r["entry"], [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    return {e: max(0.0, (end - start).total_seconds()) for e, (start, end) in spans.items()}
