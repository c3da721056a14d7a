"""``exportsweep diff``, ``junit``, ``report`` and ``compact``: the commands that read results."""

from __future__ import annotations

import argparse
import io
import sys
from typing import Any

from exporter.errors import GateTripped, UsageError
from exporter.schema import row_env
from exporter.text import printable
from orchestrator.results.compact import compact_run
from orchestrator.results.layout import ALIASES
from orchestrator.results.runs import RunData, list_runs, read_run, resolve_run
from orchestrator.results.storage import write_output
from orchestrator.views import diff
from orchestrator.views.junit import to_junit
from orchestrator.views.report import write_report


def cmd_diff(args: argparse.Namespace) -> None:
    gates = [g.strip() for g in args.fail_on.split(",") if g.strip()]
    unknown = [g for g in gates if g not in diff.GATES]
    if unknown:
        raise UsageError(f"--fail-on {unknown[0]!r}: choose from {', '.join(diff.GATES)}")
    if args.vs_env is not None:
        _diff_environments(args, gates)
        return
    if args.new_run is None:
        raise UsageError("diff needs BASE_RUN and NEW_RUN (or one run with --env A --vs-env B)")
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
            return
    base_id = resolve_run(base_dir, args.base_run, base_runs)
    base, new = read_run(base_dir, base_id), read_run(args.dir, new_id)
    problems = _warn_problems(base) + _warn_problems(new)
    base_rows, new_rows = base.final_rows, new.final_rows
    if args.env_name is not None:
        base_rows = _rows_in(base_rows, args.env_name, base_id)
        new_rows = _rows_in(new_rows, args.env_name, new_id)
    changes = diff.compare_runs(base_rows, new_rows, _thresholds(args))
    _show_and_gate(args, gates, changes, base_id, new_id, problems)


def _diff_environments(args: argparse.Namespace, gates: list[str]) -> None:
    """``diff DIR RUN --env A --vs-env B``: one run, environment A as the base."""
    if args.env_name is None:
        raise UsageError("--vs-env B goes with --env A: the environment compared against")
    if args.new_run is not None or args.base_dir:
        raise UsageError("--env A --vs-env B compares two environments of one run: give one "
                         "run (no NEW_RUN, no --base-dir)")
    run_id = resolve_run(args.dir, args.base_run)
    run = read_run(args.dir, run_id)
    problems = _warn_problems(run)
    base = _rows_in(run.final_rows, args.env_name, run_id)
    new = _rows_in(run.final_rows, args.vs_env, run_id)
    changes = diff.compare_runs(base, new, _thresholds(args), across=(args.env_name, args.vs_env))
    _show_and_gate(args, gates, changes, f"{run_id} [{args.env_name}]",
                   f"{run_id} [{args.vs_env}]", problems)


def _rows_in(rows: list[dict[str, Any]], env: str, run_id: str) -> list[dict[str, Any]]:
    found = sorted({row_env(r) for r in rows})
    if env not in found:
        raise UsageError(f"run {run_id} has no environment {env!r} (it has "
                         f"{', '.join(found) or 'no rows'})")
    return [r for r in rows if row_env(r) == env]


def _thresholds(args: argparse.Namespace) -> diff.Thresholds:
    return diff.Thresholds(args.max_err, args.time_ratio, mem_ratio=args.mem_ratio)


def _show_and_gate(args: argparse.Namespace, gates: list[str], changes: list[diff.Change],
                   base_id: str, new_id: str, problems: list[str]) -> None:
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
        raise GateTripped(f"--fail-on {args.fail_on}: {what} trip the gate")


def cmd_junit(args: argparse.Namespace) -> None:
    run_id = resolve_run(args.dir, args.run)
    run = read_run(args.dir, run_id)
    _warn_problems(run)
    tree = to_junit(run.final_rows, run_id)
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    write_output(args.output, buf.getvalue())
    print(f"{len(run.final_rows)} test cases of run {run_id} written to {args.output}")


def cmd_report(args: argparse.Namespace) -> None:
    result = write_report(args.dir, args.run, args.baseline, args.output)
    for problem in result.problems:
        sys.stderr.write(f"exportsweep: warning: {printable(problem)}\n")
    print(result.summary())


def cmd_compact(args: argparse.Namespace) -> None:
    run_id = resolve_run(args.dir, args.run)
    print(compact_run(args.dir, run_id).summary())


def _warn_problems(run: RunData) -> list[str]:
    """Say on stderr what is wrong with a run's files: never read a run short silently."""
    for problem in run.problems:
        sys.stderr.write(f"exportsweep: warning: run {run.run_id}: {printable(problem)}\n")
    return [f"run {run.run_id}: {p}" for p in run.problems]
