"""What sharing work between the two modes saves, and proof that it changes no verdict.

    .venv/bin/python bench/pipeline_savings.py MANIFEST [--only GLOB ...] [--json FILE]

Runs every selected entry through the real pipeline in this process twice: once with
``PipelineOptions(share_between_modes=False)`` (every stage recomputed per mode: the pipeline as
it was) and once with the default (one decomposition for two identical programs, one
``ep.module()`` per mode, one decomposition table per process). The order alternates from one
entry to the next (off/on, on/off...) so that neither side always runs warm; one entry is run
first, unmeasured, to pay the process's one-time imports.

Prints, as Markdown, each entry's pipeline seconds (records' total_s, both modes) before and
after, the saving per family and overall, and compares every field a verdict is made of
(status, category, signature, failed stage, stage statuses, exception type, user frame, graph
and decomposition facts, sizes tested). Exit status 1 if any verdict differs. Run it on an
otherwise idle machine: the seconds are wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections import defaultdict
from datetime import datetime, timezone
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from exporter.errors import ExportsweepError  # noqa: E402
from exporter.freshload import FreshLoader  # noqa: E402
from exporter.manifest import load_manifest  # noqa: E402
from exporter.pipeline import run_entry  # noqa: E402
from exporter.spec import PipelineOptions  # noqa: E402
from orchestrator.execute import logs  # noqa: E402
from zoo_bench import _commit  # noqa: E402

VERDICT = ("mode", "status", "category", "signature", "failed_stage", "stage_status",
           "exception_type", "error_code", "user_frame", "node_count", "decomposed_node_count",
           "non_core_ops", "graph_inputs", "graph_outputs", "dynamic_sizes_tested")


def verdicts(records: list) -> list[tuple]:
    return [tuple(json.dumps(getattr(r, f), sort_keys=True, default=str) for f in VERDICT)
            for r in records]


def measure(entries, loader) -> list[dict]:
    sides = {"before": PipelineOptions(share_between_modes=False), "after": PipelineOptions()}
    run_entry(entries[0], sides["after"], loader=loader)            # one-time imports, unmeasured
    rows = []
    for i, entry in enumerate(entries):
        order = ("before", "after") if i % 2 == 0 else ("after", "before")
        got = {side: run_entry(entry, sides[side], loader=loader) for side in order}
        diff = [f"{VERDICT[k]}: {a[k]} != {b[k]}"
                for a, b in zip(verdicts(got["before"]), verdicts(got["after"]))
                for k in range(len(VERDICT)) if a[k] != b[k]]
        rows.append({"entry": entry.name, "family": entry.family or "entries",
                     "before_s": sum(r.total_s or 0 for r in got["before"]),
                     "after_s": sum(r.total_s or 0 for r in got["after"]),
                     "statuses": sorted({r.status for r in got["after"]}),
                     "differences": diff})
        print(f"{entry.name}: {rows[-1]['before_s']:.1f} s -> {rows[-1]['after_s']:.1f} s"
              f"{'  VERDICTS DIFFER: ' + '; '.join(diff) if diff else ''}",
              file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], manifest: str) -> str:
    commit = _commit()
    lines = [f"`bench/pipeline_savings.py {manifest}`: {datetime.now(timezone.utc):%Y-%m-%d}, "
             f"commit {commit}, {os.cpu_count()} cores, {platform.machine()}, "
             f"Python {platform.python_version()}", "",
             "| family | entries | before (s) | after (s) | saved | verdicts identical |",
             "|---|---:|---:|---:|---:|---|"]
    by_family = defaultdict(list)
    for row in rows:
        by_family[row["family"]].append(row)
    for family, group in sorted(by_family.items()) + [("**all**", rows)]:
        before = sum(r["before_s"] for r in group)
        after = sum(r["after_s"] for r in group)
        same = sum(not r["differences"] for r in group)
        lines.append(f"| {family} | {len(group)} | {before:.1f} | {after:.1f} | "
                     f"{(1 - after / before) * 100 if before else 0:.0f}% | {same}/{len(group)} |")
    lines += ["", "| entry | before (s) | after (s) | saved |", "|---|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: -r["before_s"]):
        saved = (1 - row["after_s"] / row["before_s"]) * 100 if row["before_s"] else 0
        lines.append(f"| {row['entry']} | {row['before_s']:.1f} | {row['after_s']:.1f} | "
                     f"{saved:.0f}% |")
    return "\n".join(lines)


def run_selection(description: str, measure: Callable[[list, FreshLoader], list[dict]],
                  table: Callable[[list[dict], str], str]) -> tuple[int, list[dict]]:
    """The command line shared by the in-process pipeline benchmarks: MANIFEST [--only GLOB]
    [--json FILE]; measures the selection with one long-lived reload process, prints the table.
    Returns (2 when nothing is selected else 0, the rows)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("manifest")
    parser.add_argument("--only", action="append", help="entry name glob (repeatable)")
    parser.add_argument("--json", help="also write the per-entry rows here")
    args = parser.parse_args()
    logs.configure()                                   # warnings only, on stderr
    try:
        entries = list(load_manifest(args.manifest).select(args.only))
    except ExportsweepError as exc:                    # one line per mistake, as the CLI says
        print(exc, file=sys.stderr)
        return exc.exit_code, []
    if not entries:
        print("no entries selected", file=sys.stderr)
        return 2, []
    with FreshLoader() as loader:
        loader.start()
        rows = measure(entries, loader)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(table(rows, args.manifest))
    return 0, rows


def main() -> int:
    status, rows = run_selection(__doc__.splitlines()[0], measure, table)
    return 1 if any(r["differences"] for r in rows) else status

if __name__ == "__main__":
    sys.exit(main())
