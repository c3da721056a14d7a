"""What a sweep is asked to do: typed configuration, built by the CLI, read by the executors.

No Ray import here: the in-process executor and the tests use these without a cluster.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from exporter.environments import CURRENT, Environment
from exporter.spec import PipelineOptions
from orchestrator.execute.scheduling import RecyclePolicy, RetryPolicy


@dataclass(frozen=True)
class SweepConfig:
    out: str
    run_id: str
    pipeline: PipelineOptions = PipelineOptions()
    only: tuple[str, ...] = ()
    modes: tuple[str, ...] | None = None     # restrict every entry to these modes
    resume: bool = False                     # run only the (entry, mode) pairs still missing
    flush_interval_s: float | None = None    # None: per entry locally, 10 s on object stores
    compact: bool = False                    # merge the run's files into one at the end
    force: bool = False                      # resume even with another selection (recorded)
    timeout_s: float | None = None           # --timeout: overrides every entry's (a selection)
    schedule: str = "longest-first"          # queue order (scheduling.SCHEDULES)
    # Every entry runs in each of these (unless it names some): the driver's own, `current`,
    # and what the manifest and --env declared.
    environments: dict[str, Environment] = field(
        default_factory=lambda: {CURRENT: Environment(CURRENT, source="driver")})
    command_line: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv))


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None          # None: embedded local Ray, started and stopped here
    cpu_workers: int | None = None      # None: sized to the cluster
    gpu_workers: int | None = None
    cpus_per_worker: float = 1.0
    timeout_s: float | None = None      # overrides every entry's timeout_s
    retry: RetryPolicy = RetryPolicy()
    recycle: RecyclePolicy = RecyclePolicy()
    object_store_mb: int = 256
    start_timeout_s: float = 300.0      # a worker not ready by then is given up (e.g. no GPU left)
