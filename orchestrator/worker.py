"""The export worker: a Ray actor that runs the whole pipeline for one entry at a time.

It is deliberately thin: ``exporter.pipeline.run_entry`` does the work and
returns plain records; the worker adds where and when they ran and makes sure
only plain, picklable rows leave the process.  It never retries anything: the
driver's supervisor owns every retry decision (``max_restarts=0``).
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from typing import Any

from exporter.spec import Entry, PipelineOptions


class ExportWorker:
    """Wrapped with ``ray.remote`` by the driver (so importing this module needs no Ray)."""

    def __init__(self, worker_id: str, pool: str, run_id: str, manifest_path: str,
                 options: PipelineOptions, threads: int, log_dir: str | None) -> None:
        import ray
        import torch

        from exporter.freshload import FreshLoader

        self.worker_id, self.pool, self.run_id = worker_id, pool, run_id
        self.manifest_path = manifest_path
        self.options = options
        torch.set_num_threads(max(1, threads))
        self.node_id = ray.get_runtime_context().get_node_id()
        self.cuda = torch.cuda.is_available()
        self.loader = FreshLoader(log_path=os.path.join(log_dir, f"freshload-{worker_id}.log")
                                  if log_dir else None)
        self.loader.start()
        self._warm_up()

    def _warm_up(self) -> None:
        """Pay the first export's one-time costs before the first deadline starts."""
        import torch
        torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),))

    def ready(self) -> dict[str, Any]:
        import ray
        return {"pid": os.getpid(), "node_id": self.node_id, "hostname": socket.gethostname(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "cuda": self.cuda}

    def run(self, entry: Entry, modes: tuple[str, ...], attempt: int) -> dict[str, Any]:
        """Run one entry; return {"rows": [...], "rss_mb": float} with only plain values."""
        import exporter
        import structlog
        import torch

        from exporter.pipeline import rss_bytes, run_entry
        from exporter.schema import RowContext
        from orchestrator.sweep import repro_command
        from orchestrator import logs

        logger = structlog.get_logger("exportsweep.worker").bind(
            run=self.run_id, worker=self.worker_id, attempt=attempt)
        repro = repro_command(self.manifest_path)
        ctx = RowContext(run_id=self.run_id, worker_id=self.worker_id, attempt=attempt,
                         pool=self.pool, node_id=self.node_id, torch_version=torch.__version__,
                         exportsweep_version=exporter.__version__)
        started = time.monotonic()
        with logs.captured_output(logger.bind(entry=entry.name)):
            records = run_entry(entry, self.options, loader=self.loader, modes=modes,
                                repro=lambda mode: repro(entry.name, mode), logger=logger)
        for record in records:
            logger.bind(entry=record.entry, mode=record.mode, stage=record.stage_reached).info(
                "entry finished", status=record.status, category=record.category,
                seconds=round(time.monotonic() - started, 2), traceback=record.traceback)
        return {"rows": travelling_rows(records, ctx), "rss_mb": round(rss_bytes() / 2**20, 1)}

    def shutdown(self) -> None:
        self.loader.close()


def travelling_rows(records: list[Any], ctx: Any) -> list[dict[str, Any]]:
    """Rows that are sure to pickle: a row that cannot travel to the driver is replaced by an
    INFRA_ERROR row saying why, instead of failing the whole call."""
    from exporter.record import new_record_like
    from exporter.schema import row
    from exporter.taxonomy import Failure

    out = []
    for record in records:
        candidate = row(record, ctx)
        try:
            pickle.dumps(candidate)
        except Exception as exc:  # noqa: BLE001
            clean = new_record_like(record)
            clean.fail(Failure.make("INFRA_ERROR", None, f"the result row could not be pickled: "
                                    f"{type(exc).__name__}: {exc}",
                                    exception_type=type(exc).__name__))
            candidate = row(clean, ctx)
        out.append(candidate)
    return out
