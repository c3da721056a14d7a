"""Failure clusters: one per root cause (signature), across every model and mode of a run.

People used to group export failures by hand in issue comments; here a run's
failing rows are grouped by their signature, largest first, and written as a
Parquet table of their own under ``DIR/_clusters/run_id=<id>/`` (next to the
results, and skipped by readers of the results because of the leading ``_``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import pyarrow as pa

from exporter.status import FAILED
from orchestrator.results import storage
from orchestrator.results.layout import clusters_file
from orchestrator.results.storage import Location

_STR_LIST = pa.list_(pa.string())
CLUSTER_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("signature", pa.string()), ("rows", pa.int32()),
    ("entries", _STR_LIST), ("n_entries", pa.int32()), ("categories", _STR_LIST),
    ("stages", _STR_LIST), ("modes", _STR_LIST), ("statuses", _STR_LIST),
    ("exception_type", pa.string()), ("error_code", pa.string()), ("message", pa.string()),
    ("user_frames", _STR_LIST), ("repro", pa.string()),
], metadata={"exportsweep.clusters_version": "1"})


# The row columns clustering reads (a reader can fetch only these).
CLUSTER_COLUMNS = ("run_id", "entry", "mode", "status", "signature", "category", "failed_stage",
                   "exception_type", "error_code", "message", "user_frame", "repro")


@dataclass
class Cluster:
    run_id: str
    signature: str
    rows: int
    entries: list[str]
    n_entries: int
    categories: list[str]
    stages: list[str]
    modes: list[str]
    statuses: list[str]
    exception_type: str | None
    error_code: str | None
    message: str | None          # one representative message
    user_frames: list[str]
    repro: str | None            # reruns one of the affected entries


def cluster_rows(rows: Iterable[dict[str, Any]]) -> list[Cluster]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] in FAILED and r.get("signature"):
            groups[r["signature"]].append(r)
    clusters = []
    for signature, members in groups.items():
        members.sort(key=lambda r: (r["entry"], r["mode"]))
        first = members[0]
        entries = sorted({r["entry"] for r in members})
        clusters.append(Cluster(
            run_id=first["run_id"], signature=signature, rows=len(members), entries=entries,
            n_entries=len(entries), categories=_distinct(members, "category"),
            stages=_distinct(members, "failed_stage"), modes=_distinct(members, "mode"),
            statuses=_distinct(members, "status"), exception_type=first["exception_type"],
            error_code=first["error_code"], message=first["message"],
            user_frames=_distinct(members, "user_frame"), repro=first["repro"]))
    return sorted(clusters, key=lambda c: (-c.rows, -c.n_entries, c.signature))


def _distinct(rows: list[dict[str, Any]], key: str) -> list[str]:
    return sorted({r[key] for r in rows if r.get(key)})


def clusters_path(loc: Location, run_id: str) -> str:
    return loc.path(*clusters_file(run_id))


def write_clusters(out: str, run_id: str, clusters: list[Cluster]) -> str:
    """Replace the run's clusters table atomically (it is recomputed after a resume)."""
    loc = storage.location(out)
    path = clusters_path(loc, run_id)
    storage.publish_table(loc, path, pa.Table.from_pylist([asdict(c) for c in clusters],
                                                          schema=CLUSTER_SCHEMA))
    return path


def read_clusters(out: str, run_id: str) -> list[dict[str, Any]]:
    loc = storage.location(out)
    path = clusters_path(loc, run_id)
    if not storage.exists(loc, path):
        return []
    return storage.open_parquet(loc, path).read().to_pylist()
