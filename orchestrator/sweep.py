"""An in-process sweep: every selected entry, one after another, rows streamed to Parquet.

This is the reference executor (and what ``repro`` builds on); the Ray driver
runs the same ``exporter.pipeline.run_entry`` inside actors.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, TextIO

import structlog

import exporter
from exporter.freshload import FreshLoader
from exporter.manifest import Manifest
from exporter.pipeline import run_entry
from exporter.record import Record
from exporter.schema import RowContext, row
from exporter.spec import Entry, PipelineOptions
from orchestrator import console, logs
from orchestrator.clusters import cluster_rows, write_clusters
from orchestrator.compact import CompactError, compact_run
from orchestrator.scheduling import WorkItem, pending_items
from orchestrator.runs import final_pairs, read_run
from orchestrator.sink import RUN_META, ResultSink

if TYPE_CHECKING:
    from orchestrator.driver import RayConfig


@dataclass(frozen=True)
class SweepConfig:
    out: str
    run_id: str
    pipeline: PipelineOptions = PipelineOptions()
    only: tuple[str, ...] = ()
    modes: tuple[str, ...] | None = None     # restrict every entry to these modes
    resume: bool = False                     # run only the (entry, mode) pairs still missing
    flush_interval_s: float | None = None    # None: per entry locally, 10 s on object stores
    compact: bool = False                    # merge the run's files into one at the end
    command_line: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv))


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:4]


def repro_command(manifest_path: str) -> Callable[[str, str], str]:
    def make(entry: str, mode: str) -> str:
        return shlex.join(["exportsweep", "repro", manifest_path, entry, "--mode", mode])
    return make


def run_sweep(manifest: Manifest, config: SweepConfig, ray_config: "RayConfig | None" = None,
              *, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run (or resume) a sweep on Ray, or in this process when ``ray_config`` is None.

    Rows are written as each entry finishes; ``_run.json`` records the run. Returns that
    record. Model failures never raise; orchestrator failures raise OrchestratorError.
    """
    entries = manifest.select(list(config.only))
    sink = ResultSink(config.out, config.run_id, config.flush_interval_s)
    if not structlog.is_configured():       # called as a library, not through the CLI
        logs.configure(sink.log_path("driver.jsonl"))
    logger = structlog.get_logger("exportsweep.sweep").bind(run=config.run_id, worker="driver")
    done = final_pairs(config.out, config.run_id) if config.resume else set()
    items = pending_items(entries, done, config.modes)
    started = time.time()
    meta = run_metadata(manifest, config, entries, started)
    meta["executor"] = "in-process" if ray_config is None else "ray"
    meta["expected_pairs"] = len(done) + sum(len(i.modes) for i in items)
    if config.resume:
        meta["resumed_from_rows"] = len(done)
    sink.write_json(RUN_META, meta)
    logger.info("sweep started", entries=len(items), already_done=len(done), out=sink.dir,
                executor=meta["executor"])
    progress = console.Progress(total=sum(len(i.modes) for i in items), stream=out)
    try:
        if ray_config is None:
            _run_in_process(items, manifest, config, sink, logger, progress.rows_done)
        else:
            from orchestrator.raycluster import run_on_ray
            meta["cluster"] = run_on_ray(items, manifest, config, ray_config, sink,
                                         progress.rows_done)
    finally:
        sink.flush()          # rows gathered for an object store: never lost on the way out
    progress.close()
    finished = time.time()
    meta.update(finished_at=_iso(finished), wall_s=round(finished - started, 2))
    written = read_run(config.out, config.run_id, meta)
    final = written.final_rows
    found = cluster_rows(final)
    write_clusters(config.out, config.run_id, found)
    # The file list lets readers tell a complete run from one that lost files later.
    meta.update(counts=console.count_statuses(final), rows=len(final), parts=written.parts,
                clusters=len(found))
    sink.write_json(RUN_META, meta)
    logger.info("sweep finished", wall_s=meta["wall_s"], counts=meta["counts"],
                problems=written.problems)
    if config.compact:
        try:
            logger.info("run compacted", summary=compact_run(config.out, config.run_id).summary())
        except CompactError as exc:        # the rows are safe as they are: say so, go on
            logger.warning("run not compacted", reason=str(exc))
            out.write(f"not compacted: {exc}\n")
    sink.publish_logs()
    console.summary(final, sink.dir, meta["wall_s"], stream=out, clusters=found)
    return meta


def _run_in_process(items: list[WorkItem], manifest: Manifest, config: SweepConfig,
                    sink: ResultSink, logger: Any, on_rows: Callable[[list[dict[str, Any]]], None]
                    ) -> None:
    ctx = RowContext(run_id=config.run_id, torch_version=_torch_version(),
                     exportsweep_version=exporter.__version__)
    repro = repro_command(manifest.path)
    with FreshLoader(log_path=sink.log_path("freshload.log")) as loader:
        loader.start()
        for item in items:
            entry = item.entry
            with logs.captured_output(logger.bind(entry=entry.name)):
                records = run_entry(entry, config.pipeline, loader=loader,
                                    repro=lambda mode, e=entry: repro(e.name, mode),
                                    modes=item.modes, logger=logger)
            rows = [row(r, ctx) for r in records]
            sink.write(rows)
            for r in records:
                _log_record(logger, r)
            on_rows(rows)


def _log_record(logger: Any, record: Record) -> None:
    bound = logger.bind(entry=record.entry, mode=record.mode, stage=record.stage_reached)
    if record.status in ("FAIL", "ERROR"):
        bound.info("entry failed", status=record.status, category=record.category,
                      signature=record.signature, message=(record.message or "")[:300],
                      traceback=record.traceback)
    else:
        bound.info("entry finished", status=record.status, total_s=record.total_s)


def run_metadata(manifest: Manifest, config: SweepConfig, entries: tuple[Entry, ...],
                 started: float) -> dict[str, Any]:
    return {
        "run_id": config.run_id,
        "manifest": os.path.abspath(manifest.path),
        "manifest_sha256": manifest_hash(manifest),
        "manifest_files": [os.path.abspath(f) for f in manifest.files],
        "command_line": list(config.command_line),
        "selected_entries": len(entries),
        "only": list(config.only),
        "pipeline": {k: getattr(config.pipeline, k) for k in config.pipeline.__dataclass_fields__},
        "versions": {"exportsweep": exporter.__version__, "torch": _torch_version(),
                     "python": platform.python_version(), "git_commit": _git_commit()},
        "resources": {"cpus": os.cpu_count(), "memory_gb": _memory_gb(),
                      "hostname": platform.node()},
        "started_at": _iso(started),
        "finished_at": None,
    }


def manifest_hash(manifest: Manifest) -> str:
    digest = hashlib.sha256()
    for path in manifest.files:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _torch_version() -> str:
    import torch
    return torch.__version__


def _git_commit() -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
