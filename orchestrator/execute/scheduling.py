"""What runs where and what happens after a fault: pure policy, no Ray, unit-testable.

The Ray driver owns the mechanism (actors, ray.wait, kills); this module owns
the decisions: routing an entry to a pool, pull-based dispatch, the retry
budget, and whether a worker should be recycled.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Iterable

from exporter.environments import CURRENT
from exporter.spec import Entry
from exporter.taxonomy import CATEGORY_BY_NAME

POOLS = ("cpu", "gpu")


@dataclass(frozen=True)
class WorkItem:
    """One entry (with the modes still to run) in one environment, at one attempt."""

    entry: Entry
    modes: tuple[str, ...]
    attempt: int = 1
    solo: bool = False      # never batched: it was in a batch that failed as a whole
    env: str = CURRENT
    crossload: Any = None   # execute.crossload.CrossLoad: load another environment's programs

    def retry(self) -> "WorkItem":
        return replace(self, attempt=self.attempt + 1)

    @property
    def device(self) -> str:
        """The device its worker needs: the entry's, or that of the programs it loads."""
        return self.crossload.device if self.crossload is not None else self.entry.device


def can_run(pool: str, device: str) -> bool:
    """``cuda`` entries only on GPU workers, ``cpu`` only on CPU workers, ``any`` on either."""
    return device == "any" or (device == "cuda") == (pool == "gpu")


class WorkQueue:
    """Entries waiting for a worker, in the order given (see :func:`order_items`); each worker
    pulls the first it can run, so device routing never reorders the rest."""

    def __init__(self, items: Iterable[WorkItem] = ()) -> None:
        self._items: deque[WorkItem] = deque(items)

    def __len__(self) -> int:
        return len(self._items)

    def take(self, pool: str, env: str = CURRENT) -> WorkItem | None:
        for i, item in enumerate(self._items):
            if item.env == env and can_run(pool, item.device):
                del self._items[i]
                return item
        return None

    def take_batch(self, pool: str, size: int, env: str = CURRENT) -> list[WorkItem]:
        """Up to ``size`` items this pool of this environment can run, in order; an item
        marked ``solo`` only alone (it was in a batch that failed as a whole)."""
        batch: list[WorkItem] = []
        i = 0
        while i < len(self._items) and len(batch) < size:
            item = self._items[i]
            if item.env != env or not can_run(pool, item.device) or (item.solo and batch):
                i += 1
                continue
            del self._items[i]          # near the front: cheap on a deque
            batch.append(item)
            if item.solo:
                break
        return batch

    def put(self, item: WorkItem) -> None:
        self._items.append(item)

    def put_front(self, item: WorkItem) -> None:
        """Ahead of everything (cross-version checks: their programs wait in memory)."""
        self._items.appendleft(item)

    def waiting(self, pool: str) -> dict[str, int]:
        """Per environment, how many queued items a worker of this kind could run."""
        counts: dict[str, int] = {}
        for item in self._items:
            if can_run(pool, item.device):
                counts[item.env] = counts.get(item.env, 0) + 1
        return counts

    def unrunnable(self, pools: Iterable[tuple[str, str]]) -> list[WorkItem]:
        """Remove and return the items no existing (pool, environment) can ever run (e.g.
        cuda, no GPUs)."""
        pools = set(pools)
        stuck = [i for i in self._items
                 if not any(env == i.env and can_run(p, i.device) for p, env in pools)]
        for item in stuck:
            self._items.remove(item)
        return stuck


