"""``exportsweep compact``: merge a finished run's small Parquet files into one, crash-safely.

A sweep writes one small file per finished entry (crash safety); thousands of them slow every
reader down.  Compaction refuses a run that is not finished or whose files are damaged, writes
every row, unchanged and in file order, to one new file, reads it back and compares the
multiset of row hashes with the originals, and only then replaces the originals.

The replacement is what must survive a kill at any instant, for exportsweep's readers and for
plain glob readers (DuckDB over ``DIR/*/*.parquet``, pyarrow datasets) alike:

- **Local disks: one atomic exchange.**  The new file and the new ``_run.json`` are staged in
  ``DIR/_compacting/<run>-<uuid>/`` (files there lie one level too deep for ``*/*.parquet``
  and under ``_``, which dataset readers skip), then ``renameat2(RENAME_EXCHANGE)`` swaps the
  staged folder and the run's folder in one step: every reader sees either the original
  files or the merged one, never both, never neither.  The old folder (now the staging path)
  gives its ``_logs`` back and is deleted.  A kill before the exchange leaves the run as it
  was; after it, the run is compacted and only the clean-up is left.  The next ``compact``
  (of any run) finishes or discards what a killed one left: the run's ``_run.json`` says
  which staging folder it came from.
- **Object stores (and filesystems without RENAME_EXCHANGE): replace by metadata.**  The
  merged file names the files it replaces in its Parquet metadata; exportsweep's readers skip
  replaced files, so they never count a row twice.  Between the publish and the deletes
  (and after a kill there, until the next ``compact`` deletes the leftovers) a plain glob
  reader can see both; docs/reliability.md says so.

Other runs in the same folder are never touched.  A ``flock`` on
``DIR/_compacting/<run>.lock`` keeps two compactions of one run apart; the kernel drops it
when its holder dies, so a killed compaction never blocks the next.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

from exporter.errors import ExportsweepError
from orchestrator.results import storage
from orchestrator.results.layout import (REPLACES_KEY, RUN_META, RunMeta, compacted_name,
                                         is_rows_file, run_dir_name)
from orchestrator.results.runs import read_meta, scan_run

STAGING_DIR = "_compacting"


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
    recovered: int = 0          # leftovers of a killed compaction finished or discarded

    def summary(self) -> str:
        fixed = f" (finished {self.recovered} interrupted step(s) first)" if self.recovered \
            else ""
        if self.output is None:
            return f"run {self.run_id}: already one file ({self.rows} rows), nothing to do{fixed}"
        return (f"run {self.run_id}: {self.files_before} files -> 1 ({self.output}), "
                f"{self.rows} rows unchanged (row hashes match), "
                f"{self.bytes_before / 1024:.0f} KiB -> {self.bytes_after / 1024:.0f} KiB{fixed}")


def compact_run(out: str, run_id: str,
                on_step: Callable[[str], None] | None = None) -> CompactResult:
    """Compact one finished run.  ``on_step(name)`` is called after each step that changes
    the folder (tests kill the compaction there)."""
    step = on_step or (lambda name: None)
    loc = storage.location(out)
    folder = loc.path(run_dir_name(run_id))
    with _lock(loc, run_id):
        recovered = _recover(loc, run_id, step)
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
            return CompactResult(run_id, len(names), sum(files.parts.values()), None, 0, 0,
                                 recovered)
        sizes = sum(files.sizes.values())
        merged = pa.concat_tables([tables[n] for n in names])
        before = Counter(row_hashes(merged))
        output = compacted_name()
        meta.parts = {output: merged.num_rows}
        if loc.local and _exchange_supported(loc.root):
            size = _compact_by_exchange(loc, run_id, folder, merged, before, output, names,
                                        sizes, meta, step)
        else:
            size = _compact_by_metadata(loc, folder, merged, before, output, names, sizes, meta,
                                        step)
        return CompactResult(run_id, len(names), merged.num_rows, output, sizes, size,
                             recovered)


def _compact_by_exchange(loc: storage.Location, run_id: str, folder: str, merged: pa.Table,
                         before: Counter[str], output: str, names: list[str], sizes: int,
                         meta: RunMeta, step: Callable[[str], None]) -> int:
    stage_name = f"{run_id}-{uuid.uuid4().hex[:8]}"
    stage = loc.path(STAGING_DIR, stage_name)
    os.makedirs(stage)
    size = storage.publish_table(loc, posixpath.join(stage, output), merged,
                                 metadata={REPLACES_KEY: json.dumps(names)})
    _verify(loc, posixpath.join(stage, output), before, run_id)
    meta.compacted = {"files": len(names), "bytes_before": sizes, "bytes_after": size,
                      "staging": stage_name}
    storage.publish_bytes(loc, posixpath.join(stage, RUN_META), meta.dumps().encode())
    step("staged")
    _rename_exchange(stage, folder)            # the one instant readers switch over
    step("exchanged")
    _finish_exchange(loc, folder, stage, step)
    return size


def _finish_exchange(loc: storage.Location, folder: str, old: str,
                     step: Callable[[str], None]) -> None:
    """After the exchange ``old`` holds the original folder: give back what is not rows nor
    the old record (``_logs`` and anything else someone keeps there), then delete it."""
    for name in sorted(os.listdir(old)):
        if is_rows_file(name) or name == RUN_META or name.startswith("."):
            continue
        if not os.path.exists(os.path.join(folder, name)):
            os.rename(os.path.join(old, name), os.path.join(folder, name))
            step(f"moved back {name}")
    shutil.rmtree(old)
    step("cleaned")


def _compact_by_metadata(loc: storage.Location, folder: str, merged: pa.Table,
                         before: Counter[str], output: str, names: list[str], sizes: int,
                         meta: RunMeta, step: Callable[[str], None]) -> int:
    target = posixpath.join(folder, output)
    size = storage.publish_table(loc, target, merged, metadata={REPLACES_KEY: json.dumps(names)})
    try:
        _verify(loc, target, before, meta.run_id)
    except CompactError:
        storage.delete(loc, target)
        raise
    step("published")
    meta.compacted = {"files": len(names), "bytes_before": sizes, "bytes_after": size}
    storage.publish_bytes(loc, posixpath.join(folder, RUN_META), meta.dumps().encode())
    step("recorded")
    for name in names:
        storage.delete(loc, posixpath.join(folder, name))
    step("cleaned")
    return size


def _recover(loc: storage.Location, run_id: str, step: Callable[[str], None]) -> int:
    """Finish or discard what a killed compaction of ``run_id`` left; returns how many
    leftovers it dealt with."""
    fixed = 0
    folder = loc.path(run_dir_name(run_id))
    # Exchange protocol: staging folders of this run.
    if loc.local:
        staging_root = loc.path(STAGING_DIR)
        meta, _ = read_meta(loc.uri, run_id)
        current = (meta.compacted or {}).get("staging") if meta else None
        for name in sorted(os.listdir(staging_root)) if os.path.isdir(staging_root) else []:
            path = os.path.join(staging_root, name)
            if not os.path.isdir(path) or not name.startswith(f"{run_id}-"):
                continue
            if name == current:          # exchanged: it holds the original folder
                _finish_exchange(loc, folder, path, step)
            else:                        # never exchanged: a staged copy nobody reads
                shutil.rmtree(path)
            fixed += 1
    # Metadata protocol: originals a published compacted file replaces.
    files, _ = scan_run(loc, run_id, None, read=False)
    present = {info.base_name for info in storage.listing(loc, folder)}
    for name in sorted(files.replaced & present):
        storage.delete(loc, posixpath.join(folder, name))
        fixed += 1
    return fixed


def _verify(loc: storage.Location, path: str, before: Counter[str], run_id: str) -> None:
    if Counter(row_hashes(storage.open_parquet(loc, path).read())) != before:
        raise CompactError(f"run {run_id}: the merged file's rows differ from the originals; "
                           f"nothing was changed")


def row_hashes(table: pa.Table) -> list[str]:
    """One stable hash per row over every column's value."""
    return [hashlib.sha256(json.dumps(row, sort_keys=True, default=_typed).encode()).hexdigest()
            for row in table.to_pylist()]


