"""Write result rows as a hive-partitioned Parquet dataset, crash-safely.

Each flush is one small Parquet file published atomically under a unique name in
``OUT/run_id=<id>/`` (see :mod:`.storage` and :mod:`.layout`): a crash at any moment leaves either
a whole file or nothing, where a single long-lived ParquetWriter would leave an unreadable
one.  ``OUT`` is a local folder or an object-store URI.

On a local disk every finished entry is flushed at once (a few ms).  An object-store PUT
costs tens of ms, which would cap a large cluster's driver at a few dozen entries a second
(docs/cluster.md), so there rows are gathered for ``flush_interval_s`` (default 10 s) and
published together; a driver that dies loses at most that much, which ``--resume`` reruns.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
import time
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.dataset as ds

from exporter.errors import OrchestratorError
from exporter.schema import SCHEMA, to_table
from orchestrator.results import storage
from orchestrator.results.layout import (LOG_DIR, RUN_META, RunMeta, part_name, run_dir,
                                         run_dir_name)
from orchestrator.results.storage import Location

OBJECT_STORE_FLUSH_S = 10.0


class ResultSink:
    """Appends rows of one run; each flush publishes one atomic Parquet file (per write on a
    local disk, every ``flush_interval_s`` on an object store)."""

    def __init__(self, out: str, run_id: str, flush_interval_s: float | None = None,
                 table: Callable[[list[dict[str, Any]]], pa.Table] = to_table,
                 subdir: str | None = None) -> None:
        self.out, self.run_id = out, run_id
        self.loc: Location = storage.location(out)
        self.dir = run_dir(out, run_id)
        self.path = self.loc.path(run_dir_name(run_id))
        if subdir:                          # another table of the run (schema.CROSSLOAD_DIR)
            self.dir = posixpath.join(self.dir, subdir)
            self.path = posixpath.join(self.path, subdir)
        self._table = table
        if self.loc.local:
            os.makedirs(self.path, exist_ok=True)
        self.flush_interval_s = (flush_interval_s if flush_interval_s is not None
                                 else 0.0 if self.loc.local else OBJECT_STORE_FLUSH_S)
        self.files_written = 0
        self.rows_written = 0
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    def write(self, rows: list[dict[str, Any]]) -> str | None:
        """Queue rows; they are published now or, on an object store, within the interval.
        Returns the file's name when this call published one."""
        self._pending.extend(rows)
        return self.tick()

    def tick(self) -> str | None:
        """Publish what is pending if the interval has passed (the driver calls this often)."""
        if self._pending and time.monotonic() - self._last_flush >= self.flush_interval_s:
            return self.flush()
        return None

    def flush(self) -> str | None:
        """Publish every pending row as one file now; returns its name."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return None
        rows, self._pending = self._pending, []
        name = part_name(self.files_written)
        with self._writing(f"{len(rows)} row(s)"):
            storage.publish_table(self.loc, posixpath.join(self.path, name), self._table(rows))
        self.files_written += 1
        self.rows_written += len(rows)
        return name

    def write_meta(self, meta: RunMeta) -> None:
        """Publish the run record (``_run.json``) atomically."""
        with self._writing("the run record"):
            storage.publish_bytes(self.loc, posixpath.join(self.path, RUN_META),
                                  meta.dumps().encode())

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """A sink that cannot write stops the run: exit 3 with one line; every file published
        before is whole, and ``--resume`` reruns what had no row yet."""
        try:
            yield
        except OSError as exc:
            raise OrchestratorError(
                f"cannot write {what} to {self.dir} ({exc.strerror or exc}); what was written "
                f"before is intact: `exportsweep run MANIFEST --out {self.out} --resume "
                f"{self.run_id}` finishes the run once the results folder is writable") from None

    def log_dir(self) -> str:
        return log_dir(self.out, self.run_id)

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir(), name)

    def publish_logs(self) -> int:
        """Object stores: copy the driver's local logs next to the rows (a local run has them)."""
        if self.loc.local:
            return 0
        return storage.upload_folder(self.log_dir(), self.loc,
                                     posixpath.join(self.path, LOG_DIR), append=True)


def log_dir(out: str, run_id: str) -> str:
    """Logs are appended to as they happen, so they live on a local disk: in the run's folder
    for a local ``out``, else in a temporary folder uploaded when the run ends."""
    loc = storage.location(out)
    if loc.local:
        return os.path.join(loc.path(run_dir_name(run_id)), LOG_DIR)
    # Per process: a resumed run (or a test rerun) must not append to an older local copy.
    return os.path.join(tempfile.gettempdir(), "exportsweep-logs", f"{run_id}-{os.getpid()}")


def log_path(out: str, run_id: str, name: str) -> str:
    return os.path.join(log_dir(out, run_id), name)


def read_dataset(out: str) -> ds.Dataset:
    """The whole results folder as one dataset, partitioned by run (for ad-hoc analysis;
    exportsweep's own readers go through :func:`orchestrator.results.runs.read_run`, which checks
    the files first)."""
    loc = storage.location(out)
    return ds.dataset(loc.root, filesystem=loc.fs, format="parquet", partitioning="hive",
                      schema=SCHEMA)
