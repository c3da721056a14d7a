"""Reading runs back: which runs a results folder holds, and one run's rows, checked.

Every reader of exportsweep (report, diff, junit, resume, compact) comes through here, so a
run that lost a file or holds a torn one is *reported* (``RunData.problems``) rather than
silently read short.  The checks, in order:

- each Parquet file's footer must read (a torn or truncated file does not);
- a finished run's ``_run.json`` lists its files and their row counts: a listed file that
  is gone, or holds another number of rows, is reported;
- ``_run.json`` knows how many (entry, mode) pairs the run set out to do: pairs without a
  final row are reported (an interrupted run; ``exportsweep run --resume`` finishes it).

A compacted file (``exportsweep compact``) names the files it replaces in its Parquet
metadata; readers skip those, so a reader racing the compaction never counts a row twice.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from exporter.errors import UsageError
from exporter.schema import SCHEMA, pair_key
from exporter.status import STATUSES
from exporter.text import quote
from orchestrator.results import storage
from orchestrator.results.layout import (ALIASES, REPLACES_KEY, RUN_META, RUN_PREFIX, RunMeta,
                                         check_run_id, is_rows_file, parse_run_meta,
                                         run_dir_name, run_id_problem)
from orchestrator.results.storage import Location


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    meta: RunMeta | None                # None: no readable _run.json
    problems: tuple[str, ...] = ()      # what is wrong with _run.json

    @property
    def started_at(self) -> str | None:
        return self.meta.started_at if self.meta else None

    @property
    def finished_at(self) -> str | None:
        return self.meta.finished_at if self.meta else None


@dataclass
class RunFiles:
    """The Parquet files a reader should read, and what is wrong with the folder."""

    parts: dict[str, int] = field(default_factory=dict)      # name -> rows (footer)
    sizes: dict[str, int] = field(default_factory=dict)      # name -> bytes
    problems: list[str] = field(default_factory=list)
    replaced: set[str] = field(default_factory=set)          # named by a compacted file


@dataclass
class RunData:
    run_id: str
    meta: RunMeta | None                # None: no readable _run.json
    rows: list[dict[str, Any]]          # every row, every attempt
    final_rows: list[dict[str, Any]]    # one per (entry, mode): the last attempt
    problems: list[str]
    parts: dict[str, int] = field(default_factory=dict)      # the files read: name -> rows


def run_ids(out: str) -> list[str]:
    """The ids of the runs in ``out``; folders whose name is no valid run id are not runs."""
    loc = storage.location(out)
    try:
        infos = storage.listing(loc, loc.root)
    except OSError:
        return []
    return sorted(name for name in (info.base_name[len(RUN_PREFIX):] for info in infos
                                    if info.type == storage.pafs.FileType.Directory
                                    and info.base_name.startswith(RUN_PREFIX))
                  if run_id_problem(name) is None)


def read_meta(out: str, run_id: str) -> tuple[RunMeta | None, list[str]]:
    """The run's record and what is wrong with it (see :func:`.layout.parse_run_meta`).
    A run without one is a problem too: nothing then says how many pairs it should hold."""
    loc = storage.location(out)
    try:
        data = storage.read_bytes(loc, loc.path(run_dir_name(run_id), RUN_META))
    except OSError as exc:
        return None, [f"{RUN_META} cannot be read ({_short(exc)})"]
    if data is None:
        return None, [f"no {RUN_META}: nothing says what the run set out to do or whether it "
                      f"finished; its rows are read as they are"]
    return parse_run_meta(data, run_id)


def list_runs(out: str) -> list[RunInfo]:
    """Every run in ``out``, oldest first (by start time, then id)."""
    runs = [RunInfo(run_id, *_info(read_meta(out, run_id))) for run_id in run_ids(out)]
    return sorted(runs, key=lambda r: (r.started_at or "", r.run_id))


def _info(read: tuple[RunMeta | None, list[str]]) -> tuple[RunMeta | None, tuple[str, ...]]:
    return read[0], tuple(read[1])


def run_exists(out: str, run_id: str) -> bool:
    loc = storage.location(out)
    return storage.is_dir(loc, loc.path(run_dir_name(run_id)))


def resolve_run(out: str, ref: str, runs: list[RunInfo] | None = None) -> str:
    """A run id from ``latest``, ``previous`` (the one before latest) or an id.  ``runs``:
    ``list_runs(out)`` when the caller has it (it reads every run's ``_run.json``)."""
    if ref not in ALIASES:
        check_run_id(ref, "run")
        if not run_exists(out, ref):
            known = run_ids(out)
            hint = f" (runs there: {', '.join(known[-5:])})" if known else " (it holds no runs)"
            raise UsageError(f"{out}: no run {quote(ref)}{hint}")
        return ref
    runs = list_runs(out) if runs is None else runs
    need = 1 if ref == "latest" else 2
    if len(runs) < need:
        raise UsageError(f"{out}: no {ref} run: it holds {len(runs)} run(s)")
    return runs[-need].run_id


def previous_run(out: str, run_id: str, runs: list[RunInfo] | None = None) -> str | None:
    ids = [r.run_id for r in (list_runs(out) if runs is None else runs)]
    if run_id not in ids:
        return None
    i = ids.index(run_id)
    return ids[i - 1] if i > 0 else None


def scan_run(loc: Location, run_id: str, meta: RunMeta | None, read: bool,
             columns: tuple[str, ...] | None = None) -> tuple[RunFiles, dict[str, pa.Table]]:
    """Open every Parquet file of the run once (in parallel: an object store answers each
    request in tens of ms), check it, and with ``read`` keep its rows, conformed to the
    schema (to these ``columns`` of it only).  Nothing here raises for damage: it becomes
    ``RunFiles.problems``."""
    schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
    folder = loc.path(run_dir_name(run_id))
    found = RunFiles()
    try:
        infos = storage.listing(loc, folder)
    except OSError as exc:
        found.problems.append(f"the run's folder cannot be listed ({_short(exc)})")
        return found, {}
    sizes = {info.base_name: info.size or 0 for info in infos
             if info.type == storage.pafs.FileType.File and is_rows_file(info.base_name)}
    names = sorted(sizes)

    def open_one(name: str) -> tuple[int, list[str], pa.Table | None]:
        pf = storage.open_parquet(loc, posixpath.join(folder, name))
        replaces = _replaced_names((pf.schema_arrow.metadata or {}).get(REPLACES_KEY.encode()))
        table = None
        if read:
            present = [c for c in schema.names if c in pf.schema_arrow.names]
            table = conform(pf.read(columns=present if columns is not None else None), schema)
        return pf.metadata.num_rows, replaces, table

    footers: dict[str, int] = {}
    tables: dict[str, pa.Table] = {}
    replaced: set[str] = set()
    replacers: set[str] = set()          # compacted files (they name what they replace)
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as pool:
        futures = {pool.submit(open_one, n): n for n in names}
        for future in futures:
            name = futures[future]
            try:
                rows, replaces, table = future.result()
            except SchemaMismatch as exc:
                found.problems.append(f"{name}: {exc}; its rows are not counted")
                continue
            except (pa.ArrowException, OSError, ValueError) as exc:
                found.problems.append(f"{name}: torn or unreadable Parquet file, its rows are "
                                      f"not counted ({_short(exc)})")
                continue
            footers[name] = rows
            replaced.update(replaces)
            if replaces:
                replacers.add(name)
            if table is not None:
                tables[name] = table
    found.replaced = replaced
    found.parts = {n: rows for n, rows in footers.items() if n not in replaced}
    found.sizes = {n: sizes[n] for n in found.parts}
    listed = meta.parts if meta else None
    if listed is not None and meta is not None and meta.finished_at:
        for name, rows in sorted(listed.items()):
            if name in replaced:
                continue
            if name not in footers and not any(p.startswith(f"{name}:") for p in found.problems):
                found.problems.append(f"{name}: listed in {RUN_META} with {rows} rows but missing")
            elif name in footers and footers[name] != rows:
                found.problems.append(f"{name}: holds {footers[name]} rows, {RUN_META} "
                                      f"says {rows}")
        for name in sorted(set(found.parts) - set(listed) - replacers):
            found.problems.append(f"{name}: not listed in {RUN_META} (written after the run "
                                  f"finished, or copied in); its rows are counted")
    return found, {n: t for n, t in tables.items() if n in found.parts}


class SchemaMismatch(ValueError):
    """A file's column holds values of another type than the schema's."""


def conform(table: pa.Table, schema: pa.Schema = SCHEMA) -> pa.Table:
    """``table`` with exactly the columns of ``schema`` (the row schema or a projection of
    it).  Files of an older schema version lack
    newer columns (read as null: the schema only ever grows by nullable columns); unknown
    columns are dropped; a column of another type than the schema's is damage, never cast
    (an int column cast to strings would read as plausible names), and the file is refused
    (:class:`SchemaMismatch`)."""
    columns = []
    for fld in schema:
        if fld.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, fld.type))
            continue
        column = table.column(fld.name)
        if column.type != fld.type:
            raise SchemaMismatch(f"column {fld.name!r} is {column.type}, the schema says "
                                 f"{fld.type}")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _replaced_names(raw: bytes | None) -> list[str]:
    if not raw:
        return []
    names = json.loads(raw)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{REPLACES_KEY} metadata is not a list of file names")
    return names


