"""Run references on the command line: ids a new run may take, and runs that must exist."""

from __future__ import annotations

from exporter.errors import UsageError
from orchestrator.results.runs import run_exists


def valid_run_id(run_id: str) -> bool:
    return bool(run_id) and all(c.isalnum() or c in "._-" for c in run_id) and run_id[0] != "."


def require_run(folder: str, run_id: str, prefix: str = "") -> None:
    if not run_exists(folder, run_id):
        raise UsageError(f"{prefix}no run {run_id!r} in {folder}")


__all__ = ["require_run", "run_exists", "valid_run_id"]
