"""What a person sees in the terminal: one line per finished entry, then a summary."""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from typing import Any, TextIO

from exporter.schema import row_env
from exporter.status import ATTENTION, FAILED, PASSING, SKIPPED, STATUSES
from exporter.text import printable


# The row columns the summary reads.
SUMMARY_COLUMNS = ("entry", "mode", "family", "status", "category", "failed_stage", "message",
                   "expected", "repro", "total_s")


def count_statuses(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["status"] for r in rows)
    return {s: counts[s] for s in STATUSES if counts[s]}


class Progress:
    """One line per finished entry (CI logs keep them) and, on a terminal, a live status line
    under them: done/total, pass/fail/error counts, elapsed, ETA."""

    def __init__(self, total: int, stream: TextIO = sys.stdout) -> None:
        self.total = total
        self.done = 0
        self.stream: TextIO | None = stream
        self.started = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.live = hasattr(stream, "isatty") and stream.isatty()

    def rows_done(self, rows: list[dict[str, Any]]) -> None:
        """Rows of one entry (one per mode) have been written."""
        if not rows:
            return
        self.done += len(rows)
        self.counts.update(r["status"] for r in rows)
        modes = "  ".join(f"{r['mode']} {_status_text(r)}" for r in rows)
        width = len(str(self.total))
        elapsed = time.monotonic() - self.started
        timing = "" if self.live else f"  ({elapsed:.0f}s, eta {self.eta(elapsed):.0f}s)"
        self._write(f"[{self.done:>{width}}/{self.total}] {printable(rows[0]['entry']):<44} "
                    f"{modes}{timing}\n")

    def eta(self, elapsed: float) -> float:
        """Seconds left at the pace of the rows that took work so far (skipped rows are
        written in an instant and say nothing of the pace)."""
        worked = self.done - sum(self.counts[s] for s in SKIPPED)
        return elapsed / worked * (self.total - self.done) if worked > 0 else 0.0

    def status_line(self) -> str:
        elapsed = time.monotonic() - self.started
        eta = self.eta(elapsed)
        counts = " ".join(f"{n} {s}" for s, n in ((s, self.counts[s]) for s in STATUSES) if n)
        filled = int(30 * self.done / self.total) if self.total else 30
        return (f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}  {counts}  "
                f"{elapsed:.0f}s elapsed, eta {eta:.0f}s")

    def _write(self, line: str) -> None:
        """A progress line; a console that went away (a closed pipe, a dead terminal) ends the
        progress lines, never the sweep: the rows are written already, the run goes on."""
        if self.stream is None:
            return
        try:
            self._clear()
            self.stream.write(line)
            if self.live:
                self.stream.write(self.status_line())
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):     # ValueError: a closed file
            self.stream = None

    def _clear(self) -> None:
        if self.live and self.stream is not None:
            self.stream.write("\r\033[K")

    def close(self) -> None:
        if self.stream is None:
            return
        try:
            self._clear()
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.stream = None


def _status_text(r: dict[str, Any]) -> str:
    if r["status"] not in FAILED:
        return f"{r['status']} {r['total_s'] or 0:.1f}s"
    return printable(f"{r['status']} {r['category'] or ''}@{r['failed_stage'] or '-'}")


def summary(rows: list[dict[str, Any]], where: str, wall_s: float,
            stream: TextIO = sys.stdout, clusters: list[Any] = ()) -> None:
    w = stream.write
    counts = count_statuses(rows)
    w(f"\n{len(rows)} rows in {wall_s:.1f}s: " +
      ", ".join(f"{n} {s}" for s, n in counts.items()) + "\n")
    several = len({row_env(r) for r in rows}) > 1
    by_group: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        mode = f"{r['mode']}@{row_env(r)}" if several else r["mode"]
        by_group[(r["family"] or "", mode)].append(r["status"])
    if by_group:
        w("\npass rate by family and mode" + (" @ environment" if several else "") +
          " (PASS+XFAIL / all that ran)\n")
        width = max(11, *(len(printable(mode)) for _, mode in by_group))
        for (family, mode), statuses in sorted(by_group.items()):
            ok = sum(s in PASSING for s in statuses)
            skipped = sum(s in SKIPPED for s in statuses)
            ran = len(statuses) - skipped
            # Skipped rows ran nowhere: no verdict, so not in the rate (a family whose library
            # is missing in one environment is not a 0% pass rate there).
            rate = f"{100 * ok / ran:5.1f}%" if ran else "    —"
            w(f"  {printable(family):<14} {printable(mode):<{width}} {ok:>4}/{ran:<4} {rate}"
              + (f"  ({skipped} skipped)" if skipped else "") + "\n")
    cats = Counter(r["category"] for r in rows if r["status"] in FAILED and r["category"])
    if cats:
        w("\ntop failure categories\n")
        for cat, n in cats.most_common(8):
            w(f"  {n:>4}  {printable(cat)}\n")
    if clusters:
        w("\ntop failure clusters (one root cause each)\n")
        for c in clusters[:5]:
            head = printable((c.message or "").splitlines()[0], 80) if c.message else ""
            w(f"  {c.rows:>4} rows, {c.n_entries} entries  {printable(c.signature)}  "
              f"{printable('/'.join(c.categories))}: {head}\n"
              f"         repro: {printable(c.repro)}\n")
    unexpected = [r for r in rows if r["status"] in ATTENTION]
    if unexpected:
        w("\nneeds attention\n")
        for r in unexpected[:15]:
            lines = (r["message"] or r["expected"] or "").splitlines()
            mode = f"{r['mode']}@{row_env(r)}" if several else r["mode"]
            w(f"  {printable(r['status']):<6} {printable(r['entry'])} [{printable(mode)}] "
              f"{printable(r['category'] or '')}: {printable(lines[0], 90) if lines else ''}\n")
            if r["status"] in FAILED:
                w(f"         repro: {printable(r['repro'])}\n")
    slow = sorted(rows, key=lambda r: r["total_s"] or 0, reverse=True)[:5]
    if slow:
        w("\nslowest\n")
        for r in slow:
            w(f"  {r['total_s'] or 0:7.1f}s  {printable(r['entry'])} [{printable(r['mode'])}]\n")
    w(f"\nresults: {where}\n")
    stream.flush()
