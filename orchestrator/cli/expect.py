"""``exportsweep expect update``: keep a manifest's expectations file current from a run.

For every (entry, mode) of the selection with a final row that is the model's outcome (it
exported, or the model failed: not ERROR or SKIP), the file says what was observed when that
differs from the entry's own ``expect`` (PASS when it has none), and says nothing otherwise.
The file is edited in place (comments and order stay); ``--dry-run`` prints the change as a
unified diff instead.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import os
import sys

from exporter.errors import UsageError
from exporter.expectations import as_yaml, observed, rewrite
from exporter.manifest import Manifest, load_manifest
from exporter.schema import row_env
from exporter.spec import Expectation
from exporter.status import PASS
from orchestrator.results.runs import read_run, resolve_run

COLUMNS = ("entry", "mode", "env", "status", "category", "failed_stage")


def cmd_expect(args: argparse.Namespace) -> None:
    manifest = load_manifest(args.manifest)
    if manifest.expectations is None:
        raise UsageError(f"{args.manifest} names no expectations file: add "
                         f"`expectations: expected.yaml` at its top level")
    run_id = resolve_run(args.source, args.run)
    run = read_run(args.source, run_id, columns=COLUMNS)
    for problem in run.problems:
        print(f"warning: {problem}", file=sys.stderr)
    envs = sorted({row_env(r) for r in run.final_rows})
    if run.final_rows and args.env_name not in envs:
        raise UsageError(f"--env {args.env_name}: run {run_id} has no such environment (it has "
                         f"{', '.join(envs)})")
    rows = [r for r in run.final_rows if row_env(r) == args.env_name]
    changes = planned_changes(manifest, rows, args.only or [], args.family or [])
    try:
        before = open(manifest.expectations, encoding="utf-8").read() \
            if os.path.exists(manifest.expectations) else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{manifest.expectations}: cannot be read ({exc})") from None
    after = rewrite(before, changes) if changes else before
    if args.dry_run:
        diff = difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                    manifest.expectations, manifest.expectations + " (updated)")
        sys.stdout.write("".join(diff) or f"{manifest.expectations}: no change\n")
        return
    if after != before:
        tmp = manifest.expectations + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(after)
        os.replace(tmp, manifest.expectations)
    changed = len(changes)
    print(f"{manifest.expectations}: {changed} entr{'y' if changed == 1 else 'ies'} examined "
          f"from run {run_id}; {'updated' if after != before else 'no change'}")


def planned_changes(manifest: Manifest, rows: list[dict], only: list[str],
                    family: list[str]) -> dict[str, object]:
    """Entry name -> its new value in the file (None: drop it, its own expect holds)."""
    entries = {e.name: e for e in manifest.entries
               if (not only or any(fnmatch.fnmatchcase(e.name, p) for p in only))
               and (not family or e.family in family)}
    seen: dict[str, dict[str, Expectation]] = {}
    for r in rows:
        entry = entries.get(r["entry"])
        if entry is None or r["mode"] not in entry.modes:
            continue
        outcome = observed(r["status"], r.get("category"), r.get("failed_stage"))
        if outcome is not None:
            seen.setdefault(entry.name, {})[r["mode"]] = outcome
    changes: dict[str, object] = {}
    for name, per_mode in seen.items():
        entry = entries[name]
        own = manifest.own_expect.get(name, {})
        # Modes the run did not judge keep what the file says today.
        wanted = {**{m: x for m, x in entry.expect.items() if m not in per_mode}, **per_mode}
        wanted = {m: x for m, x in wanted.items()
                  if not _covers(own.get(m, Expectation(PASS)), x)}
        changes[name] = as_yaml(wanted, entry.modes) if wanted else None
    return changes


def _covers(expected: Expectation, outcome: Expectation) -> bool:
    """``expected`` already says ``outcome`` (a category or stage it leaves out matches any)."""
    return expected.status == outcome.status and \
        expected.category in (None, outcome.category) and expected.stage in (None, outcome.stage)
