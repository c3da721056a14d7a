"""What an export worker does, in the worker's own process (``worker.py`` is the actor's
torch-free shell): it runs the whole pipeline for one entry per call, or a batch of cheap
ones (see ``scheduling.BatchPolicy``).

It is deliberately thin: :func:`orchestrator.execute.entry.run_one` does the work, exactly as
the in-process executor does; the worker adds where the rows ran (worker, pool, node,
attempt) and its memory.  It never retries anything: the supervisor owns every retry
decision (``max_restarts=0``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from dataclasses import replace
from typing import Any

import ray
import structlog
import torch

import exporter
from exporter.freshload import FreshLoader, LoadRequest
from exporter.pipeline import rss_bytes
from exporter.schema import RowContext
from exporter.spec import Entry, PipelineOptions
from orchestrator.execute.crossload import crossload_row
from orchestrator.execute.entry import run_one


class WorkerRuntime:
    """Created by :class:`orchestrator.execute.ray.worker.ExportWorker` in the actor."""

    def __init__(self, worker_id: str, pool: str, run_id: str, manifest_path: str,
                 options: PipelineOptions, threads: int, log_dir: str | None,
                 env: str) -> None:
        self.worker_id, self.pool, self.run_id, self.env = worker_id, pool, run_id, env
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
        torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),))

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": self.node_id, "hostname": socket.gethostname(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "cuda": self.cuda,
                "env": self.env, "torch": str(torch.__version__), "python": sys.executable}

    def run(self, entry: Entry, modes: tuple[str, ...], attempt: int) -> dict[str, Any]:
        """Run one entry; return {"rows": [...], "rss_mb": float} with only plain values."""
        return {"rows": self._rows(entry, modes, attempt), "rss_mb": round(rss_bytes() / 2**20, 1)}

    def run_handing_over(self, entry: Entry, modes: tuple[str, ...], attempt: int
                         ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run one entry and hand over its programs that reloaded fine, for the other
        environments to load (the cross-version stage): (what ``run`` returns plus the list
        of (mode, kind) handed over, the programs with their files' bytes). Called with
        ``num_returns=2``, so the driver fetches only the first: the programs go from the
        object store straight to the workers that load them."""
        with tempfile.TemporaryDirectory(prefix="exportsweep-handoff-") as folder:
            rows = self._rows(entry, modes, attempt, replace(self.options, handoff_dir=folder))
            programs = []
            for name in sorted(os.listdir(folder)):
                if not name.endswith(".json"):
                    continue
                stem = os.path.join(folder, name[:-len(".json")])
                with open(stem + ".json") as f:
                    program = json.load(f)
                with open(stem + ".pt2", "rb") as f:
                    program["artifact"] = f.read()
                with open(stem + ".io.pt", "rb") as f:
                    program["data"] = f.read()
                programs.append(program)
        result = {"rows": rows, "rss_mb": round(rss_bytes() / 2**20, 1),
                  "handed_over": [(p["mode"], p["kind"]) for p in programs]}
        return result, programs

    def crossload(self, entry: Entry, programs: list[dict[str, Any]], from_env: str,
                  from_torch: str) -> list[dict[str, Any]]:
        """Load and run programs another environment saved, each in a fresh process here,
        against that environment's eager outputs: one cross-version row per program."""
        rows = []
        with tempfile.TemporaryDirectory(prefix="exportsweep-crossload-") as folder:
            for i, p in enumerate(programs):
                artifact = os.path.join(folder, f"{i}.pt2")
                data = os.path.join(folder, f"{i}.io.pt")
                with open(artifact, "wb") as f:
                    f.write(p["artifact"])
                with open(data, "wb") as f:
                    f.write(p["data"])
                request = LoadRequest(p["kind"], artifact, data, p["atol"], p["rtol"],
                                      device=p["device"] if self.cuda else "cpu",
                                      imports=tuple(p["imports"]), seed=p["seed"])
                result = self.loader.check(request, entry.timeout_s,
                                           os.path.join(folder, f"{i}.json"))
                rows.append(crossload_row(entry, p["mode"], p["kind"], from_env, from_torch,
                                          self.env, str(torch.__version__), result,
                                          self.worker_id, self.run_id))
        return rows

    def run_batch(self, items: list[tuple[Entry, tuple[str, ...], int]]) -> dict[str, Any]:
        """Run cheap entries one after another in one call (the supervisor batches only
        entries that take milliseconds); rows grouped per entry."""
        rows = [self._rows(entry, modes, attempt) for entry, modes, attempt in items]
        return {"rows": rows, "rss_mb": round(rss_bytes() / 2**20, 1)}

    def _rows(self, entry: Entry, modes: tuple[str, ...], attempt: int,
              options: PipelineOptions | None = None) -> list[dict[str, Any]]:
        logger = structlog.get_logger("exportsweep.worker").bind(run=self.run_id,
                                                                 worker=self.worker_id,
                                                                 env=self.env)
        # str(): torch.__version__ is a TorchVersion, whose unpickling would import torch in
        # the driver (half a gigabyte) just to read the rows
        ctx = RowContext(run_id=self.run_id, worker_id=self.worker_id, attempt=attempt,
                         pool=self.pool, env=self.env, node_id=self.node_id,
                         torch_version=str(torch.__version__),
                         exportsweep_version=exporter.__version__)
        return run_one(entry, modes, options or self.options, ctx, self.manifest_path,
                       self.loader, logger)

    def shutdown(self) -> None:
        self.loader.close()
