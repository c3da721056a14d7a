"""Optional draft_export enrichment of an export failure (``--draft-export``).

draft_export runs the real model during tracing and reports *every* problem it
worked around, which is what a user needs to fix a failing model.  Its program
is not sound (it specializes data-dependent branches), so it never counts as a
pass: only its report is kept.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch

from exporter.record import Record

MAX_REPORT_CHARS = 4000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def enrich(record: Record, fresh: Callable[[], tuple[torch.nn.Module, tuple, dict]],
           dynamic_shapes: Any, strict: bool) -> None:
    """``fresh()`` gives an untouched copy of the model and its example inputs."""
    draft_export = getattr(torch.export, "draft_export", None)
    if draft_export is None:
        record.draft_report = "draft_export is not available in this torch"
        return
    model, args, kwargs = fresh()
    try:
        ep = draft_export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as exc:  # noqa: BLE001 - draft_export re-raises what it cannot fix
        record.draft_report = f"draft_export raised {type(exc).__name__}: {str(exc)[:500]}"
        return
    report = getattr(ep, "_report", None)   # private attribute: feature-detected
    if report is None:
        record.draft_report = "draft_export succeeded but exposes no report in this torch"
        return
    record.draft_failures = [_describe(f) for f in getattr(report, "failures", [])]
    text = _ANSI.sub("", str(report))
    record.draft_report = text[:MAX_REPORT_CHARS]


def _describe(failure: Any) -> str:
    kind = getattr(getattr(failure, "failure_type", None), "name", "UNKNOWN")
    data = getattr(failure, "data", {}) or {}
    detail = data.get("expr") or data.get("op") or data.get("reason") or ""
    return f"{kind}: {detail}" if detail else kind
