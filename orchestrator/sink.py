"""Write result rows as a hive-partitioned Parquet dataset, crash-safely.

Each flush is one small file written under a dot-prefixed temporary name,
fsync'ed, then renamed into ``DIR/run_id=<id>/``.  Readers (pyarrow.dataset,
DuckDB) skip dot-files, so a crash at any moment leaves either a whole file or
nothing; a single long-lived ParquetWriter would leave an unreadable file.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from exporter.schema import SCHEMA, to_table


# Metadata beside the rows starts with "_" so that dataset readers (pyarrow, DuckDB's
# hive globbing) skip it, as they skip Hadoop's _SUCCESS: ds.dataset(DIR) must stay readable.
RUN_META = "_run.json"
LOG_DIR = "_logs"


def run_dir(out: str, run_id: str) -> str:
    return os.path.join(out, f"run_id={run_id}")


class ResultSink:
    """Appends rows of one run; every :meth:`write` publishes one atomic Parquet file."""

    def __init__(self, out: str, run_id: str) -> None:
        self.out, self.run_id = out, run_id
        self.dir = run_dir(out, run_id)
        os.makedirs(self.dir, exist_ok=True)
        self.files_written = 0
        self.rows_written = 0

    def write(self, rows: list[dict[str, Any]]) -> str | None:
        if not rows:
            return None
        name = f"part-{self.files_written:05d}-{uuid.uuid4().hex[:8]}.parquet"
        final = os.path.join(self.dir, name)
        tmp = os.path.join(self.dir, f".{name}.tmp")
        pq.write_table(to_table(rows), tmp, compression="zstd")
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(self.dir)
        self.files_written += 1
        self.rows_written += len(rows)
        return final

    def write_json(self, name: str, payload: dict[str, Any]) -> str:
        final = os.path.join(self.dir, name)
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(self.dir)
        return final

    def log_path(self, name: str) -> str:
        return log_path(self.out, self.run_id, name)


def log_path(out: str, run_id: str, name: str) -> str:
    return os.path.join(run_dir(out, run_id), LOG_DIR, name)


def read_dataset(out: str) -> ds.Dataset:
    """The whole results folder as one dataset, partitioned by run."""
    return ds.dataset(out, format="parquet", partitioning="hive", schema=SCHEMA)


def _fsync(path: str) -> None:
    """Flush a file's data, or a directory's entries (so a rename survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
