"""The cross-version stage's vocabulary: what a check of one saved program in another
environment becomes as a row of the cross-version table (``exporter.schema.CROSSLOAD_COLUMNS``).

A program that passed serialize (and, with ``--aoti``, its AOTInductor package) where it was
exported is handed over by that worker and loaded and run, in a fresh process, by a worker of
every other environment the entry runs in, against the exporting environment's eager outputs:
forward (older torch saves, newer loads) and backward (the other way) alike. Torch-free: the
driver builds rows for checks that never came back (a killed or hung worker).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from exporter import signature as sig
from exporter.freshload import LoadResult
from exporter.spec import Entry
from exporter.status import ERROR, FAIL, PASS
from exporter.taxonomy import (CATEGORY_BY_NAME, CROSS_VERSION_LOAD_ERROR,
                               CROSS_VERSION_MISMATCH, CROSSLOAD, RELOAD_MISMATCHES, Failure)


@dataclass(frozen=True)
class CrossLoad:
    """A work item's payload: run the programs ``from_env`` saved (an object reference to
    the list ``run_handing_over`` returned) in the item's environment."""

    from_env: str
    from_torch: str
    programs: Any                  # ray.ObjectRef of list[dict]
    handed_over: tuple[tuple[str, str], ...]   # (mode, kind) of each program, for fault rows
    device: str = "cpu"


def direction(from_torch: str, to_torch: str) -> str:
    """forward: saved by the older torch and loaded by the newer; backward: the other way."""
    a, b = _version(from_torch), _version(to_torch)
    if a is None or b is None:
        return "unknown"
    return "same" if a == b else "forward" if a < b else "backward"


def _version(text: str) -> Any:
    try:
        from packaging.version import Version
        return Version(text.split("+", 1)[0])
    except Exception:  # noqa: BLE001 - a version string packaging cannot read
        return None


def crossload_row(entry: Entry, mode: str, kind: str, from_env: str, from_torch: str,
                  to_env: str, to_torch: str, result: LoadResult | None, worker_id: str,
                  run_id: str, fault: Failure | None = None) -> dict[str, Any]:
    """One row of the cross-version table: a check's result, or (``fault``) why none came."""
    row: dict[str, Any] = {
        "run_id": run_id, "entry": entry.name, "family": entry.family, "mode": mode,
        "kind": kind, "from_env": from_env, "to_env": to_env, "from_torch": from_torch,
        "to_torch": to_torch, "direction": direction(from_torch, to_torch), "status": PASS,
        "category": None, "load_category": None, "exception_type": None, "message": None,
        "signature": None, "max_abs_err": None, "load_s": None, "run_s": None,
        "worker_id": worker_id, "finished_at": datetime.fromtimestamp(time.time(),
                                                                      tz=timezone.utc)}
    if fault is not None:
        row.update(status=ERROR, category=fault.category, exception_type=fault.exception_type,
                   message=fault.message, signature=fault.signature)
        return row
    assert result is not None
    row.update(max_abs_err=result.max_abs_err, load_s=round(result.load_s, 4),
               run_s=round(result.run_s, 4))
    if result.ok or result.failure is None:
        return row
    inner = result.failure
    known = CATEGORY_BY_NAME.get(inner.get("category") or "")
    if known is not None and known.infra:            # the loading process died or hung
        row.update(status=ERROR, category=inner["category"], load_category=inner["category"],
                   exception_type=inner.get("exception_type"),
                   message=sig.bounded_message(inner.get("message") or ""),
                   signature=inner.get("signature"))
        return row
    category = CROSS_VERSION_MISMATCH if inner.get("category") in RELOAD_MISMATCHES \
        else CROSS_VERSION_LOAD_ERROR
    failure = Failure.make(category, CROSSLOAD, inner.get("message") or "",
                           exception_type=inner.get("exception_type"),
                           error_code=inner.get("error_code"),
                           cause=f"{inner.get('category')}\n{inner.get('signature')}")
    row.update(status=FAIL, category=category, load_category=inner.get("category"),
               exception_type=failure.exception_type, message=failure.message,
               signature=failure.signature)
    return row
