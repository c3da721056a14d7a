"""A sweep's lifecycle: select the work, record the run, execute, and close the run.

Execution happens on Ray (:mod:`orchestrator.execute.ray.cluster`) or, for ``--in-process``
and ``repro``-like use, in this process one entry after another.  Either way each entry goes
through :func:`orchestrator.execute.entry.run_one`, and the rows stream into the sink as
entries finish.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

import structlog

import exporter
from exporter.environments import CURRENT
from exporter.errors import UsageError
from exporter.freshload import FreshLoader
from exporter.manifest import Manifest
from exporter.schema import RowContext
from exporter.spec import Entry
from orchestrator.execute import console, logs
from orchestrator.execute.config import RayConfig, SweepConfig
from orchestrator.execute.scheduling import WorkItem, order_items, pending_items
from orchestrator.results.claim import claim_run, check_out
from orchestrator.results.clusters import CLUSTER_COLUMNS, cluster_rows, write_clusters
from orchestrator.results.compact import CompactError, compact_run
from orchestrator.results.history import entry_history
from orchestrator.results.layout import RunMeta
from orchestrator.results.runs import final_pairs, read_meta, read_run
from orchestrator.results.sink import ResultSink


def open_run(manifest: Manifest, config: SweepConfig) -> RunMeta:
    """Claim a new run, or check that a resume selects what the run selected; returns the
    run's record with this execution appended to its history (not yet written).

    A new run's id is claimed atomically (a second run with the id gets a UsageError). A
    resume whose manifest or options would select other pairs is refused unless ``force``,
    which is recorded: a run never silently shrinks or changes meaning."""
    selection = selection_of(manifest, config)
    attempt = {"started_at": _iso(time.time()), "command_line": list(config.command_line),
               "host": platform.node()}
    if not config.resume:
        claim_run(config.out, config.run_id)
        meta = run_metadata(manifest, config, manifest.select(list(config.only)), time.time())
        meta.selection = selection
        meta.history = [attempt]
        return meta
    check_out(config.out)
    meta, problems = read_meta(config.out, config.run_id)
    if meta is None:
        if not config.force:
            raise UsageError(f"--resume {config.run_id}: {problems[0] if problems else 'no record'}"
                             f"; what the run selected is unknown (--force resumes it with "
                             f"this command's selection)")
        meta = run_metadata(manifest, config, manifest.select(list(config.only)), time.time())
        attempt["forced"] = ["the run had no readable record"]
    else:
        changed = [f"{k}: {_show(meta.selection.get(k))} -> {_show(v)}"
                   for k, v in selection.items() if meta.selection.get(k) != v]
        if changed and not config.force:
            raise UsageError(f"--resume {config.run_id}: this command selects other pairs than "
                             f"the run did ({'; '.join(changed)}); resume with the run's own "
                             f"manifest and options, or add --force (recorded in the run)")
        if changed:
            attempt["forced"] = changed
    meta.selection = selection
    meta.history.append(attempt)
    meta.finished_at = None
    return meta


def selection_of(manifest: Manifest, config: SweepConfig) -> dict[str, Any]:
    """What decides a run's (entry, mode) pairs and their verdicts."""
    return {"manifest_sha256": manifest_hash(manifest), "only": sorted(config.only),
            "modes": sorted(config.modes) if config.modes else None,
            "pipeline": {"draft_export": config.pipeline.draft_export,
                         "aoti": config.pipeline.aoti,
                         # only when set, so runs from before the option still resume
                         **({"dynamic": "discover"} if config.pipeline.discover_dynamic
                            else {})},
            "timeout_s": config.timeout_s,
            # only when declared, so single-environment runs from before still resume
            **({"environments": sorted(config.environments)}
               if list(config.environments) != [CURRENT] else {})}