@dataclass
class BatchPolicy:
    """How many entries one worker call takes. One, as long as entries cost seconds (then a
    deadline, a crash or a kill concerns exactly one entry); when they cost milliseconds
    (the noop family, a cached or trivial model) the per-call overhead of Ray would decide
    the sweep's speed, so a call takes as many as fill ``target_call_s`` by the running
    average, never more than a fair share of what is left. A batch that times out or whose
    worker dies goes back to the queue entry by entry, each to run alone."""

    target_call_s: float = 0.25
    max_size: int = 256
    per_entry_s: float | None = None       # running average of finished calls

    def observe(self, entries: int, seconds: float) -> None:
        each = seconds / max(1, entries)
        self.per_entry_s = each if self.per_entry_s is None else \
            0.8 * self.per_entry_s + 0.2 * each

    def size(self, queued: int, workers: int) -> int:
        if self.per_entry_s is None or self.per_entry_s >= self.target_call_s:
            return 1
        fair = max(1, queued // max(1, 2 * workers))
        return max(1, min(self.max_size, fair, int(self.target_call_s / self.per_entry_s)))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 2          # a crashed or OOM-killed entry gets one more try by default

    def should_retry(self, category: str, attempt: int) -> bool:
        known = CATEGORY_BY_NAME.get(category)
        return known is not None and known.retried and attempt < self.max_attempts


@dataclass(frozen=True)
class RecyclePolicy:
    """Replace a worker after ``after`` entries or above ``max_rss_mb``: memory grows in one
    long process (3 GB after 40 models in the zoo survey), and a fresh worker is cheap.
    ``max_rss_mb`` None: no ceiling (the driver sizes a default with
    :func:`memory_ceiling_mb` before it starts workers)."""

    after: int | None = None
    max_rss_mb: float | None = None

    def should_recycle(self, served: int, rss_mb: float | None) -> bool:
        if self.after is not None and served >= self.after:
            return True
        return self.max_rss_mb is not None and rss_mb is not None and rss_mb > self.max_rss_mb


# The share of a node's memory its workers may hold between them: the rest is for the
# reload process each worker keeps, the raylet and object store, and the page cache. Ray's
# memory monitor kills at 95% of the node; a worker recycled at its ceiling never gets there.
WORKERS_MEMORY_SHARE = 0.6


def memory_ceiling_mb(nodes: Iterable[tuple[float, float]], cpus_per_worker: float) -> float | None:
    """The default per-worker RSS ceiling: on the tightest node (``(memory bytes, CPUs)``
    per alive node), its workers' share of the memory divided among the workers it fits."""
    ceilings = [WORKERS_MEMORY_SHARE * memory / 2**20 / max(1, int(cpus // cpus_per_worker))
                for memory, cpus in nodes if memory > 0 and cpus >= cpus_per_worker]
    return round(min(ceilings)) if ceilings else None


def pending_items(entries: Iterable[Entry], done: set[tuple[str, str, str]],
                  modes: tuple[str, ...] | None = None,
                  environments: Iterable[str] = (CURRENT,)) -> list[WorkItem]:
    """Work for a (resumed) run: every (entry, mode, environment) without a final row yet;
    an entry restricted to some environments runs only there."""
    items = []
    envs = tuple(environments)
    for entry in entries:
        for env in envs:
            if not entry.runs_in(env):
                continue
            wanted = tuple(m for m in entry.modes if (modes is None or m in modes)
                           and (entry.name, m, env) not in done)
            if wanted:
                items.append(WorkItem(entry, wanted, env=env))
    return items


# How the queue is ordered: by expected cost from the folder's history (the default), or as
# the manifest lists the entries.
SCHEDULES = ("longest-first", "manifest")


def expected_seconds(entries: Iterable[Entry], seen: dict[str, float]) -> dict[str, float]:
    """Each entry's expected wall time: its own from history, else the median of its
    family's (a timm model costs what timm models cost), else the median of all seen.
    Empty when nothing was ever seen: then there is nothing to order by."""
    entries = list(entries)
    if not seen:
        return {}
    by_family: dict[str, list[float]] = {}
    for e in entries:
        if e.name in seen:
            by_family.setdefault(e.family, []).append(seen[e.name])
    overall = _median(list(seen.values()))
    return {e.name: seen[e.name] if e.name in seen else
            _median(by_family[e.family]) if e.family in by_family else overall
            for e in entries}


def order_items(items: list[WorkItem], seen: dict[str, float], schedule: str) -> list[WorkItem]:
    """The queue's order: longest expected first (ties and unknowns keep manifest order), or
    the manifest's. A resumed entry with one of two modes left costs half."""
    if schedule == "manifest":
        return list(items)
    cost = expected_seconds((i.entry for i in items), seen)
    if not cost:
        return list(items)
    return sorted(items, key=lambda i: -cost[i.entry.name] * len(i.modes) / len(i.entry.modes))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def share_out(workers: int, waiting: dict[str, int], envs: list[str]) -> list[str]:
    """Which environment each of ``workers`` workers of one kind starts in: in proportion to
    each environment's queued work (largest remainders), every environment with work getting
    one first while there are workers enough; round robin over ``envs`` when nothing waits."""
    with_work = [e for e in envs if waiting.get(e)]
    if not with_work:
        return [envs[i % len(envs)] for i in range(workers)] if envs else []
    if workers <= len(with_work):
        return with_work[:workers]
    total = sum(waiting[e] for e in with_work)
    exact = {e: workers * waiting[e] / total for e in with_work}
    counts = {e: max(1, int(exact[e])) for e in with_work}
    while sum(counts.values()) > workers:          # the floor of one took some: give back
        e = max((e for e in with_work if counts[e] > 1), key=lambda e: counts[e] - exact[e])
        counts[e] -= 1
    for e in sorted(with_work, key=lambda e: exact[e] - counts[e], reverse=True):
        if sum(counts.values()) == workers:
            break
        counts[e] += 1
    return with_work + [e for e in with_work for _ in range(counts[e] - 1)]


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
