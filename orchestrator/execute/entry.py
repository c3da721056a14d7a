"""One entry, run: the one path that both executors (in-process and the Ray worker) take.

It runs ``exporter.pipeline.run_entry`` for the entry's pending modes with the model's own
output captured into the log, turns the records into rows that are sure to travel (a row
that cannot be pickled becomes an INFRA_ERROR row saying why), and logs each outcome as
one ``entry finished`` event of one shape, whichever executor ran it.
"""

from __future__ import annotations

import pickle
import shlex
import time
from typing import Any, Callable

from exporter.freshload import FreshLoader
from exporter.pipeline import run_entry
from exporter.record import Record, new_record_like
from exporter.schema import RowContext, row
from exporter.spec import Entry, PipelineOptions
from exporter.taxonomy import CATEGORY_BY_NAME, INFRA_ERROR, Failure
from orchestrator.execute import logs
from orchestrator.execute.rerun import mark_flaky

MESSAGE_CHARS = 300        # of a failure's message, in the log event (the row has it whole)


def repro_command(manifest_path: str) -> Callable[[str, str], str]:
    """The command that reruns one (entry, mode) in-process with tracebacks."""
    def make(entry: str, mode: str) -> str:
        return shlex.join(["exportsweep", "repro", manifest_path, entry, "--mode", mode])
    return make


def run_one(entry: Entry, modes: tuple[str, ...], options: PipelineOptions, ctx: RowContext,
            manifest_path: str, loader: FreshLoader | None, logger: Any) -> list[dict[str, Any]]:
    """Run ``modes`` of ``entry``; returns one plain, picklable row per mode.  Never raises
    for a model's failure (the rows say it); ``logger`` comes bound with run and worker."""
    logger = logger.bind(attempt=ctx.attempt)
    repro = repro_command(manifest_path)
    started = time.monotonic()
    with logs.captured_output(logger.bind(entry=entry.name)):
        records = run_entry(entry, options, loader=loader, modes=modes,
                            repro=lambda mode: repro(entry.name, mode), logger=logger)
    if options.flaky_reruns and not any(CATEGORY_BY_NAME.get(r.category or "") and
                                        CATEGORY_BY_NAME[r.category or ""].infra
                                        for r in records):
        mark_flaky(records, manifest_path, entry, options, options.flaky_reruns,
                   deadline_s=entry.timeout_s * options.flaky_reruns)
    seconds = round(time.monotonic() - started, 2)
    for record in records:
        log_outcome(logger, record, seconds)
    return travelling_rows(records, ctx)


def log_outcome(logger: Any, record: Record, seconds: float) -> None:
    """One ``entry finished`` event per (entry, mode), with the same keys whatever the
    outcome (filter on ``status``)."""
    bound = logger.bind(entry=record.entry, mode=record.mode, stage=record.stage_reached)
    bound.info("entry finished", status=record.status, category=record.category,
               failed_stage=record.failed_stage, signature=record.signature,
               message=(record.message or "")[:MESSAGE_CHARS] or None, total_s=record.total_s,
               seconds=seconds, traceback=record.traceback)


def travelling_rows(records: list[Record], ctx: RowContext) -> list[dict[str, Any]]:
    """Rows that are sure to pickle: a row that cannot travel to the driver is replaced by an
    INFRA_ERROR row saying why, instead of failing the whole call."""
    out = []
    for record in records:
        candidate = row(record, ctx)
        try:
            pickle.dumps(candidate)
        except Exception as exc:  # noqa: BLE001
            clean = new_record_like(record)
            clean.fail(Failure.make(INFRA_ERROR, None, f"the result row could not be pickled: "
                                    f"{type(exc).__name__}: {exc}",
                                    exception_type=type(exc).__name__))
            candidate = row(clean, ctx)
        out.append(candidate)
    return out