def _show(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 20 else text[:19] + "…"


def run_sweep(manifest: Manifest, config: SweepConfig, ray_config: RayConfig | None = None,
              *, out: TextIO = sys.stdout, meta: RunMeta | None = None) -> RunMeta:
    """Run (or resume) a sweep on Ray, or in this process when ``ray_config`` is None.

    ``meta``: the record :func:`open_run` returned (the CLI opens the run before it starts
    logging into the run's folder); opened here when not given. Rows are written as each
    entry finishes; ``_run.json`` records the run. Returns that record. Model failures never
    raise; orchestrator failures raise OrchestratorError, bad input UsageError.
    """
    meta = open_run(manifest, config) if meta is None else meta
    entries = manifest.select(list(config.only))
    sink = ResultSink(config.out, config.run_id, config.flush_interval_s)
    if not structlog.is_configured():       # called as a library, not through the CLI
        logs.configure(sink.log_path("driver.jsonl"))
    logger = structlog.get_logger("exportsweep.sweep").bind(run=config.run_id, worker="driver")
    done = final_pairs(config.out, config.run_id) if config.resume else set()
    items = pending_items(entries, done, config.modes, environments=list(config.environments))
    if config.schedule != "manifest":
        history = entry_history(config.out, exclude=(config.run_id,),
                                wanted={i.entry.name for i in items})
        items = order_items(items, history.seconds, config.schedule)
        logger.info("schedule", order=config.schedule, runs=list(history.runs),
                    known=sum(i.entry.name in history.seconds for i in items),
                    estimated=sum(i.entry.name not in history.seconds for i in items),
                    problems=list(history.problems))
    started = time.time()
    attempt = meta.history[-1]
    meta.executor = attempt["executor"] = "in-process" if ray_config is None else "ray"
    meta.expected_pairs = len(done) + sum(len(i.modes) for i in items)
    if config.resume:
        meta.resumed_from_rows = attempt["resumed_from_rows"] = len(done)
    sink.write_meta(meta)
    logger.info("sweep started", entries=len(items), already_done=len(done), out=sink.dir,
                executor=meta.executor)
    progress = console.Progress(total=sum(len(i.modes) for i in items), stream=out)
    try:
        if ray_config is None:
            _run_in_process(items, manifest, config, sink, logger, progress.rows_done)
        else:
            # Imported here: an in-process sweep never needs Ray, nor pays for importing it.
            from orchestrator.execute.ray.cluster import run_on_ray
            meta.cluster = attempt["cluster"] = run_on_ray(items, manifest, config, ray_config,
                                                           sink, progress.rows_done,
                                                           known_facts=meta.environments)
            probed = meta.cluster.pop("environments", None)
            if probed:
                meta.environments = {**(meta.environments or {}), **probed}
    finally:
        sink.flush()          # rows gathered for an object store: never lost on the way out
    progress.close()
    finished = time.time()
    attempt.update(finished_at=_iso(finished), wall_s=round(finished - started, 2))
    meta.finished_at = _iso(finished)
    # A resumed run's wall time is that of all its executions.
    meta.wall_s = round(sum(a.get("wall_s") or 0.0 for a in meta.history), 2)
    written = read_run(config.out, config.run_id, meta,
                       columns=console.SUMMARY_COLUMNS + CLUSTER_COLUMNS)
    final = written.final_rows
    found = cluster_rows(final)
    write_clusters(config.out, config.run_id, found)
    # The file list lets readers tell a complete run from one that lost files later.
    meta.counts, meta.rows = console.count_statuses(final), len(final)
    meta.parts, meta.clusters = written.parts, len(found)
    sink.write_meta(meta)
    logger.info("sweep finished", wall_s=meta.wall_s, counts=meta.counts,
                problems=written.problems)
    if config.compact:
        try:
            logger.info("run compacted", summary=compact_run(config.out, config.run_id).summary())
        except CompactError as exc:        # the rows are safe as they are: say so, go on
            logger.warning("run not compacted", reason=str(exc))
            out.write(f"not compacted: {exc}\n")
    sink.publish_logs()
    console.summary(final, sink.dir, meta.wall_s, stream=out, clusters=found)
    return meta


def _run_in_process(items: list[WorkItem], manifest: Manifest, config: SweepConfig,
                    sink: ResultSink, logger: Any, on_rows: Callable[[list[dict[str, Any]]], None]
                    ) -> None:
    # Imported here: a sweep on Ray never runs a model in the driver, which then need not pay
    # for torch (half a gigabyte of RSS).
    from orchestrator.execute.entry import run_one
    ctx = RowContext(run_id=config.run_id, torch_version=installed_torch_version(),
                     exportsweep_version=exporter.__version__)
    logger = logger.bind(worker=ctx.worker_id, env=ctx.env)
    with FreshLoader(log_path=sink.log_path("freshload.log")) as loader:
        loader.start()
        for item in items:
            rows = run_one(item.entry, item.modes, config.pipeline, ctx, manifest.path, loader,
                           logger)
            sink.write(rows)
            on_rows(rows)


def run_metadata(manifest: Manifest, config: SweepConfig, entries: tuple[Entry, ...],
                 started: float) -> RunMeta:
    return RunMeta(
        run_id=config.run_id,
        manifest=os.path.abspath(manifest.path),
        manifest_sha256=manifest_hash(manifest),
        manifest_files=[os.path.abspath(f) for f in manifest.files],
        command_line=list(config.command_line),
        selected_entries=len(entries),
        only=list(config.only),
        pipeline={k: getattr(config.pipeline, k) for k in config.pipeline.__dataclass_fields__},
        versions={"exportsweep": exporter.__version__, "torch": installed_torch_version(),
                  "python": platform.python_version(), "git_commit": _git_commit()},
        resources={"cpus": os.cpu_count(), "memory_gb": _memory_gb(),
                   "hostname": platform.node()},
        started_at=_iso(started),
    )


def installed_torch_version() -> str | None:
    """torch's ``__version__`` (``2.14.1+cu130``: the build counts), read from its
    ``version.py`` without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
        folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations \
            else None
        with open(os.path.join(folder, "version.py")) as f:   # type: ignore[arg-type]
            found = re.search(r"^__version__\s*(?::\s*str\s*)?=\s*['\"]([^'\"]+)['\"]",
                              f.read(), re.M)
    except (OSError, TypeError, ImportError, ValueError):
        found = None
    if found:
        return found.group(1)
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def manifest_hash(manifest: Manifest) -> str:
    digest = hashlib.sha256()
    for path in manifest.files:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _git_commit() -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
