"""The ``exportsweep`` argument parser: every command, option and value check in one place.

Each command's handler lives in the module of its group (``sweep``: run, validate, repro;
``results``: diff, junit, report, compact; ``jobs``: submit, jobs; ``expect``: expect update).
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, NoReturn

from exporter import environments
from exporter.spec import MODES
from orchestrator.cli import expect, jobs, results, sweep
from orchestrator.execute.scheduling import SCHEDULES


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (the usage block buries it) pointing at --help.
    Options must be spelled out: an abbreviation accepted today would change meaning when an
    option starting the same way is added (and ``submit`` forwards options verbatim)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    run.add_argument("--force", action="store_true",
                     help="with --resume: resume although the manifest or the options select "
                          "other pairs than the run did (recorded in the run's history)")
    run.add_argument("--compact", action="store_true",
                     help="when the run finishes, merge its files into one (exportsweep compact)")
    run.add_argument("--schedule", choices=SCHEDULES, default="longest-first",
                     help="queue order: longest expected first, from the durations of the "
                          "folder's recent runs (default), or the manifest's order")
    run.add_argument("--env", action="append", default=[], type=_environment,
                     metavar="NAME=PYTHON|NAME=RUNTIME_ENV.yaml",
                     help="also run every entry in this environment: another virtualenv's "
                          "Python, or a Ray runtime environment file (repeatable; replaces a "
                          "manifest environment of that name; 'current' is the driver's own)")
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
    ray_opts.add_argument("--max-worker-rss-mb", type=_non_negative_float, metavar="M",
                          help="replace a worker whose memory grew past M MiB after its "
                               "entry (default: 60%% of the tightest node's memory divided "
                               "among its workers; 0: never)")
    ray_opts.add_argument("--worker-start-timeout", type=_positive_float, default=300.0,
                          metavar="S", help="give up a worker that is not ready after S "
                          "seconds (its pool's work is skipped if no such worker is left)")
    _pipeline_args(run)
    run.add_argument("--verbose", "-v", action="store_true", help="show debug logs on the console")
    run.set_defaults(func=sweep.cmd_run)

    diff = sub.add_parser("diff", help="what changed between two runs, per entry and mode, or "
                          "between two environments of one run (--env A --vs-env B)")
    diff.add_argument("dir", help="results folder or URI holding NEW_RUN (and BASE_RUN, unless "
                      "--base-dir)")
    diff.add_argument("base_run", help="a run id, or 'previous' (the run before the latest)")
    diff.add_argument("new_run", nargs="?", help="a run id, or 'latest' (omitted with "
                      "--vs-env: BASE_RUN is the one run whose environments are compared)")
    diff.add_argument("--env", dest="env_name", metavar="A",
                      help="compare only this environment's rows (with --vs-env: the base)")
    diff.add_argument("--vs-env", metavar="B",
                      help="compare environment A (--env) with B within one run")
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
    diff.set_defaults(func=results.cmd_diff)

    junit = sub.add_parser("junit", help="write a run as JUnit XML for CI systems")
    junit.add_argument("dir", help="results folder or URI")
    junit.add_argument("--run", default="latest", metavar="ID",
                       help="the run to convert (default: latest)")
    junit.add_argument("-o", "--output", default="junit.xml", help="file or URI to write")
    junit.set_defaults(func=results.cmd_junit)

    report = sub.add_parser("report", help="write a run as one self-contained HTML page")
    report.add_argument("dir", help="results folder or URI")
    report.add_argument("--run", default="latest", metavar="ID",
                        help="the run to report: an id, 'latest' (default) or 'previous'")
    report.add_argument("--baseline", metavar="ID",
                        help="the run to compare with (default: the run before --run)")
    report.add_argument("-o", "--output", default="report.html",
                        help="file or URI to write (default: report.html)")
    report.set_defaults(func=results.cmd_report)

    compact = sub.add_parser("compact", help="merge a finished run's small files into one")
    compact.add_argument("dir", help="results folder or URI")
    compact.add_argument("--run", required=True, metavar="ID", help="the run to compact")
    compact.set_defaults(func=results.cmd_compact)

    submit = sub.add_parser(
        "submit", help="submit a sweep to a Ray cluster as a Ray Job",
        description="Submit `exportsweep run MANIFEST` as a Ray Job. Options not listed here "
                    "are `exportsweep run` options (--cpu-workers, --only, --mode, ...) and are "
                    "passed through, checked first.")
    submit.add_argument("manifest")
    submit.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                        help="Ray Jobs API, e.g. http://HEAD:8265 (default: "
                             "$RAY_API_SERVER_ADDRESS)")
    submit.add_argument("--out", default=jobs.DEFAULT_CLUSTER_OUT,
                        help="results folder as the cluster sees it: an object-store URI "
                             f"(s3://, gs://) or a shared path (default: {jobs.DEFAULT_CLUSTER_OUT} "
                             "on the head node)")
    ids = submit.add_mutually_exclusive_group()
    ids.add_argument("--run-id", help="run id (default: the submission id, else a timestamp)")
    ids.add_argument("--resume", metavar="RUN_ID", help="finish this run on the cluster")
    submit.add_argument("--submission-id", help="Ray's job id; the same id is refused twice, "
                        "which makes a nightly submission idempotent")
    submit.add_argument("--working-dir", default=".",
                        help="folder shipped to the cluster; must hold the manifest and its "
                             "model files (default: the current directory)")
    submit.add_argument("--runtime-env", metavar="FILE",
                        help="YAML/JSON runtime_env merged over exportsweep's (pip, env_vars, ...)")
    submit.add_argument("--wait", action="store_true",
                        help="stream the job's logs and exit with its outcome")
    submit.set_defaults(func=lambda args: jobs.cmd_submit(args, run), passthrough=True)

    jobs_ = sub.add_parser("jobs", help="a submitted sweep's status, logs, or stop it")
    jobs_.add_argument("action", choices=("status", "logs", "stop"))
    jobs_.add_argument("job_id", metavar="JOB")
    jobs_.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                      help="Ray Jobs API, e.g. http://HEAD:8265")
    jobs_.add_argument("--follow", "-f", action="store_true",
                      help="logs: stream until the job ends, then exit with its outcome")
    jobs_.set_defaults(func=jobs.cmd_jobs)

    expect_ = sub.add_parser("expect", help="maintain a manifest's expectations file")
    expect_sub = expect_.add_subparsers(dest="action", required=True, metavar="ACTION")
    update = expect_sub.add_parser(
        "update", help="write each entry's observed outcome (status, category, stage per mode) "
                       "into the expectations file the manifest names; comments and order stay")
    update.add_argument("manifest")
    update.add_argument("--from", dest="source", required=True, metavar="DIR",
                        help="results folder holding the run")
    update.add_argument("--run", default="latest", help="run id or alias (default: latest)")
    update.add_argument("--only", action="append", metavar="GLOB",
                        help="update only entries whose name matches (repeatable)")
    update.add_argument("--family", action="append", metavar="FAMILY",
                        help="update only entries of this family (repeatable)")
    update.add_argument("--env", dest="env_name", default="current", metavar="NAME",
                        help="in a run with several environments, the one whose outcomes "
                             "are expected (default: current, the driver's own)")
    update.add_argument("--dry-run", action="store_true",
                        help="print the change as a unified diff; write nothing")
    update.set_defaults(func=expect.cmd_expect)

    validate = sub.add_parser("validate", help="check a manifest and print its expanded entries")
    validate.add_argument("manifest")
    validate.set_defaults(func=sweep.cmd_validate)

    repro = sub.add_parser("repro", help="rerun one entry and mode in-process, with tracebacks")
    repro.add_argument("manifest")
    repro.add_argument("entry")
    repro.add_argument("--mode", choices=MODES, default=None,
                       help="the mode to rerun (default: every mode of the entry)")
    repro.add_argument("--submodule", metavar="PATH",
                       help="export only this submodule (e.g. roi_heads.box_roi_pool, from a "
                            "row's localized_paths) with the inputs it receives in the model")
    _pipeline_args(repro, modes=False)
    repro.set_defaults(func=sweep.cmd_repro)
    return parser


def _pipeline_args(p: argparse.ArgumentParser, modes: bool = True) -> None:
    if modes:
        p.add_argument("--mode", dest="modes", action="append", choices=MODES,
                       help="restrict every entry to this mode (repeatable)")
    p.add_argument("--draft-export", action="store_true",
                   help="on export failure, record what torch.export.draft_export reports")
    p.add_argument("--aoti", action="store_true", help="also compile with AOTInductor (slow)")
    if modes:      # run only: repro is one run by definition
        p.add_argument("--flaky-reruns", type=_non_negative_int, default=0, metavar="N",
                       help="rerun each entry N more times, each in a fresh process; an entry "
                            "whose outcome (status, category, stage) changes is marked flaky "
                            "with every outcome seen (diff and its gates treat it apart)")
    p.add_argument("--localize", action="store_true",
                   help="on an export failure, find the smallest submodules that fail to export "
                        "on their own (bisecting the module tree with the inputs each received; "
                        "within the entry's deadline)")
    p.add_argument("--dynamic", choices=["discover"],
                   help="discover: every entry as `dynamic_shapes: discover` (Dim.AUTO on every "
                        "dim of every tensor input; report what stayed dynamic and why not; "
                        "try each range's edges and random sizes inside it)")
    p.add_argument("--keep-artifacts", metavar="DIR",
                   help="keep the .pt2 files here, content-addressed by sha256")


def _environment(text: str) -> Any:
    try:
        return environments.parse_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value
