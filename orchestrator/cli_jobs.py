"""``exportsweep submit`` and ``exportsweep jobs``: the command line of :mod:`orchestrator.jobs`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from exporter.errors import UsageError

EXIT_OK, EXIT_INTERNAL = 0, 3
DEFAULT_CLUSTER_OUT = "/tmp/exportsweep/results"


def add_parsers(sub: argparse._SubParsersAction, run_parser: argparse.ArgumentParser,
                valid_run_id: Callable[[str], bool]) -> None:
    submit = sub.add_parser(
        "submit", help="submit a sweep to a Ray cluster as a Ray Job",
        description="Submit `exportsweep run MANIFEST` as a Ray Job. Options not listed here "
                    "are `exportsweep run` options (--cpu-workers, --only, --mode, ...) and are "
                    "passed through, checked first.")
    submit.add_argument("manifest")
    submit.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                        help="Ray Jobs API, e.g. http://HEAD:8265 (default: "
                             "$RAY_API_SERVER_ADDRESS)")
    submit.add_argument("--out", default=DEFAULT_CLUSTER_OUT,
                        help="results folder as the cluster sees it: an object-store URI "
                             f"(s3://, gs://) or a shared path (default: {DEFAULT_CLUSTER_OUT} "
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
    submit.set_defaults(func=lambda args: cmd_submit(args, run_parser, valid_run_id),
                        passthrough=True)

    jobs = sub.add_parser("jobs", help="a submitted sweep's status, logs, or stop it")
    jobs.add_argument("action", choices=("status", "logs", "stop"))
    jobs.add_argument("job_id", metavar="JOB")
    jobs.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                      help="Ray Jobs API, e.g. http://HEAD:8265")
    jobs.add_argument("--follow", "-f", action="store_true",
                      help="logs: stream until the job ends, then exit with its outcome")
    jobs.set_defaults(func=cmd_jobs)


def cmd_submit(args: argparse.Namespace, run_parser: argparse.ArgumentParser,
               valid_run_id: Callable[[str], bool]) -> int:
    from exporter.manifest import load_manifest
    from orchestrator import jobs
    from orchestrator.sweep import new_run_id

    address = _address(args)
    extra = list(args.extra)
    jobs.check_run_args(extra)
    _check_run_options(run_parser, [args.manifest, *extra])
    manifest = load_manifest(args.manifest)      # bad manifests stop here, not on the cluster
    jobs.check_shippable(manifest, args.working_dir)
    run_id = args.resume or args.run_id or args.submission_id or new_run_id()
    if not valid_run_id(run_id):
        raise UsageError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    sub = jobs.Submission(address=address, manifest=args.manifest, run_id=run_id, out=args.out,
                          resume=bool(args.resume), run_args=tuple(extra),
                          working_dir=args.working_dir, submission_id=args.submission_id,
                          runtime_env_file=args.runtime_env)
    api = jobs.JobsAPI(address)
    job_id = api.submit(sub)
    print(f"submitted job {job_id} to {address}\n"
          f"  run {run_id}: results in {args.out}\n"
          f"  follow: exportsweep jobs logs {job_id} --address {address} --follow")
    if not args.wait:
        return EXIT_OK
    info = api.follow(job_id)
    print(jobs.describe(info, job_id))
    return jobs.outcome_code(info)


def cmd_jobs(args: argparse.Namespace) -> int:
    from orchestrator import jobs

    api = jobs.JobsAPI(_address(args))
    if args.action == "status":
        print(jobs.describe(api.info(args.job_id), args.job_id))
        return EXIT_OK
    if args.action == "stop":
        stopped = api.stop(args.job_id)
        print(f"job {args.job_id}: " + ("stop requested" if stopped else "already finished"))
        return EXIT_OK
    if args.follow:
        api.info(args.job_id)
        info = api.follow(args.job_id)
        sys.stderr.write(jobs.describe(info, args.job_id) + "\n")
        return jobs.outcome_code(info)
    sys.stdout.write(api.logs(args.job_id))
    return EXIT_OK


def _address(args: argparse.Namespace) -> str:
    if not args.address:
        raise UsageError("--address: give the Ray Jobs API address, e.g. http://HEAD:8265 "
                         "(or set RAY_API_SERVER_ADDRESS)")
    return args.address


def _check_run_options(run_parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Parse the passed-through options as `run` would, so mistakes fail here with exit 2."""
    class _Refused(Exception):
        pass

    def refuse(message: str) -> None:
        raise _Refused(message)

    original = run_parser.error
    run_parser.error = refuse          # type: ignore[method-assign]
    try:
        run_parser.parse_args(argv)
    except _Refused as exc:
        raise UsageError(f"submit: run options: {exc}") from None
    finally:
        run_parser.error = original    # type: ignore[method-assign]