def _typed(value: Any) -> str:
    return f"{type(value).__name__}:{value!r}"


# -- the atomic exchange -----------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _renameat2() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return getattr(libc, "renameat2", None)


def _rename_exchange(a: str, b: str) -> None:
    fn = _renameat2()
    if fn is None or fn(_AT_FDCWD, a.encode(), _AT_FDCWD, b.encode(), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno() if fn is not None else errno.ENOSYS
        raise OSError(err, f"renameat2(RENAME_EXCHANGE) failed: {os.strerror(err)}", a)


def _exchange_supported(root: str) -> bool:
    """Whether this filesystem swaps two folders atomically (Linux ext4, xfs, btrfs, tmpfs)."""
    probe = os.path.join(root, STAGING_DIR, f".probe-{uuid.uuid4().hex[:8]}")
    a, b = probe + "-a", probe + "-b"
    try:
        os.makedirs(a)
        os.makedirs(b)
        _rename_exchange(a, b)
        return True
    except OSError:
        return False
    finally:
        for path in (a, b):
            shutil.rmtree(path, ignore_errors=True)


class _lock:
    """An exclusive ``flock`` on ``DIR/_compacting/<run>.lock`` (local disks; on object stores
    one compaction per run at a time is the operator's rule).  The kernel releases it when the
    holder dies, so a killed compaction never blocks the next one."""

    def __init__(self, loc: storage.Location, run_id: str) -> None:
        self.path = os.path.join(loc.path(STAGING_DIR), f"{run_id}.lock") if loc.local else None
        self.run_id = run_id
        self.fd: int | None = None

    def __enter__(self) -> "_lock":
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.fd)
                self.fd = None
                raise CompactError(f"run {self.run_id}: another compaction of this run is "
                                   f"running (it holds {self.path})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)       # releases the flock; the file stays, empty and harmless
