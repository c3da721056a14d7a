"""The ``exportsweep`` command line.

Exit codes: 0 the command did its job (a sweep that completed, whatever the
models did), 2 bad input (one line per mistake, no traceback), 3 exportsweep
itself failed.  ``repro`` exits 1 when the reproduced row fails, like a test, and ``diff``
when a ``--fail-on`` gate trips.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import TYPE_CHECKING, Sequence

from exporter.errors import ExportsweepError, UsageError
from exporter.spec import MODES, PipelineOptions
from orchestrator import cli_jobs
from orchestrator.jobs import JobsError

if TYPE_CHECKING:
    from orchestrator.runs import RunData

EXIT_OK, EXIT_FAILED_ROW, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    # Models are built from code and config only: never let a library reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return args.func(args)
    except JobsError as exc:
        sys.stderr.write(f"exportsweep: {exc}\n")
        return EXIT_INTERNAL
    except ExportsweepError as exc:
        sys.stderr.write(f"exportsweep: {exc}\n" if "\n" not in str(exc) else
                         "".join(f"exportsweep: {line}\n" for line in str(exc).splitlines()))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("exportsweep: interrupted\n")
        return 130
    except Exception:  # noqa: BLE001 - our own bug: say so, with the traceback
        sys.stderr.write("exportsweep: internal error (please report):\n" + traceback.format_exc())
        return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exportsweep",
        description="Sweep a PyTorch model zoo through torch.export and classify every failure.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a manifest and write the results as Parquet")
    run.add_argument("manifest")
    run.add_argument("--out", default="results", help="results folder (default: ./results)")
    run.add_argument("--run-id", help="name of this run (default: UTC timestamp + random)")
    run.add_argument("--only", action="append", default=[], metavar="GLOB",
                     help="run only entries whose name matches (repeatable)")
    run.add_argument("--resume", metavar="RUN_ID",
                     help="finish an interrupted run: run only its missing (entry, mode) pairs")
    run.add_argument("--compact", action="store_true",
                     help="when the run finishes, merge its files into one (exportsweep compact)")
    run.add_argument("--flush-interval", type=_non_negative_float, metavar="S",
                     help="publish result rows at most every S seconds (default: per entry on "
                          "a local disk, 10 on object stores, where each file costs a PUT)")
    ray_opts = run.add_argument_group("workers (Ray)")
    ray_opts.add_argument("--in-process", action="store_true",
                          help="no Ray: run every entry in this process, one after another")
    ray_opts.add_argument("--address", help="join this Ray cluster ('auto' or host:port) "
                          "instead of starting an embedded one")
    ray_opts.add_argument("--cpu-workers", type=_non_negative_int, metavar="N",
                          help="CPU workers (default: the cluster's CPUs / --cpus-per-worker)")
    ray_opts.add_argument("--gpu-workers", type=_non_negative_int, metavar="N",
                          help="GPU workers, one GPU each (default: one per GPU)")
    ray_opts.add_argument("--cpus-per-worker", type=_positive_float, default=1.0, metavar="C",
                          help="CPUs (and torch threads) per worker (default 1)")
    ray_opts.add_argument("--timeout", type=_positive_float, metavar="S",
                          help="per-entry deadline from dispatch, overriding timeout_s")
    ray_opts.add_argument("--max-attempts", type=_positive_int, default=2, metavar="K",
                          help="attempts for an entry whose worker crashed or ran out of memory")
    ray_opts.add_argument("--recycle-after", type=_positive_int, metavar="N",
                          help="replace a worker after N entries")
    ray_opts.add_argument("--max-worker-rss-mb", type=_positive_float, metavar="M",
                          help="replace a worker whose memory grew past M MiB")
    ray_opts.add_argument("--worker-start-timeout", type=_positive_float, default=300.0,
                          metavar="S", help="give up a worker that is not ready after S "
                          "seconds (its pool's work is skipped if no such worker is left)")
    _pipeline_args(run)
    run.add_argument("--verbose", "-v", action="store_true", help="show debug logs on the console")
    run.set_defaults(func=cmd_run)

    diff = sub.add_parser("diff", help="what changed between two runs, per entry and mode")
    diff.add_argument("dir", help="results folder or URI holding NEW_RUN (and BASE_RUN, unless "
                      "--base-dir)")
    diff.add_argument("base_run", help="a run id, or 'previous' (the run before the latest)")
    diff.add_argument("new_run", help="a run id, or 'latest'")
    diff.add_argument("--base-dir", help="results folder holding BASE_RUN")
    diff.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    diff.add_argument("--all", action="store_true", help="also list unchanged pairs (table)")
    diff.add_argument("--fail-on", default="", metavar="LIST",
                      help="exit 1 on any of these: regression (new failures and earlier "
                           "stages), new_failure, regressed, missing, category_changed, "
                           "signature_changed, new_entry, drift, xpass, incomplete (a run "
                           "with missing or torn files, or pairs without a result)")
    diff.add_argument("--max-err", type=_positive_float, default=1e-4, metavar="X",
                      help="numeric drift: new max_abs_err above X and grown (default 1e-4)")
    diff.add_argument("--time-ratio", type=_positive_float, default=1.5, metavar="R",
                      help="wall-time drift: grown by this factor and by 1 s (default 1.5)")
    diff.add_argument("--mem-ratio", type=_positive_float, default=1.3, metavar="R",
                      help="memory drift: peak RSS grown by this factor (default 1.3)")
    diff.set_defaults(func=cmd_diff)

    junit = sub.add_parser("junit", help="write a run as JUnit XML for CI systems")
    junit.add_argument("dir", help="results folder or URI")
    junit.add_argument("--run", default="latest", metavar="ID",
                       help="the run to convert (default: latest)")
    junit.add_argument("-o", "--output", default="junit.xml", help="file or URI to write")
    junit.set_defaults(func=cmd_junit)

    report = sub.add_parser("report", help="write a run as one self-contained HTML page")
    report.add_argument("dir", help="results folder or URI")
    report.add_argument("--run", default="latest", metavar="ID",
                        help="the run to report: an id, 'latest' (default) or 'previous'")
    report.add_argument("--baseline", metavar="ID",
                        help="the run to compare with (default: the run before --run)")
    report.add_argument("-o", "--output", default="report.html",
                        help="file or URI to write (default: report.html)")
    report.set_defaults(func=cmd_report)

    compact = sub.add_parser("compact", help="merge a finished run's small files into one")
    compact.add_argument("dir", help="results folder or URI")
    compact.add_argument("--run", required=True, metavar="ID", help="the run to compact")
    compact.set_defaults(func=cmd_compact)

    cli_jobs.add_parsers(sub, run, _valid_run_id)

    validate = sub.add_parser("validate", help="check a manifest and print its expanded entries")
    validate.add_argument("manifest")
    validate.set_defaults(func=cmd_validate)

    repro = sub.add_parser("repro", help="rerun one entry and mode in-process, with tracebacks")
    repro.add_argument("manifest")
    repro.add_argument("entry")
    repro.add_argument("--mode", choices=MODES, default=None,
                       help="the mode to rerun (default: every mode of the entry)")
    _pipeline_args(repro, modes=False)
    repro.set_defaults(func=cmd_repro)
    return parser


def _pipeline_args(p: argparse.ArgumentParser, modes: bool = True) -> None:
    if modes:
        p.add_argument("--mode", dest="modes", action="append", choices=MODES,
                       help="restrict every entry to this mode (repeatable)")
    p.add_argument("--draft-export", action="store_true",
                   help="on export failure, record what torch.export.draft_export reports")
    p.add_argument("--aoti", action="store_true", help="also compile with AOTInductor (slow)")
    p.add_argument("--keep-artifacts", metavar="DIR",
                   help="keep the .pt2 files here, content-addressed by sha256")


def _pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    return PipelineOptions(draft_export=args.draft_export, aoti=args.aoti,
                           artifacts_dir=os.path.abspath(args.keep_artifacts)
                           if args.keep_artifacts else None)


def cmd_run(args: argparse.Namespace) -> int:
    from exporter.manifest import load_manifest
    from orchestrator import logs
    from orchestrator.driver import OrchestratorError, RayConfig
    from orchestrator.scheduling import RecyclePolicy, RetryPolicy
    from orchestrator.sink import log_path
    from orchestrator.sweep import SweepConfig, new_run_id, run_sweep

    manifest = load_manifest(args.manifest)
    if args.only and not manifest.select(args.only):
        raise UsageError(f"--only {' '.join(args.only)} matches no entry of {args.manifest}")
    if args.resume and args.run_id and args.resume != args.run_id:
        raise UsageError("--resume RUN_ID already names the run: drop --run-id")
    run_id = args.resume or args.run_id or new_run_id()
    if not _valid_run_id(run_id):
        raise UsageError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    if args.resume:
        _require_run(args.out, run_id, "--resume: ")
    elif args.run_id and _run_exists(args.out, run_id):
        raise UsageError(f"--run-id {run_id}: that run already exists in {args.out}; "
                         f"`--resume {run_id}` finishes it, or choose another id")
    logs.configure(log_path(args.out, run_id, "driver.jsonl"), verbose=args.verbose)
    config = SweepConfig(out=args.out, run_id=run_id, pipeline=_pipeline_options(args),
                         only=tuple(args.only), modes=tuple(args.modes) if args.modes else None,
                         resume=bool(args.resume), flush_interval_s=args.flush_interval,
                         compact=args.compact)
    ray_config = None if args.in_process else RayConfig(
        address=args.address, cpu_workers=args.cpu_workers, gpu_workers=args.gpu_workers,
        cpus_per_worker=args.cpus_per_worker, timeout_s=args.timeout,
        retry=RetryPolicy(args.max_attempts),
        recycle=RecyclePolicy(args.recycle_after, args.max_worker_rss_mb),
        start_timeout_s=args.worker_start_timeout)
    try:
        run_sweep(manifest, config, ray_config)
    except OrchestratorError as exc:
        sys.stderr.write(f"exportsweep: the orchestrator failed: {exc}\n")
        return EXIT_INTERNAL
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from orchestrator import diff
    from orchestrator.runs import ALIASES, list_runs, read_run, resolve_run

    gates = [g.strip() for g in args.fail_on.split(",") if g.strip()]
    unknown = [g for g in gates if g not in diff.GATES]
    if unknown:
        raise UsageError(f"--fail-on {unknown[0]!r}: choose from {', '.join(diff.GATES)}")
    base_dir = args.base_dir or args.dir
    # Aliases need every run's _run.json: read them once per folder.
    runs = list_runs(args.dir) if {args.new_run, args.base_run} & set(ALIASES) else None
    base_runs = runs if base_dir == args.dir else None
    new_id = resolve_run(args.dir, args.new_run, runs)
    if args.base_run == "previous":
        base_runs = list_runs(base_dir) if base_runs is None else base_runs
        if [r.run_id for r in base_runs] == [new_id]:
            # A nightly gate's first night: nothing to compare with is not a failure.
            print(f"diff: {new_id} is the first run in {base_dir}: nothing to compare it with")
            return EXIT_OK
    base_id = resolve_run(base_dir, args.base_run, base_runs)
    base, new = read_run(base_dir, base_id), read_run(args.dir, new_id)
    problems = _warn_problems(base) + _warn_problems(new)
    changes = diff.compare_runs(base.final_rows, new.final_rows,
                                diff.Thresholds(args.max_err, args.time_ratio,
                                                mem_ratio=args.mem_ratio))
    if args.format == "json":
        print(diff.to_json(changes, base_id, new_id, problems))
    elif args.format == "markdown":
        print(diff.to_markdown(changes, base_id, new_id, problems), end="")
    else:
        print(diff.to_table(changes, base_id, new_id, show_unchanged=args.all))
    tripped = diff.gate(changes, gates)
    if tripped or ("incomplete" in gates and problems):
        what = f"{len(tripped)} change(s)" + (f" and {len(problems)} data problem(s)"
                                              if "incomplete" in gates and problems else "")
        sys.stderr.write(f"exportsweep: --fail-on {args.fail_on}: {what} trip the gate\n")
        return EXIT_FAILED_ROW
    return EXIT_OK


def cmd_junit(args: argparse.Namespace) -> int:
    from orchestrator.junit import to_junit
    from orchestrator.runs import read_run
    from orchestrator.storage import write_output

    run_id = _resolve_run(args.dir, args.run)
    run = read_run(args.dir, run_id)
    _warn_problems(run)
    tree = to_junit(run.final_rows, run_id)
    import io
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    write_output(args.output, buf.getvalue())
    print(f"{len(run.final_rows)} test cases of run {run_id} written to {args.output}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import write_report

    result = write_report(args.dir, args.run, args.baseline, args.output)
    for problem in result.problems:
        sys.stderr.write(f"exportsweep: warning: {problem}\n")
    print(result.summary())
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    from orchestrator.compact import compact_run

    run_id = _resolve_run(args.dir, args.run)
    result = compact_run(args.dir, run_id)
    print(result.summary())
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from exporter.manifest import entry_table, load_manifest

    manifest = load_manifest(args.manifest)
    rows = entry_table(manifest.entries)
    columns = ["name", "family", "modes", "device", "inputs", "dynamic", "expect", "tags"]
    widths = {c: min(48, max([len(c)] + [len(r[c]) for r in rows])) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fit(r[c], widths[c]) for c in columns).rstrip())
    print(f"\n{len(rows)} entries from {len(manifest.files)} file(s): {args.manifest} is valid")
    return EXIT_OK


def cmd_repro(args: argparse.Namespace) -> int:
    from exporter.manifest import load_manifest
    from exporter.pipeline import run_entry
    from orchestrator import logs
    from orchestrator.sweep import repro_command

    logs.configure(None, verbose=True)
    manifest = load_manifest(args.manifest)
    entry = manifest.get(args.entry)
    if args.mode and args.mode not in entry.modes:
        raise UsageError(f"entry {entry.name!r} does not run in mode {args.mode!r} "
                         f"(its modes: {', '.join(entry.modes)})")
    repro = repro_command(manifest.path)
    records = run_entry(entry, _pipeline_options(args), modes=(args.mode,) if args.mode else None,
                        repro=lambda mode: repro(entry.name, mode))
    failed = False
    for r in records:
        print(f"\n== {r.entry} [{r.mode}] {r.status}"
              + (f" {r.category} at {r.failed_stage}" if r.category else "")
              + (f" (expected {r.expected})" if r.expected else ""))
        print("   stages: " + " ".join(f"{k}={v}" for k, v in r.stage_status.items()))
        if r.category:
            print(f"   exception: {r.exception_type}\n   error code: {r.error_code}\n"
                  f"   signature: {r.signature}\n   user frame: {r.user_frame}")
            print(r.traceback or r.message or "")
        failed = failed or r.status in ("FAIL", "ERROR")
    return EXIT_FAILED_ROW if failed else EXIT_OK


def _require_run(folder: str, run_id: str, prefix: str = "") -> None:
    if not _run_exists(folder, run_id):
        raise UsageError(f"{prefix}no run {run_id!r} in {folder}")


def _run_exists(folder: str, run_id: str) -> bool:
    from orchestrator.runs import run_exists
    return run_exists(folder, run_id)


def _resolve_run(folder: str, ref: str) -> str:
    """A run id from the command line: an id, 'latest' or 'previous' (exit 2 when unknown)."""
    from orchestrator.runs import resolve_run
    return resolve_run(folder, ref)


def _warn_problems(run: "RunData") -> list[str]:
    """Say on stderr what is wrong with a run's files: never read a run short silently."""
    for problem in run.problems:
        sys.stderr.write(f"exportsweep: warning: run {run.run_id}: {problem}\n")
    return [f"run {run.run_id}: {p}" for p in run.problems]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def _valid_run_id(run_id: str) -> bool:
    return bool(run_id) and all(c.isalnum() or c in "._-" for c in run_id) and run_id[0] != "."


if __name__ == "__main__":
    sys.exit(main())
