"""``exportsweep compact``: merge a finished run's small Parquet files into one.

A sweep writes one small file per finished entry (crash safety); thousands of them slow
every reader down.  Compaction, for one finished run only:

1. refuses a run that is not finished or whose files are damaged (nothing to lose twice);
2. writes all rows, unchanged and in file order, to one new file whose Parquet metadata
   names the files it replaces (``exportsweep.replaces``), published atomically;
3. reads that file back and compares the multiset of row hashes with the originals; on any
   difference it deletes its own file and stops, leaving the run as it was;
4. rewrites ``_run.json``'s file list, then deletes the replaced files.

Between steps 2 and 4 both the old files and the new one exist: exportsweep's readers skip
replaced files, so they never see a row twice; a plain glob reader (DuckDB over
``*/*.parquet``) could, for the milliseconds between the publish and the deletes.  Other
runs in the same folder are never touched, so sweeps writing their own runs meanwhile are
safe.  On a local disk a lock file keeps two compactions of one run apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from exporter.errors import ExportsweepError
from orchestrator.results import storage
from orchestrator.results.layout import (COMPACT_LOCK, REPLACES_KEY, RUN_META, compacted_name,
                                         run_dir_name)
from orchestrator.results.runs import read_meta, scan_run


class CompactError(ExportsweepError):
    """The run cannot be compacted as it is (unfinished, damaged, or rows would change)."""


@dataclass(frozen=True)
class CompactResult:
    run_id: str
    files_before: int
    rows: int
    output: str | None          # the new file's name; None when there was nothing to do
    bytes_before: int
    bytes_after: int

    def summary(self) -> str:
        if self.output is None:
            return f"run {self.run_id}: already one file ({self.rows} rows), nothing to do"
        return (f"run {self.run_id}: {self.files_before} files -> 1 ({self.output}), "
                f"{self.rows} rows unchanged (row hashes match), "
                f"{self.bytes_before / 1024:.0f} KiB -> {self.bytes_after / 1024:.0f} KiB")


def compact_run(out: str, run_id: str) -> CompactResult:
    loc = storage.location(out)
    folder = loc.path(run_dir_name(run_id))
    with _lock(loc, folder, run_id):
        meta, _ = read_meta(out, run_id)
        if meta is None or not meta.finished_at:
            raise CompactError(f"run {run_id}: not finished (still running, or interrupted: "
                               f"resume it first); compact only merges finished runs")
        files, tables = scan_run(loc, run_id, meta, read=True)
        if files.problems:
            raise CompactError(f"run {run_id}: its files need attention first: "
                               + "; ".join(files.problems))
        names = sorted(files.parts)
        if len(names) <= 1:
            return CompactResult(run_id, len(names), sum(files.parts.values()),
                                 None, 0, 0)
        sizes = sum(files.sizes.values())
        merged = pa.concat_tables([tables[n] for n in names], promote_options="default")
        before = Counter(row_hashes(merged))
        output = compacted_name()
        target = posixpath.join(folder, output)
        size = storage.publish_table(loc, target, merged,
                                     metadata={REPLACES_KEY: json.dumps(names)})
        if Counter(row_hashes(storage.open_parquet(loc, target).read())) != before:
            storage.delete(loc, target)
            raise CompactError(f"run {run_id}: the merged file's rows differ from the "
                               f"originals; nothing was changed")
        meta.parts = {output: merged.num_rows}
        meta.compacted = {"files": len(names), "bytes_before": sizes, "bytes_after": size}
        storage.publish_bytes(loc, posixpath.join(folder, RUN_META), meta.dumps().encode())
        for name in names:
            storage.delete(loc, posixpath.join(folder, name))
        return CompactResult(run_id, len(names), merged.num_rows, output, sizes, size)


def row_hashes(table: pa.Table) -> list[str]:
    """One stable hash per row over every column's value."""
    return [hashlib.sha256(json.dumps(row, sort_keys=True, default=_typed).encode()).hexdigest()
            for row in table.to_pylist()]


def _typed(value: Any) -> str:
    return f"{type(value).__name__}:{value!r}"


class _lock:
    """An exclusive lock file in the run's folder (local disks; object stores lack an atomic
    create-if-absent in pyarrow, so there one compaction per run at a time is the rule)."""

    def __init__(self, loc: storage.Location, folder: str, run_id: str) -> None:
        self.path = os.path.join(folder, COMPACT_LOCK) if loc.local else None
        self.run_id = run_id

    def __enter__(self) -> "_lock":
        if self.path:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                raise CompactError(f"run {self.run_id}: another compaction holds "
                                   f"{self.path} (remove it if no compaction is running)") \
                    from None
            except FileNotFoundError:
                raise CompactError(f"run {self.run_id}: no such run folder") from None
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path:
            os.unlink(self.path)