# What picking the final rows needs, whatever else a reader asks for.
FINAL_KEYS = ("entry", "mode", "env", "status", "attempt", "final", "finished_at")


def read_run(out: str, run_id: str, meta: RunMeta | None = None,
             columns: tuple[str, ...] | None = None) -> RunData:
    """All of a run's rows (checked), its final rows and what is wrong with it.  ``meta``:
    the run's record when the caller holds a newer one than ``_run.json`` (the sweep, at its
    end, before writing it).  ``columns``: read only these (and :data:`FINAL_KEYS`): a
    100,000-row run as dicts of every column is gigabytes."""
    if columns is not None:
        columns = tuple(dict.fromkeys((*FINAL_KEYS, *columns)))
    loc = storage.location(out)
    problems: list[str] = []
    if meta is None:
        meta, meta_problems = read_meta(out, run_id)
        problems += meta_problems
    files, tables = scan_run(loc, run_id, meta, read=True, columns=columns)
    problems = list(files.problems) + problems
    rows, row_problems = _checked_rows([tables[n] for n in sorted(tables)])
    problems += row_problems
    final = final_rows_of(rows)
    expected = meta.expected_pairs if meta else None
    if expected is not None and meta is not None and len(final) < expected:
        state = "finished" if meta.finished_at else "not finished (running or interrupted)"
        problems.append(f"{expected - len(final)} of {expected} (entry, mode) pairs have no "
                        f"result: the run is {state}; `exportsweep run MANIFEST --out {out} "
                        f"--resume {run_id}` completes it")
    elif meta is not None and not meta.finished_at:
        problems.append("the run has not finished (running or interrupted)")
    if not rows and not any("no result" in p for p in problems):
        problems.append("the run has no rows")
    return RunData(run_id, meta, rows, final, problems, files.parts)


