"""Connecting to Ray (embedded or by address) and running the supervisor there.

Embedded is the default: a local Ray started for the run and shut down after it,
dashboard off, a small object store (rows are tiny). ``--address auto`` or an
address joins an existing cluster and leaves it running.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import replace
from typing import Any, Callable

import ray
import structlog

from exporter.environments import Environment
from exporter.errors import OrchestratorError
from exporter.schema import CROSSLOAD_DIR, crossload_table
from exporter.manifest import Manifest
from orchestrator.execute import logs
from orchestrator.execute.config import RayConfig, SweepConfig
from orchestrator.execute.environments import libraries_of, probe_all, split_unavailable
from orchestrator.execute.ray.supervisor import Supervisor
from orchestrator.execute.scheduling import (RecyclePolicy, WorkItem, WorkQueue, memory_ceiling_mb,
                                             size_pools)
from orchestrator.results.sink import ResultSink

log = structlog.get_logger("exportsweep.ray")


def run_on_ray(items: list[WorkItem], manifest: Manifest, config: SweepConfig,
               ray_config: RayConfig, sink: ResultSink,
               on_rows: Callable[[list[dict[str, Any]]], None],
               known_facts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``items`` on Ray; returns the cluster facts for ``_run.json`` (with the worker
    memory ceiling in force). ``known_facts``: the environments probed before Ray started
    (local interpreters), as _run.json records them; runtime environments are probed here."""
    log_dir = os.path.abspath(sink.log_dir())
    started_here = connect(ray_config, log_dir)
    ray_config = replace(ray_config, recycle=_recycle_policy(ray_config))
    several = len(config.environments) > 1
    crossload_sink = ResultSink(config.out, config.run_id, config.flush_interval_s,
                                table=crossload_table, subdir=CROSSLOAD_DIR) if several else None
    supervisor = Supervisor(ray_config, config.pipeline, config.run_id,
                            manifest.path, sink,
                            on_rows, log_dir=log_dir,
                            runtime_envs={name: actor_runtime_env(env)
                                          for name, env in config.environments.items()},
                            crossload_sink=crossload_sink)
    try:
        remote = {n: e for n, e in config.environments.items() if e.runtime_env is not None}
        env_facts = probe_all(remote, ray.__version__, remote=probe_in_runtime_env,
                              libraries=libraries_of(i.entry for i in items)) if remote else {}
        items, unavailable = split_unavailable(
            items, {**(known_facts or {}), **{n: f.as_json() for n, f in env_facts.items()}})
        supervisor.skip(unavailable)
        queue = WorkQueue(items)
        resources = ray.cluster_resources()
        cpu_workers, gpu_workers = size_pools(resources, ray_config.cpu_workers,
                                              ray_config.gpu_workers, ray_config.cpus_per_worker)
        log.info("pools", cpu_workers=cpu_workers, gpu_workers=gpu_workers,
                 resources={k: v for k, v in resources.items() if not k.startswith("node:")},
                 max_worker_rss_mb=ray_config.recycle.max_rss_mb,
                 recycle_after=ray_config.recycle.after)
        supervisor.start_pools(cpu_workers, gpu_workers, queue)
        supervisor.run(queue)
        return {"address": joined_address(ray_config) or "embedded", "cpu_workers": cpu_workers,
                "environments": {n: f.as_json() for n, f in env_facts.items()},
                "gpu_workers": gpu_workers, "nodes": len([n for n in ray.nodes() if n["Alive"]]),
                "resources": {k: v for k, v in resources.items() if not k.startswith("node:")},
                "workers_started": supervisor.counter,
                "max_worker_rss_mb": ray_config.recycle.max_rss_mb}
    finally:
        if crossload_sink is not None:
            crossload_sink.flush()
        supervisor.shutdown()
        if started_here:
            ray.shutdown()


RUNTIME_ENV_TIMEOUT_S = 1800.0   # a runtime_env may install packages first


def probe_in_runtime_env(env: Environment, script: str) -> str:
    """Run the environment probe as a Ray task inside ``env``'s runtime environment: its
    stdout, or one line saying why Ray could not."""
    from ray.exceptions import GetTimeoutError, RayError

    def probe() -> str:
        import subprocess
        import sys
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=300).stdout

    task = ray.remote(probe).options(runtime_env=dict(env.runtime_env or {}), num_cpus=0,
                                     max_retries=0)
    try:
        return ray.get(task.remote(), timeout=RUNTIME_ENV_TIMEOUT_S)
    except GetTimeoutError:
        return f"Ray did not set up the runtime_env within {RUNTIME_ENV_TIMEOUT_S:.0f} s"
    except RayError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        return f"Ray could not run in this runtime_env: {first[:200]}"


def actor_runtime_env(env: Environment) -> dict[str, Any] | None:
    """The runtime environment of an environment's actors (merged by Ray with the job's, so
    the log setup hook and env vars carry over); None: the job's own."""
    if env.python is not None:
        return {"py_executable": env.python}
    return dict(env.runtime_env) if env.runtime_env else None


def _recycle_policy(config: RayConfig) -> RecyclePolicy:
    """The recycling policy in force: an explicit ceiling (0: none), else one sized from the
    cluster's nodes (:func:`memory_ceiling_mb`)."""
    wanted = config.recycle.max_rss_mb
    if wanted is not None:
        return replace(config.recycle, max_rss_mb=wanted or None)
    nodes = [(n["Resources"].get("memory", 0.0), n["Resources"].get("CPU", 0.0))
             for n in ray.nodes() if n.get("Alive")]
    return replace(config.recycle, max_rss_mb=memory_ceiling_mb(nodes, config.cpus_per_worker))


def connect(config: RayConfig, log_dir: str) -> bool:
    """Start or join Ray; True when this process started it (and must shut it down)."""
    runtime_env = {"worker_process_setup_hook": logs.WORKER_SETUP_HOOK,
                   "env_vars": {logs.LOG_DIR_ENV: log_dir, "HF_HUB_OFFLINE": "1"}}
    common = dict(log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env,
                  configure_logging=True)
    if ray.is_initialized():
        return False
    address = joined_address(config)
    try:
        if address is None:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                     object_store_memory=config.object_store_mb << 20, **common)
            return True
        _check_reachable(address)
        ray.init(address=address, **common)
        return False
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise OrchestratorError(f"cannot reach Ray at {address or 'local'}: {exc}") from exc


def joined_address(config: RayConfig) -> str | None:
    """The cluster to join, or None for an embedded one.  Inside a Ray Job (``exportsweep
    submit``, KubeRay) Ray sets RAY_ADDRESS for the entrypoint: the sweep joins that cluster,
    as ``ray.init()`` would, rather than starting a private one on the head node."""
    return config.address or os.environ.get("RAY_ADDRESS") or None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable GCS for a long time."""
    target = address.split("://", 1)[-1]
    if target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise OrchestratorError(f"cannot reach Ray at {address}: {exc}") from exc
