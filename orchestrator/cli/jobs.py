"""``exportsweep submit`` and ``exportsweep jobs``: sweeps as Ray Jobs on a cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from exporter.errors import JobOutcome, UsageError
from exporter.manifest import load_manifest
from orchestrator.results.layout import check_run_id, new_run_id

DEFAULT_CLUSTER_OUT = "/tmp/exportsweep/results"


def cmd_submit(args: argparse.Namespace, run_parser: argparse.ArgumentParser) -> None:
    # Ray's Jobs SDK is imported by the two commands that talk to a cluster, and only then.
    from orchestrator.execute.ray import jobs

    address = _address(args)
    extra = list(args.extra)
    jobs.check_run_args(extra)
    _check_run_options(run_parser, [args.manifest, *extra])
    manifest = load_manifest(args.manifest)      # bad manifests stop here, not on the cluster
    jobs.check_shippable(manifest, args.working_dir)
    run_id = args.resume or args.run_id or args.submission_id or new_run_id()
    check_run_id(run_id, "--resume" if args.resume else "run id")
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
        return
    info = api.follow(job_id)
    print(jobs.describe(info, job_id))
    _raise_unless_succeeded(info, job_id)


def cmd_jobs(args: argparse.Namespace) -> None:
    from orchestrator.execute.ray import jobs

    api = jobs.JobsAPI(_address(args))
    if args.action == "status":
        print(jobs.describe(api.info(args.job_id), args.job_id))
    elif args.action == "stop":
        stopped = api.stop(args.job_id)
        print(f"job {args.job_id}: " + ("stop requested" if stopped else "already finished"))
    elif args.follow:
        api.info(args.job_id)
        info = api.follow(args.job_id)
        sys.stderr.write(jobs.describe(info, args.job_id) + "\n")
        _raise_unless_succeeded(info, args.job_id)
    else:
        sys.stdout.write(api.logs(args.job_id))


def _raise_unless_succeeded(info: Any, job_id: str) -> None:
    """A followed job's outcome becomes the command's: the driver's own exit code when Ray
    reports one, 130 for a stopped job, 1 otherwise."""
    status = str(info.status)
    if status == "SUCCEEDED":
        return
    code = int(info.driver_exit_code) if info.driver_exit_code not in (None, 0) else \
        130 if status == "STOPPED" else 1
    raise JobOutcome(f"job {job_id} ended {status}", code)


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