def read_final_rows(out: str, run_id: str) -> list[dict[str, Any]]:
    return read_run(out, run_id).final_rows


def final_pairs(out: str, run_id: str) -> set[tuple[str, str, str]]:
    return {pair_key(r) for r in read_final_rows(out, run_id)}


def final_rows_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (entry, mode, environment): among rows marked final, the last attempt
    wins."""
    def order(r: dict[str, Any]) -> tuple[int, float]:
        return r["attempt"] or 0, r["finished_at"].timestamp() if r["finished_at"] else 0.0

    chosen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in sorted((r for r in rows if r.get("final")), key=order):
        chosen[pair_key(r)] = r
    return list(chosen.values())


def _checked_rows(tables: list[pa.Table]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows, and what is wrong with them: a row without an entry or mode cannot be
    placed and is not counted; an unknown status is an error, never a pass."""
    if not tables:
        return [], []
    rows = pa.concat_tables(tables).to_pylist()
    placed = [r for r in rows if isinstance(r["entry"], str) and r["entry"]
              and isinstance(r["mode"], str) and r["mode"]]
    problems = []
    if len(placed) < len(rows):
        problems.append(f"{len(rows) - len(placed)} row(s) without an entry name or mode: "
                        f"not counted")
    unknown = Counter(r["status"] for r in placed if r["status"] not in STATUSES)
    for status, n in sorted(unknown.items(), key=lambda kv: str(kv[0])):
        problems.append(f"{n} row(s) with an unknown status {quote(status)}: counted as "
                        f"errors, never as passes")
    return placed, problems


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
