"""Sweeps as Ray Jobs: ``exportsweep submit`` and ``exportsweep jobs status|logs|stop``.

A submitted sweep is an ordinary ``exportsweep run`` executed by Ray's job manager on the
cluster (by default on the head node, holding no CPU or GPU: the entrypoint reserves no
resources, so every GPU goes to the GPU actors).  What travels with it, through the job's
runtime environment:

- ``working_dir``: the folder holding the manifest and its model files (default: the
  current directory; Ray honours ``.gitignore``; we also leave out virtualenvs and results);
- ``py_modules``: this checkout's ``exporter`` and ``orchestrator`` packages, so the driver
  and every worker run exactly the submitting version, whatever the cluster image holds
  (the image supplies torch and the rest of the pinned set: deploy/Dockerfile);
- anything in ``--runtime-env FILE`` (YAML or JSON), merged over that.

The run id is fixed at submission (the submission id when one is given), so the submitter
knows where the rows will land and a retried nightly resumes the same run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

import yaml
from ray.job_submission import JobSubmissionClient

from exporter.errors import OrchestratorError, UsageError
from exporter.manifest import Manifest
from exporter.spec import target_path

PACKAGES = ("exporter", "orchestrator")
EXCLUDES = (".git", ".venv", "venv", "results", "test-output", "**/__pycache__", "*.pt2",
            ".whl", ".gl")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Options of `run` that make no sense inside a submitted job (or that submit sets itself).
NOT_PASSED = ("--in-process", "--address", "--out", "--run-id", "--resume")


class JobsError(OrchestratorError):
    """The Ray Jobs API refused or could not be reached (bad input is a UsageError instead)."""


@dataclass(frozen=True)
class Submission:
    address: str
    manifest: str                       # as given on the command line
    run_id: str
    out: str
    resume: bool = False                # finish run_id rather than start it
    run_args: tuple[str, ...] = ()      # passed through to `exportsweep run`
    working_dir: str = "."
    submission_id: str | None = None
    runtime_env_file: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def entrypoint(sub: Submission) -> str:
    """The command Ray runs: the manifest path is relative to the shipped working_dir."""
    manifest = os.path.relpath(os.path.realpath(sub.manifest), os.path.realpath(sub.working_dir))
    return shlex.join(["python", "-m", "orchestrator", "run", manifest.replace(os.sep, "/"),
                       "--out", sub.out, "--resume" if sub.resume else "--run-id", sub.run_id,
                       *sub.run_args])


def check_shippable(manifest: Manifest, working_dir: str) -> None:
    """Every file the sweep reads must travel inside the working dir (Ray ships only that)."""
    root = os.path.realpath(working_dir) + os.sep
    problems = []
    for path in manifest.files:
        if not os.path.realpath(path).startswith(root):
            problems.append(f"{path}: manifest file lies outside the working dir {working_dir}")
    for entry in manifest.entries:
        for fld in ("entrypoint", "inputs"):
            value = getattr(entry, fld)
            path = target_path(value.split(":", 1)[0], entry.base_dir) \
                if isinstance(value, str) else None
            if path is not None and not os.path.realpath(path).startswith(root):
                problems.append(f"{entry.source}: entry {entry.name!r}: field '{fld}': "
                                f"{os.path.realpath(path)} lies outside the working dir "
                                f"{os.path.realpath(working_dir)} and would not be shipped "
                                f"(use --working-dir)")
    if problems:
        raise UsageError("\n".join(dict.fromkeys(problems)))


def runtime_env(sub: Submission) -> dict[str, Any]:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    env: dict[str, Any] = {
        "working_dir": os.path.abspath(sub.working_dir),
        "excludes": list(EXCLUDES),
        "py_modules": [os.path.join(here, p) for p in PACKAGES],
    }
    if sub.runtime_env_file:
        extra = _load_runtime_env(sub.runtime_env_file)
        for key, value in extra.items():
            if key == "env_vars" and isinstance(value, dict):
                env.setdefault("env_vars", {}).update(value)
            elif key == "excludes" and isinstance(value, list):
                env["excludes"] = list(dict.fromkeys([*env["excludes"], *value]))
            else:
                env[key] = value
    return env


def _load_runtime_env(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise UsageError(f"--runtime-env {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--runtime-env {path}: not YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--runtime-env {path}: must be a mapping (Ray's runtime_env), "
                         f"got {type(data).__name__}")
    return data


class JobsAPI:
    """One connection to a cluster's Jobs API (the client's constructor is itself a request)."""

    def __init__(self, address: str) -> None:
        # Ray's SDK narrates every upload at INFO on stderr; our own lines say what matters.
        for name in ("ray", "ray.dashboard.modules.dashboard_sdk",
                     "ray.dashboard.modules.job.sdk"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.address = address
        try:
            self.client = JobSubmissionClient(address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise JobsError(f"cannot reach the Ray Jobs API at {address}: "
                            f"{_first_line(exc)}") from None

    def submit(self, sub: Submission) -> str:
        """Submit; returns the job's submission id. A taken submission id is refused clearly."""
        if sub.submission_id:
            self._refuse_existing(sub.submission_id)
        try:
            return self.client.submit_job(
                entrypoint=entrypoint(sub), submission_id=sub.submission_id,
                runtime_env=runtime_env(sub),
                metadata={"exportsweep_run_id": sub.run_id, "exportsweep_out": sub.out,
                          **sub.metadata})
        except RuntimeError as exc:
            if sub.submission_id and "already exists" in str(exc):
                self._refuse_existing(sub.submission_id)    # lost a race: same message
            raise JobsError(f"Ray refused the job: {_first_line(exc)}") from None

    def _refuse_existing(self, submission_id: str) -> None:
        try:
            info = self.client.get_job_info(submission_id)
        except RuntimeError:
            return                                         # no such job: the id is free
        raise UsageError(f"a job with submission id {submission_id!r} already exists on "
                         f"{self.address} (status {info.status}): not submitted again. Follow "
                         f"it with `exportsweep jobs logs {submission_id} --address "
                         f"{self.address} --follow`")

    def info(self, job_id: str) -> Any:
        try:
            return self.client.get_job_info(job_id)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                raise UsageError(f"no job {job_id!r} on {self.address}") from None
            raise JobsError(f"cannot get job {job_id!r}: {_first_line(exc)}") from None

    def follow(self, job_id: str, stream: TextIO = sys.stdout) -> Any:
        """Stream the job's logs until it ends; returns its final JobInfo."""
        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                stream.write(chunk)
                stream.flush()

        try:
            asyncio.run(tail())
        except RuntimeError as exc:           # the log websocket broke: fall back to polling
            stream.write(f"exportsweep: log stream interrupted ({_first_line(exc)}); waiting\n")
        while True:
            info = self.client.get_job_info(job_id)
            if str(info.status) in TERMINAL:
                return info
            time.sleep(2)

    def stop(self, job_id: str) -> bool:
        self.info(job_id)                                  # unknown id: exit 2, clearly
        try:
            return bool(self.client.stop_job(job_id))
        except RuntimeError as exc:
            raise JobsError(f"cannot stop job {job_id!r}: {_first_line(exc)}") from None

    def logs(self, job_id: str) -> str:
        self.info(job_id)
        return self.client.get_job_logs(job_id)


def describe(info: Any, job_id: str) -> str:
    meta = info.metadata or {}
    lines = [f"job {job_id}: {info.status}"]
    if info.message:
        lines.append(f"  message:    {info.message}")
    lines.append(f"  entrypoint: {info.entrypoint}")
    if meta.get("exportsweep_run_id"):
        lines.append(f"  results:    {meta.get('exportsweep_out')} (run {meta['exportsweep_run_id']})")
    for label, ms in (("started", info.start_time), ("ended", info.end_time)):
        if ms:
            lines.append(f"  {label + ':':<11} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ms / 1000))} UTC")
    if info.driver_exit_code is not None:
        lines.append(f"  exit code:  {info.driver_exit_code}")
    return "\n".join(lines)


def check_run_args(args: Iterable[str]) -> None:
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in NOT_PASSED:
            raise UsageError(f"submit: {name} is not a run option here: the job joins its own "
                             f"cluster, and --out / --run-id / --resume are submit's own options")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return type(exc).__name__
