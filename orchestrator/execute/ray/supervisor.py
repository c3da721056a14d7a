"""The supervisor: a hand-rolled ``ray.wait`` loop over pools of one-call-at-a-time actors.

Why not ActorPool or Ray Data (docs/design.md): neither can kill and replace a hung
actor, say which input a dead actor was running, or leave retries to us.  Here every actor has ``max_restarts=0`` and every call
``max_task_retries=0``; the supervisor owns deadlines (from dispatch), kills,
replacements, retries, recycling and node loss, and no model can stop the
sweep or lose a row.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import ray
import structlog
from ray.exceptions import ActorDiedError, ActorUnavailableError, OutOfMemoryError

from exporter.environments import CURRENT
from exporter.errors import OrchestratorError
from exporter.record import new_record
from exporter.schema import RowContext, row
from exporter.spec import PipelineOptions
from exporter.taxonomy import INFRA_ERROR, OOM, TIMEOUT, WORKER_CRASH, Failure
from orchestrator.execute.config import RayConfig
from orchestrator.execute.crossload import CrossLoad, crossload_row
from orchestrator.execute.ray.worker import ExportWorker
from orchestrator.execute.scheduling import (BatchPolicy, CheckPolicy, Idle, WorkItem, WorkQueue,
                                             plan_moves, share_out)
from orchestrator.results.sink import ResultSink

log = structlog.get_logger("exportsweep.supervisor")


@dataclass
class Slot:
    """One worker of a pool: the actor and what it is doing."""

    pool: str
    worker_id: str
    actor: Any
    env: str = CURRENT                  # the environment (interpreter) the actor runs in
    ready_ref: Any = None               # set while the actor warms up
    created: float = field(default_factory=time.monotonic)
    node_id: str | None = None
    served: int = 0


@dataclass
class Flight:
    slot: Slot
    items: list[WorkItem]               # one entry, or a batch of cheap ones
    started: float
    deadline: float
    programs: Any = None                # ObjectRef of the programs the worker hands over

    @property
    def item(self) -> WorkItem:
        """The entry of a one-entry flight (faults are judged per entry: batches split)."""
        return self.items[0]

    @property
    def batched(self) -> bool:
        return len(self.items) > 1


@dataclass
class Suspect:
    """An entry whose worker died on a node that still looked alive: a crash, or the first
    sign of a node going away (its workers die before the cluster marks the node dead)."""

    flight: Flight
    exc: BaseException
    since: float


@dataclass
class Supervisor:
    """Runs work items on Ray actors until every item has its final rows."""

    config: RayConfig
    options: PipelineOptions
    run_id: str
    manifest_path: str
    sink: ResultSink
    on_rows: Any                        # callback(list[row]) for progress and the summary
    log_dir: str | None = None
    # Each environment's Ray runtime environment for its actors (None: the job's own); an
    # actor's is merged with the job's, so the setup hook and env vars carry over.
    runtime_envs: dict[str, dict[str, Any] | None] = field(
        default_factory=lambda: {CURRENT: None})
    # With more than one environment: each program that reloads fine is loaded and run in
    # every other environment of its entry (the cross-version stage), rows to this sink.
    crossload_sink: ResultSink | None = None
    torch_of: dict[str, str] = field(default_factory=dict)   # environment -> torch version
    slots: list[Slot] = field(default_factory=list)
    inflight: dict[Any, Flight] = field(default_factory=dict)
    suspects: list[Suspect] = field(default_factory=list)
    counter: int = 0
    start_failures: int = 0
    max_start_failures: int = 8         # starts that fail before the run is given up (exit 3)
    batching: BatchPolicy = field(default_factory=BatchPolicy)
    check_policy: CheckPolicy = field(default_factory=CheckPolicy)
    node_verdict_s: float = 10.0        # how long a dead worker's node may take to be declared dead

    # -- workers --------------------------------------------------------------------------------

    def start_pools(self, cpu_workers: int, gpu_workers: int, queue: WorkQueue | None = None
                    ) -> None:
        """The workers, shared out among the environments in proportion to their queued
        work (each with some work gets at least one where there are enough workers)."""
        for pool, count in (("gpu", gpu_workers), ("cpu", cpu_workers)):
            for env in share_out(count, queue.waiting(pool) if queue is not None else {},
                                 list(self.runtime_envs)):
                self.slots.append(self._new_slot(pool, env))

    def _new_slot(self, pool: str, env: str = CURRENT) -> Slot:
        self.counter += 1
        worker_id = f"{pool}-{self.counter}" if env == CURRENT else f"{env}-{pool}-{self.counter}"
        threads = max(1, math.floor(self.config.cpus_per_worker))
        options = replace(self.options, in_process_deadline=False, cuda_fallback=pool == "gpu",
                          use_cuda=pool == "gpu")
        # No Ray-level restarts or retries: every retry decision is the supervisor's.
        extra = {"runtime_env": self.runtime_envs[env]} if self.runtime_envs.get(env) else {}
        actor = ray.remote(ExportWorker).options(
            max_restarts=0, max_task_retries=0, num_cpus=self.config.cpus_per_worker,
            num_gpus=1 if pool == "gpu" else 0, **extra,
        ).remote(worker_id, pool, self.run_id, self.manifest_path, options, threads, self.log_dir,
                 env)
        return Slot(pool, worker_id, actor, env=env, ready_ref=actor.ready.remote())

    def _replace(self, slot: Slot, reason: str, env: str | None = None) -> None:
        ray.kill(slot.actor, no_restart=True)
        self.slots.remove(slot)
        fresh = self._new_slot(slot.pool, slot.env if env is None else env)
        self.slots.append(fresh)
        log.info("worker replaced", worker=slot.worker_id, by=fresh.worker_id, reason=reason)

    def _rebalance(self, queue: WorkQueue) -> None:
        """Idle workers move between environments (a new actor there) by
        :func:`scheduling.plan_moves`: none finishes early while another still has a queue,
        and programs handed over to an environment left without workers do not wait for
        ever."""
        if len(self.runtime_envs) < 2 or not len(queue):
            return
        busy = {f.slot.worker_id for f in self.inflight.values()}
        ready = [s for s in self.slots if s.ready_ref is None]
        idle = [Idle(s.worker_id, s.pool, s.env) for s in ready if s.worker_id not in busy]
        if not idle:
            return
        workers = Counter((s.pool, s.env) for s in self.slots)
        by_id = {s.worker_id: s for s in self.slots}
        for move, env, reason in plan_moves(idle, workers, queue.waiting, queue.checks_waiting,
                                            time.monotonic(), self.check_policy):
            self._replace(by_id[move.worker_id], reason, env=env)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, queue: WorkQueue) -> None:
        self._skip_unrunnable(queue)
        while len(queue) or self.inflight or self.suspects:
            self._rebalance(queue)
            self._dispatch(queue)
            waiting = list(self.inflight) + [s.ready_ref for s in self.slots if s.ready_ref]
            if not waiting:
                self._judge_suspects(queue)
                if self.suspects and not len(queue):
                    time.sleep(0.2)               # only verdicts pending: wait for them
                self._skip_unrunnable(queue)      # queued work that no live worker can take
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=self._wait_s())
            for ref in ready:
                if ref in self.inflight:
                    self._finish(ref, queue)
                else:
                    self._worker_ready(ref)
            self._expire(queue)
            self._judge_suspects(queue)
            self._give_up_unstartable(queue)
            self.sink.tick()

    def _dispatch(self, queue: WorkQueue) -> None:
        busy = {f.slot.worker_id for f in self.inflight.values()}
        for slot in list(self.slots):
            if slot.ready_ref is not None or slot.worker_id in busy:
                continue
            # Handing programs over is per entry: no batches then.
            size = 1 if self.crossload_sink is not None else \
                self.batching.size(len(queue), len(self.slots))
            items = queue.take_batch(slot.pool, size, slot.env)
            if not items:
                continue
            now = time.monotonic()
            # A batch is expected to take a fraction of one entry's deadline; one that
            # takes longer is split and its entries rerun alone, each with its own.
            timeout = (self.config.timeout_s or max(i.entry.timeout_s for i in items)) * \
                (1 + self.options.flaky_reruns)     # each rerun has the entry's deadline
            programs = None
            if len(items) == 1:
                item = items[0]
                if item.crossload is not None:
                    c = item.crossload
                    # each program gets the entry's deadline in its fresh process
                    timeout = (self.config.timeout_s or item.entry.timeout_s) * \
                        max(1, len(c.handed_over))
                    ref = slot.actor.crossload.remote(item.entry, c.programs, c.from_env,
                                                      c.from_torch)
                elif self.crossload_sink is not None:
                    ref, programs = slot.actor.run_handing_over.options(num_returns=2).remote(
                        item.entry, item.modes, item.attempt)
                else:
                    ref = slot.actor.run.remote(item.entry, item.modes, item.attempt)
            else:
                ref = slot.actor.run_batch.remote([(i.entry, i.modes, i.attempt) for i in items])
            self.inflight[ref] = Flight(slot, items, now, now + timeout, programs)
            log.debug("dispatched", entry=items[0].entry.name, entries=len(items),
                      worker=slot.worker_id, attempt=items[0].attempt, env=slot.env)

    def _wait_s(self) -> float:
        if not self.inflight:
            return 1.0
        soonest = min(f.deadline for f in self.inflight.values()) - time.monotonic()
        return max(0.05, min(1.0, soonest))

    def _worker_ready(self, ref: Any) -> None:
        slot = next(s for s in self.slots if s.ready_ref == ref)
        try:
            info = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - any way of not starting
            # A worker can die while it starts: killed, OOM, its node going away. Replace it
            # (a replacement that cannot be placed, its pool's last node gone, is given up
            # after --worker-start-timeout and that pool's work skipped). Starts that keep
            # failing (a broken setup hook, an image without torch) are the orchestrator's
            # failure: exit 3.
            self.start_failures += 1
            log.warning("worker failed to start", worker=slot.worker_id,
                        failures=self.start_failures, error=str(exc)[:500])
            if self.start_failures > self.max_start_failures:
                raise OrchestratorError(f"workers keep failing to start ({self.start_failures} "
                                        f"times); the last, {slot.worker_id}: {exc}") from exc
            self._replace(slot, "failed to start")
            return
        slot.ready_ref, slot.node_id = None, info["node_id"]
        if info.get("torch"):
            self.torch_of.setdefault(slot.env, info["torch"])
        log.info("worker ready", worker=slot.worker_id, pool=slot.pool, **info)

    def _finish(self, ref: Any, queue: WorkQueue) -> None:
        flight = self.inflight.pop(ref)
        slot, item = flight.slot, flight.item
        try:
            result = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a batch is judged entry by entry, alone
            if item.crossload is not None:
                category = OOM if isinstance(exc, OutOfMemoryError) else \
                    WORKER_CRASH if isinstance(exc, (ActorDiedError, ActorUnavailableError)) \
                    else INFRA_ERROR
                self._crossload_fault(flight, category, _first_lines(str(exc)) or
                                      type(exc).__name__, _qualname(exc))
                self._replace(slot, category.lower())
            elif flight.batched:
                lost = isinstance(exc, (ActorDiedError, ActorUnavailableError)) and \
                    self._node_lost(slot)
                self._split(flight, queue, f"{type(exc).__name__}: "
                                           f"{_first_lines(str(exc), 1)}", node_lost=lost)
            elif isinstance(exc, OutOfMemoryError):
                # Ray's memory monitor killed the worker. Its message mentions OOM, but so
                # does every death message: only the exception class is trusted.
                self._fault(flight, OOM, exc, queue)
            elif isinstance(exc, (ActorDiedError, ActorUnavailableError)):
                if self._node_lost(slot):
                    log.warning("node lost: entry requeued", entry=item.entry.name,
                                worker=slot.worker_id, node=slot.node_id)
                    queue.put(item)
                    self._replace(slot, "node lost")
                else:
                    # Judged later: a crash, unless the node turns out to be gone.
                    self.suspects.append(Suspect(flight, exc, time.monotonic()))
                    self._replace(slot, "worker died")
            else:
                # RayTaskError: run_entry never raises for model failures, so this is our own
                # bug, or a result that could not travel (or deserialize): a classified row
                # either way, and the worker is replaced.
                self._fault(flight, INFRA_ERROR, exc, queue, retry=False)
        else:
            if item.crossload is not None:
                assert self.crossload_sink is not None
                self.crossload_sink.write(result)
                slot.served += 1
                return
            self._finished(flight, result)
            self._hand_over(flight, result, queue)

    def _hand_over(self, flight: Flight, result: dict[str, Any], queue: WorkQueue) -> None:
        """The programs a worker handed over, to be loaded in each other environment of the
        entry: those checks go first, so the programs leave the object store soon."""
        handed = tuple(tuple(p) for p in result.get("handed_over") or ())
        if flight.programs is None or not handed:
            return
        item, slot = flight.item, flight.slot
        for env in self.runtime_envs:
            if env == slot.env or not item.entry.runs_in(env):
                continue
            check = CrossLoad(slot.env, self.torch_of.get(slot.env, ""), flight.programs,
                              handed, "cuda" if slot.pool == "gpu" else "cpu")
            queue.put_front(WorkItem(item.entry, tuple(sorted({m for m, _ in handed})),
                                     env=env, solo=True, crossload=check))

    def _crossload_fault(self, flight: Flight, category: str, message: str,
                         exception_type: str) -> None:
        """Rows for the programs of a cross-version check that never came back."""
        item, slot = flight.item, flight.slot
        c = item.crossload
        failure = Failure.make(category, None, message, exception_type=exception_type)
        rows = [crossload_row(item.entry, mode, kind, c.from_env, c.from_torch, slot.env,
                              self.torch_of.get(slot.env, ""), None, slot.worker_id,
                              self.run_id, fault=failure) for mode, kind in c.handed_over]
        assert self.crossload_sink is not None
        self.crossload_sink.write(rows)

    def _finished(self, flight: Flight, result: dict[str, Any]) -> None:
        slot = flight.slot
        slot.served += len(flight.items)
        self.batching.observe(len(flight.items), time.monotonic() - flight.started)
        self._emit(*(result["rows"] if flight.batched else [result["rows"]]))
        if self.config.recycle.should_recycle(slot.served, result.get("rss_mb")):
            self._replace(slot, f"recycled after {slot.served} entries, "
                                f"rss {result.get('rss_mb')} MiB")

    def _split(self, flight: Flight, queue: WorkQueue, reason: str, node_lost: bool) -> None:
        """A batch failed as a whole (its worker died or hung): nothing says which entry did
        it, so each goes back to the queue to run alone, no attempt counted; the guilty one
        then fails on its own, with its own row and retries."""
        for item in flight.items:
            queue.put(item if node_lost else replace(item, solo=True))
        log.warning("batch split", entries=len(flight.items), worker=flight.slot.worker_id,
                    reason=reason)
        self._replace(flight.slot, "node lost" if node_lost else "batch failed")

    def _expire(self, queue: WorkQueue) -> None:
        now = time.monotonic()
        for ref, flight in list(self.inflight.items()):
            if now < flight.deadline:
                continue
            self.inflight.pop(ref)
            if flight.batched:
                self._split(flight, queue, "batch past its deadline", node_lost=False)
                continue
            elapsed = now - flight.started
            if flight.item.crossload is not None:
                self._crossload_fault(flight, TIMEOUT, f"no result after {elapsed:.1f} s: the "
                                      f"worker was killed", "TimeoutError")
                self._replace(flight.slot, "timeout")
                continue
            message = (f"no result after {elapsed:.1f} s (deadline "
                       f"{flight.deadline - flight.started:g} s): the worker was killed")
            self._emit(self._fault_rows(flight, TIMEOUT, message, "TimeoutError", final=True))
            self._replace(flight.slot, "timeout")

    def _judge_suspects(self, queue: WorkQueue) -> None:
        """A dead worker's entry: requeued if its node died meanwhile, a WORKER_CRASH row (and
        a retry) once the node has stayed alive for ``node_verdict_s``."""
        if not self.suspects:
            return
        now, undecided = time.monotonic(), []
        for suspect in self.suspects:
            slot, item = suspect.flight.slot, suspect.flight.item
            if self._node_lost(slot):
                log.warning("node lost: entry requeued", entry=item.entry.name,
                            worker=slot.worker_id, node=slot.node_id)
                queue.put(item)
            elif now - suspect.since >= self.node_verdict_s:
                self._fault(suspect.flight, WORKER_CRASH, suspect.exc, queue, replace=False)
            else:
                undecided.append(suspect)
        self.suspects = undecided

    def _fault(self, flight: Flight, category: str, exc: BaseException, queue: WorkQueue,
               retry: bool = True, replace: bool = True) -> None:
        item = flight.item
        again = retry and self.config.retry.should_retry(category, item.attempt)
        message = _first_lines(str(exc)) or type(exc).__name__
        self._emit(self._fault_rows(flight, category, message, _qualname(exc), final=not again))
        if replace:
            self._replace(flight.slot, category.lower())
        if again:
            queue.put(item.retry())
            log.info("entry retried", entry=item.entry.name, category=category,
                     attempt=item.attempt + 1)

    def _fault_rows(self, flight: Flight, category: str, message: str, exception_type: str,
                    final: bool) -> list[dict[str, Any]]:
        item, slot = flight.item, flight.slot
        ctx = RowContext(run_id=self.run_id, worker_id=slot.worker_id, attempt=item.attempt,
                         pool=slot.pool, env=slot.env, node_id=slot.node_id)
        elapsed = time.monotonic() - flight.started
        rows = []
        for mode in item.modes:
            record = new_record(item.entry, mode, "cuda" if slot.pool == "gpu" else "cpu")
            record.finished_at = time.time()
            record.started_at = record.finished_at - elapsed
            record.fail(Failure.make(category, None, message, exception_type=exception_type))
            record.total_s = round(elapsed, 3)
            rows.append(row(record, ctx, final=final))
        return rows

    def _give_up_unstartable(self, queue: WorkQueue) -> None:
        """A worker that cannot be scheduled (its pool's last node is gone, say) is dropped
        after the start timeout; work only its pool could run then becomes SKIP rows."""
        now = time.monotonic()
        stuck = [s for s in self.slots
                 if s.ready_ref is not None and now - s.created > self.config.start_timeout_s]
        for slot in stuck:
            ray.kill(slot.actor, no_restart=True)
            self.slots.remove(slot)
            log.warning("worker never started: given up", worker=slot.worker_id, pool=slot.pool,
                        waited_s=round(now - slot.created, 1))
        if stuck:
            self._skip_unrunnable(queue)

    def _node_lost(self, slot: Slot) -> bool:
        if slot.node_id is None:
            return False
        try:
            alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
        except Exception:  # noqa: BLE001 - cannot tell: treat as a crash, which retries anyway
            return False
        return not alive.get(slot.node_id, False)

    def _skip_unrunnable(self, queue: WorkQueue) -> None:
        # A worker can move to any environment (_rebalance): what matters is its kind.
        pools = {(s.pool, env) for s in self.slots for env in self.runtime_envs}
        skipped = []
        for item in queue.unrunnable(pools):
            if item.crossload is not None:
                self._crossload_fault(Flight(Slot("none", "driver", None, env=item.env), [item],
                                             time.monotonic(), time.monotonic()),
                                      INFRA_ERROR, "no worker of this kind is left to load "
                                      "the programs", "RuntimeError")
                continue
            kind = "GPU" if item.entry.device == "cuda" else "CPU"
            skipped.append((item, f"entry needs a {kind} worker and the cluster has none (or "
                                  f"none could start)"))
        self.skip(skipped)

    def skip(self, items: list[tuple[WorkItem, str]]) -> None:
        """SKIP rows (final) for work no worker will run, each with its reason: one file for
        all of them."""
        per_entry = []
        for item, reason in items:
            ctx = RowContext(run_id=self.run_id, worker_id="driver", pool="none", env=item.env)
            rows = []
            for mode in item.modes:
                record = new_record(item.entry, mode, item.entry.device)
                record.skip(reason)
                record.started_at = record.finished_at = time.time()
                rows.append(row(record, ctx))
            per_entry.append(rows)
        if per_entry:
            self._emit(*per_entry)

    def _emit(self, *entries: list[dict[str, Any]]) -> None:
        """Write the rows of one or more entries (a batch: one file per call), then report
        each entry's rows."""
        self.sink.write([r for rows in entries for r in rows])
        for rows in entries:
            self.on_rows(rows)

    def shutdown(self) -> None:
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.slots.clear()


def _qualname(exc: BaseException) -> str:
    t = type(exc)
    return f"{t.__module__}.{t.__qualname__}"


def _first_lines(text: str, n: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[:n])
