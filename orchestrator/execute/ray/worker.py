"""The export worker actor: a torch-free shell around :mod:`.runtime`.

The driver imports this module to create actors (Ray pickles the class by reference), so it
must not import torch: torch alone is half a gigabyte of RSS, which a driver holding 100,000
entries cannot spare. The heavy half is imported in ``__init__``, which runs in the worker's
own process.
"""

from __future__ import annotations

from typing import Any

from exporter.spec import Entry, PipelineOptions


class ExportWorker:
    """Wrapped with ``ray.remote`` by the supervisor; every call goes to the runtime."""

    def __init__(self, worker_id: str, pool: str, run_id: str, manifest_path: str,
                 options: PipelineOptions, threads: int, log_dir: str | None,
                 env: str) -> None:
        from orchestrator.execute.ray.runtime import WorkerRuntime   # in the worker's process
        self.runtime = WorkerRuntime(worker_id, pool, run_id, manifest_path, options, threads,
                                     log_dir, env)

    def ready(self) -> dict[str, Any]:
        return self.runtime.ready()

    def run(self, entry: Entry, modes: tuple[str, ...], attempt: int) -> dict[str, Any]:
        return self.runtime.run(entry, modes, attempt)

    def run_batch(self, items: list[tuple[Entry, tuple[str, ...], int]]) -> dict[str, Any]:
        return self.runtime.run_batch(items)

    def run_handing_over(self, entry: Entry, modes: tuple[str, ...], attempt: int
                         ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self.runtime.run_handing_over(entry, modes, attempt)

    def crossload(self, entry: Entry, programs: list[dict[str, Any]], from_env: str,
                  from_torch: str) -> list[dict[str, Any]]:
        return self.runtime.crossload(entry, programs, from_env, from_torch)

    def shutdown(self) -> None:
        self.runtime.shutdown()
