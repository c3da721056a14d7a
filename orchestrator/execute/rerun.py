"""``--flaky-reruns N``: run an entry again in N fresh processes and compare the outcomes.

An outcome is what a row says the model did in one mode: status, category and failed stage.
Each rerun is a new interpreter (``python -m orchestrator.execute.rerun``) that reads the
manifest, runs the entry's modes through the same pipeline and prints its outcomes as JSON:
nothing of the first run's process (imported model code, caches, seeds drawn, memory
addresses, the hash seed) carries over. An entry whose outcome in some mode differs between
its first run and any rerun is flaky; its rows carry every outcome seen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from exporter.record import Record
from exporter.spec import Entry, PipelineOptions
from exporter.status import ERROR, FAIL, PASS, STATUS_BY_NAME
from exporter.taxonomy import INFRA_ERROR, TIMEOUT, WORKER_CRASH

OUTCOME_KEY = "exportsweep-outcomes:"


def outcome(status: str, category: str | None, stage: str | None) -> str:
    """``PASS`` or ``FAIL GRAPH_BREAK @export``: one mode's outcome, as rows list them. The
    manifest's expectation is left out (XFAIL is a FAIL, XPASS a PASS): it is the same in
    every run and says nothing of the model."""
    kind = STATUS_BY_NAME[status].kind if status in STATUS_BY_NAME else None
    label = PASS if kind == "pass" else FAIL if kind == "fail" else status
    return " ".join(p for p in (label, category, f"@{stage}" if stage else None) if p)


def rerun_outcomes(manifest_path: str, entry: Entry, modes: tuple[str, ...],
                   options: PipelineOptions, deadline_s: float) -> dict[str, str]:
    """One fresh-process rerun of ``entry``'s ``modes``: mode -> outcome (an ERROR outcome
    when the rerun process itself failed or ran past ``deadline_s``)."""
    cmd = [sys.executable, "-m", "orchestrator.execute.rerun", manifest_path, entry.name,
           *(a for m in modes for a in ("--mode", m))]
    if options.discover_dynamic:
        cmd += ["--dynamic", "discover"]
    if options.aoti:
        cmd += ["--aoti"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline_s,
                              env={**os.environ, "PYTHONHASHSEED": "random"})
    except subprocess.TimeoutExpired:
        return {m: outcome(ERROR, TIMEOUT, None) for m in modes}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(OUTCOME_KEY):
            found = json.loads(line[len(OUTCOME_KEY):])
            return {m: found.get(m, outcome(ERROR, INFRA_ERROR, None)) for m in modes}
    return {m: outcome(ERROR, WORKER_CRASH, None) for m in modes}


def mark_flaky(records: list[Record], manifest_path: str, entry: Entry,
               options: PipelineOptions, reruns: int, deadline_s: float) -> None:
    """Rerun ``entry`` ``reruns`` times; set ``flaky`` and the outcomes seen on its records."""
    first = {r.mode: outcome(r.status, r.category, r.failed_stage) for r in records}
    seen: dict[str, list[str]] = {m: [o] for m, o in first.items()}
    started = time.monotonic()
    for _ in range(reruns):
        left = deadline_s - (time.monotonic() - started)
        if left <= 1:
            break
        for mode, got in rerun_outcomes(manifest_path, entry, tuple(first), options,
                                        left).items():
            seen[mode].append(got)
    for r in records:
        outcomes = seen.get(r.mode, [])
        r.reruns = len(outcomes) - 1
        r.flaky = len(set(outcomes)) > 1
        r.flaky_outcomes = sorted(set(outcomes)) if r.flaky else []


def main(argv: list[str] | None = None) -> None:
    """The rerun process: the entry's outcomes as one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.execute.rerun")
    parser.add_argument("manifest")
    parser.add_argument("entry")
    parser.add_argument("--mode", action="append", dest="modes")
    parser.add_argument("--dynamic", choices=["discover"])
    parser.add_argument("--aoti", action="store_true")
    args = parser.parse_args(argv)
    from exporter.manifest import load_manifest
    from exporter.pipeline import run_entry
    from orchestrator.execute import logs

    logs.configure(None, console=None)
    entry = load_manifest(args.manifest).get(args.entry)
    options = PipelineOptions(discover_dynamic=args.dynamic == "discover", aoti=args.aoti)
    records = run_entry(entry, options, modes=tuple(args.modes) if args.modes else None)
    found: dict[str, Any] = {r.mode: outcome(r.status, r.category, r.failed_stage)
                             for r in records}
    print(OUTCOME_KEY + json.dumps(found), flush=True)


if __name__ == "__main__":
    main()        # the parent reads the outcome line, not an exit code
