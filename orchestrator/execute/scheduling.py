"""What runs where and what happens after a fault: pure policy, no Ray, unit-testable.

The Ray driver owns the mechanism (actors, ray.wait, kills); this module owns
the decisions: routing an entry to a pool, pull-based dispatch, the retry
budget, and whether a worker should be recycled.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable

from exporter.spec import Entry
from exporter.taxonomy import CATEGORY_BY_NAME

POOLS = ("cpu", "gpu")


@dataclass(frozen=True)
class WorkItem:
    """One entry (with the modes still to run) at one attempt."""

    entry: Entry
    modes: tuple[str, ...]
    attempt: int = 1

    def retry(self) -> "WorkItem":
        return replace(self, attempt=self.attempt + 1)


def can_run(pool: str, device: str) -> bool:
    """``cuda`` entries only on GPU workers, ``cpu`` only on CPU workers, ``any`` on either."""
    return device == "any" or (device == "cuda") == (pool == "gpu")


class WorkQueue:
    """Entries waiting for a worker, in manifest order; each worker pulls the first it can run."""

    def __init__(self, items: Iterable[WorkItem] = ()) -> None:
        self._items: deque[WorkItem] = deque(items)

    def __len__(self) -> int:
        return len(self._items)

    def take(self, pool: str) -> WorkItem | None:
        for i, item in enumerate(self._items):
            if can_run(pool, item.entry.device):
                del self._items[i]
                return item
        return None

    def put(self, item: WorkItem) -> None:
        self._items.append(item)

    def unrunnable(self, pools: Iterable[str]) -> list[WorkItem]:
        """Remove and return the items no existing pool can ever run (e.g. cuda, no GPUs)."""
        pools = set(pools)
        stuck = [i for i in self._items if not any(can_run(p, i.entry.device) for p in pools)]
        for item in stuck:
            self._items.remove(item)
        return stuck


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 2          # a crashed or OOM-killed entry gets one more try by default

    def should_retry(self, category: str, attempt: int) -> bool:
        known = CATEGORY_BY_NAME.get(category)
        return known is not None and known.retried and attempt < self.max_attempts


@dataclass(frozen=True)
class RecyclePolicy:
    """Replace a worker after ``after`` entries or above ``max_rss_mb``: memory grows in one
    long process (3 GB after 40 models in the zoo survey), and a fresh worker is cheap."""

    after: int | None = None
    max_rss_mb: float | None = None

    def should_recycle(self, served: int, rss_mb: float | None) -> bool:
        if self.after is not None and served >= self.after:
            return True
        return self.max_rss_mb is not None and rss_mb is not None and rss_mb > self.max_rss_mb


def pending_items(entries: Iterable[Entry], done: set[tuple[str, str]],
                  modes: tuple[str, ...] | None = None) -> list[WorkItem]:
    """Work for a (resumed) run: every (entry, mode) without a final row yet."""
    items = []
    for entry in entries:
        wanted = tuple(m for m in entry.modes if (modes is None or m in modes)
                       and (entry.name, m) not in done)
        if wanted:
            items.append(WorkItem(entry, wanted))
    return items


def size_pools(resources: dict[str, float], cpu_workers: int | None, gpu_workers: int | None,
               cpus_per_worker: float) -> tuple[int, int]:
    """(cpu_workers, gpu_workers) for a cluster: one GPU worker per GPU, the CPUs left to CPU
    workers; explicit counts win."""
    gpus = int(resources.get("GPU", 0))
    gpu_workers = gpus if gpu_workers is None else gpu_workers
    if cpu_workers is not None:
        return cpu_workers, gpu_workers
    cpus_left = resources.get("CPU", os.cpu_count() or 1) - gpu_workers * cpus_per_worker
    return max(1, int(cpus_left // cpus_per_worker)), gpu_workers
