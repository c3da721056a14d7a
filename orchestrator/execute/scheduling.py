"""What runs where and what happens after a fault: pure policy, no Ray, unit-testable.

The Ray driver owns the mechanism (actors, ray.wait, kills); this module owns
the decisions: routing an entry to a pool, pull-based dispatch, the retry
budget, and whether a worker should be recycled.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

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
        # Queued items per (environment, device), kept as items come and go: the supervisor
        # asks how much each environment has waiting on every idle turn (_rebalance), and
        # counting a 100,000-item queue each time would cost more than the work it places.
        self._counts: Counter[tuple[str, str]] = Counter()
        # Cross-version checks per (environment, device), and since when some have waited
        # without a worker draining them: their programs wait in Ray's object store meanwhile.
        self._checks: Counter[tuple[str, str]] = Counter()
        self._checks_since: dict[tuple[str, str], float] = {}
        for item in self._items:
            self._added(item)

    def _added(self, item: WorkItem) -> None:
        key = (item.env, item.device)
        self._counts[key] += 1
        if item.crossload is not None:
            if not self._checks[key]:
                self._checks_since[key] = time.monotonic()
            self._checks[key] += 1

    def _removed(self, item: WorkItem) -> None:
        key = (item.env, item.device)
        self._counts[key] -= 1
        if item.crossload is not None:
            self._checks[key] -= 1
            if not self._checks[key]:
                self._checks_since.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)

    def take(self, pool: str, env: str = CURRENT) -> WorkItem | None:
        for i, item in enumerate(self._items):
            if item.env == env and can_run(pool, item.device):
                del self._items[i]
                self._removed(item)
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
            self._removed(item)
            batch.append(item)
            if item.solo:
                break
        return batch

    def put(self, item: WorkItem) -> None:
        self._items.append(item)
        self._added(item)

    def put_front(self, item: WorkItem) -> None:
        """Ahead of everything (cross-version checks: their programs wait in memory)."""
        self._items.appendleft(item)
        self._added(item)

    def waiting(self, pool: str) -> dict[str, int]:
        """Per environment, how many queued items a worker of this kind could run."""
        counts: dict[str, int] = {}
        for (env, device), n in self._counts.items():
            if n and can_run(pool, device):
                counts[env] = counts.get(env, 0) + n
        return counts

    def checks_waiting(self, pool: str) -> dict[str, tuple[int, float]]:
        """Per environment, the cross-version checks a worker of this kind could run: how
        many, and since when (monotonic) some have waited."""
        out: dict[str, tuple[int, float]] = {}
        for (env, device), n in self._checks.items():
            if n and can_run(pool, device):
                count, since = out.get(env, (0, math.inf))
                out[env] = (count + n, min(since, self._checks_since[(env, device)]))
        return out

    def unrunnable(self, pools: Iterable[tuple[str, str]]) -> list[WorkItem]:
        """Remove and return the items no existing (pool, environment) can ever run (e.g.
        cuda, no GPUs)."""
        pools = set(pools)
        stuck = [i for i in self._items
                 if not any(env == i.env and can_run(p, i.device) for p, env in pools)]
        for item in stuck:
            self._items.remove(item)
            self._removed(item)
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


@dataclass(frozen=True)
class CheckPolicy:
    """When cross-version checks may pull a worker into an environment that has none left:
    once this many wait, or the first has waited this long. Their programs wait in Ray's
    object store (spilled to disk beyond it) until then; every move costs a worker start
    there and another back, so checks are gathered rather than chased one at a time."""

    max_waiting: int = 32
    max_wait_s: float = 600.0


@dataclass(frozen=True)
class Idle:
    """A started worker with nothing in flight, as the rebalancing sees it."""

    worker_id: str
    pool: str
    env: str


def plan_moves(idle: list[Idle], workers: Counter[tuple[str, str]],
               waiting: Callable[[str], dict[str, int]],
               checks: Callable[[str], dict[str, tuple[int, float]]],
               now: float, policy: CheckPolicy = CheckPolicy()) -> list[tuple[Idle, str, str]]:
    """Which idle workers move to which environment, and why (a new actor there).

    ``workers``: started workers per (pool, environment); ``waiting(pool)``: queued items per
    environment a worker of that kind could run; ``checks(pool)``: of those, the cross-version
    checks per environment (how many, since when). Two rules:

    1. An idle worker whose environment has nothing left it could run, while another has,
       moves to the one with the most queued work per worker: no environment finishes early
       while another still has a queue.
    2. Checks gathered for an environment with no worker of the kind they need (the last
       one moved on, rule 1) pull one idle worker there, from the environment with the most
       workers of that kind, once ``policy`` says they waited enough.
    """
    workers = Counter(workers)
    moves: list[tuple[Idle, str, str]] = []
    left = list(idle)
    for slot in list(left):
        here = waiting(slot.pool)
        if here.get(slot.env) or not here:
            continue
        target = max(here, key=lambda env: here[env] / (1 + workers[(slot.pool, env)]))
        moves.append((slot, target, f"moved to environment {target}: nothing left in "
                                    f"{slot.env}"))
        workers[(slot.pool, slot.env)] -= 1
        workers[(slot.pool, target)] += 1
        left.remove(slot)
    for pool in sorted({s.pool for s in left}):
        for env, (count, since) in sorted(checks(pool).items()):
            if workers[(pool, env)] > 0:
                continue
            if count < policy.max_waiting and now - since < policy.max_wait_s:
                continue
            donors = [s for s in left if s.pool == pool and s.env != env]
            if not donors:
                continue
            slot = max(donors, key=lambda s: (workers[(pool, s.env)], s.worker_id))
            moves.append((slot, env, f"moved to environment {env}: {count} cross-version "
                                     f"checks wait there for {now - since:.0f} s"))
            workers[(pool, slot.env)] -= 1
            workers[(pool, env)] += 1
            left.remove(slot)
    return moves


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
