"""``exportsweep run``, ``validate`` and ``repro``: the commands that read a manifest."""

from __future__ import annotations

import argparse
import os
from typing import Any

from exporter import environments
from exporter.errors import GateTripped, UsageError
from exporter.manifest import entry_table, load_manifest
from exporter.spec import PipelineOptions
from exporter.status import FAILED_UNEXPECTEDLY
from orchestrator.execute import logs
from orchestrator.execute.config import RayConfig, SweepConfig
from orchestrator.execute.scheduling import RecyclePolicy, RetryPolicy
from orchestrator.results.layout import check_run_id, new_run_id
from orchestrator.results.runs import run_exists
from orchestrator.results.sink import log_path


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    return PipelineOptions(draft_export=args.draft_export, aoti=args.aoti,
                           artifacts_dir=os.path.abspath(args.keep_artifacts)
                           if args.keep_artifacts else None,
                           discover_dynamic=args.dynamic == "discover",
                           localize=args.localize,
                           flaky_reruns=getattr(args, "flaky_reruns", 0))


def cmd_run(args: argparse.Namespace) -> None:
    # Imported here: `exportsweep validate` and `--help` need not pay for the executors.
    from orchestrator.execute.sweep import open_run, run_sweep

    manifest = load_manifest(args.manifest)
    if args.only and not manifest.select(args.only):
        raise UsageError(f"--only {' '.join(args.only)} matches no entry of {args.manifest}")
    if args.resume and args.run_id and args.resume != args.run_id:
        raise UsageError("--resume RUN_ID already names the run: drop --run-id")
    if args.force and not args.resume:
        raise UsageError("--force goes with --resume: it resumes a run with another selection")
    envs = environments.resolve(manifest.environments, args.env)
    several = list(envs) != [environments.CURRENT] or not envs[environments.CURRENT].is_current
    if args.in_process and several:
        raise UsageError(f"--in-process runs in this interpreter only; the run has environments "
                         f"{', '.join(e.describe() for e in envs.values())}: drop --in-process "
                         f"(each environment gets its own Ray workers)")
    facts = probe_environments(envs, manifest.select(list(args.only))) if several else None
    run_id = args.resume or args.run_id or new_run_id()
    check_run_id(run_id, "--resume" if args.resume else "--run-id")
    if args.resume and not run_exists(args.out, run_id):
        raise UsageError(f"--resume: no run {run_id!r} in {args.out}")
    config = SweepConfig(out=args.out, run_id=run_id, pipeline=pipeline_options(args),
                         only=tuple(args.only), modes=tuple(args.modes) if args.modes else None,
                         resume=bool(args.resume), flush_interval_s=args.flush_interval,
                         compact=args.compact, force=args.force, timeout_s=args.timeout,
                         schedule=args.schedule, environments=envs)
    meta = open_run(manifest, config)          # claims the id before anything is written
    if facts is not None:
        meta.environments = {name: f.as_json() for name, f in facts.items()}
    logs.configure(log_path(args.out, run_id, "driver.jsonl"), verbose=args.verbose)
    ray_config = None if args.in_process else RayConfig(
        address=args.address, cpu_workers=args.cpu_workers, gpu_workers=args.gpu_workers,
        cpus_per_worker=args.cpus_per_worker, timeout_s=args.timeout,
        retry=RetryPolicy(args.max_attempts),
        recycle=RecyclePolicy(args.recycle_after, args.max_worker_rss_mb),
        start_timeout_s=args.worker_start_timeout)
    run_sweep(manifest, config, ray_config, meta=meta)


def probe_environments(envs: dict[str, Any], entries: Any) -> dict[str, Any]:
    """Each local environment's versions and which of the entries' model libraries import
    there, before anything runs (exit 2 for one that cannot work); Ray runtime environments
    are probed by Ray once it is up."""
    from importlib.metadata import version

    from orchestrator.execute.environments import libraries_of, probe_all
    local = {name: env for name, env in envs.items() if env.runtime_env is None}
    return probe_all(local, version("ray"), libraries=libraries_of(entries))


def cmd_validate(args: argparse.Namespace) -> None:
    manifest = load_manifest(args.manifest)
    rows = entry_table(manifest.entries)
    columns = ["name", "family", "modes", "device", "inputs", "dynamic", "expect", "tags"]
    widths = {c: min(48, max([len(c)] + [len(r[c]) for r in rows])) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fit(r[c], widths[c]) for c in columns).rstrip())
    envs = environments.resolve(manifest.environments, [])
    if len(envs) > 1:
        print("\nenvironments (each entry runs in every one it allows):")
        for env in envs.values():
            print(f"  {env.describe()}")
    print(f"\n{len(rows)} entries from {len(manifest.files)} file(s): {args.manifest} is valid")


def cmd_repro(args: argparse.Namespace) -> None:
    # torch is imported by the commands that run models, not by every start of the CLI.
    from exporter.pipeline import run_entry
    from orchestrator.execute.entry import repro_command

    logs.configure(None, verbose=True)
    manifest = load_manifest(args.manifest)
    entry = manifest.get(args.entry)
    if args.mode and args.mode not in entry.modes:
        raise UsageError(f"entry {entry.name!r} does not run in mode {args.mode!r} "
                         f"(its modes: {', '.join(entry.modes)})")
    if args.submodule is not None:
        _repro_submodule(entry, args.submodule, args.mode or entry.modes[0])
        return
    repro = repro_command(manifest.path)
    records = run_entry(entry, pipeline_options(args), modes=(args.mode,) if args.mode else None,
                        repro=lambda mode: repro(entry.name, mode))
    failed = []
    for r in records:
        print(f"\n== {r.entry} [{r.mode}] {r.status}"
              + (f" {r.category} at {r.failed_stage}" if r.category else "")
              + (f" (expected {r.expected})" if r.expected else ""))
        print("   stages: " + " ".join(f"{k}={v}" for k, v in r.stage_status.items()))
        if r.category:
            print(f"   exception: {r.exception_type}\n   error code: {r.error_code}\n"
                  f"   signature: {r.signature}\n   user frame: {r.user_frame}")
            print(r.traceback or r.message or "")
        if r.status in FAILED_UNEXPECTEDLY:
            failed.append(f"[{r.mode}] {r.status}")
    if failed:
        raise GateTripped(f"{entry.name}: {', '.join(failed)}")


def _repro_submodule(entry: Any, path: str, mode: str) -> None:
    """Export one submodule of the entry's model alone, with the inputs it receives in the
    model, and print what happens (from a row's localized_paths)."""
    import traceback

    from exporter.loader import build_case
    from exporter.localize import export_part

    case = build_case(entry)
    case.model.train(entry.train)
    try:
        category, exc = export_part(case.model, lambda: (case.args, case.kwargs), path,
                                    mode == "strict", entry.seed)
    except (AttributeError, LookupError) as err:
        raise UsageError(f"entry {entry.name!r} [{mode}]: --submodule {path!r}: {err}") from None
    name = path or "(the whole model)"
    if exc is None:
        print(f"\n== {entry.name} [{mode}] submodule {name}: exports on its own")
        return
    print(f"\n== {entry.name} [{mode}] submodule {name}: {category}")
    print("".join(traceback.format_exception(exc)))
    raise GateTripped(f"{entry.name} [{mode}] submodule {name}: {category}")


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"
