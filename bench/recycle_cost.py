"""A worker's memory over a long sweep, and what recycling workers costs.

    .venv/bin/python bench/recycle_cost.py MANIFEST [--only GLOB]... [--entries N]
        [--ceilings 0,default,2048] [--out DIR]

Picks N entries of the manifest's selection, spread evenly over it (entry i * len // N), and
runs them once per memory ceiling with ``exportsweep run`` on embedded local Ray, in manifest
order (``--schedule manifest``, so the runs differ only by recycling): ``0`` never recycles,
``default`` is exportsweep's own ceiling (60% of the node's memory divided among its workers),
a number is ``--max-worker-rss-mb``. Prints, as Markdown, each run's wall time and its cost
against the run that never recycles, how many workers were replaced and how long their slots
stood empty, and each worker process's RSS after its first pair, its largest and after its
last pair (the rows' ``peak_rss_mb``), with a coarse trajectory. The machine should be idle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from exporter.errors import ExportsweepError  # noqa: E402
from exporter.manifest import load_manifest  # noqa: E402
from nightly_summary import replacements  # noqa: E402
from orchestrator.results.layout import run_dir  # noqa: E402
from orchestrator.results.runs import read_run  # noqa: E402
from zoo_bench import EXPORTSWEEP, _commit, _glob_literal  # noqa: E402


def pick(names: list[str], n: int) -> list[str]:
    if n >= len(names):
        return list(names)
    return [names[i * len(names) // n] for i in range(n)]


def run_once(manifest: str, names: list[str], out: str, run_id: str, ceiling: str) -> float:
    extra = [] if ceiling == "default" else ["--max-worker-rss-mb", ceiling]
    only = [a for name in names for a in ("--only", _glob_literal(name))]
    t0 = time.monotonic()
    subprocess.run([EXPORTSWEEP, "run", manifest, "--out", out, "--run-id", run_id,
                    "--schedule", "manifest", *extra, *only], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def trajectory(values: list[float], points: int = 6) -> str:
    if len(values) <= points:
        picked = values
    else:
        picked = [values[i * (len(values) - 1) // (points - 1)] for i in range(points)]
    return " → ".join(f"{v / 1024:.1f}" for v in picked)


def describe(out: str, run_id: str, wall: float, base_wall: float | None, ceiling: str
             ) -> tuple[list[str], int]:
    """The run's table line and its workers' lines; how many workers it replaced."""
    run = read_run(out, run_id)
    rows = sorted((r for r in run.final_rows if r.get("peak_rss_mb")),
                  key=lambda r: r["started_at"])
    gaps = replacements(os.path.join(run_dir(out, run_id), "_logs", "driver.jsonl"))
    cost = f"{100 * (wall / base_wall - 1):+.1f}%" if base_wall else "(baseline)"
    limit = run.meta.cluster.get("max_worker_rss_mb") if run.meta and run.meta.cluster else None
    named = "never" if not limit else f"{limit:.0f} MiB"
    lines = [f"| {ceiling} ({named}) | {wall:.1f} | {cost} | {len(gaps)} | "
             f"{sum(g for _, g in gaps):.0f} | {len(rows)} |"]
    workers: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        workers[r.get("worker_id") or "?"].append(r["peak_rss_mb"])
    per_worker = [f"  - `{w}`: {len(v)} pairs, RSS GiB {trajectory(v)} (max {max(v) / 1024:.1f})"
                  for w, v in workers.items()]
    return lines + per_worker, len(gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB")
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--ceilings", default="0,default",
                        help="comma-separated: 0 (never), default, or MiB")
    parser.add_argument("--out", help="results folder (default: a new temporary one)")
    args = parser.parse_args()
    try:
        selected = load_manifest(args.manifest).select(args.only)
    except ExportsweepError as exc:                    # one line per mistake, as the CLI says
        print(exc, file=sys.stderr)
        return exc.exit_code
    names = pick([e.name for e in selected], args.entries)
    out = args.out or tempfile.mkdtemp(prefix="recycle-cost-")
    ceilings = [c.strip() for c in args.ceilings.split(",") if c.strip()]
    walls = {}
    for ceiling in ceilings:
        walls[ceiling] = run_once(args.manifest, names, out, f"rss-{ceiling}", ceiling)
    base = walls.get("0")
    print(f"`{args.manifest}`: {len(names)} entries ({', '.join(args.only) or 'all'}, spread "
          f"evenly), manifest order, local Ray. {time.strftime('%Y-%m-%d')}, commit "
          f"`{_commit()}`, {os.cpu_count()} cores.\n")
    print("| ceiling | wall s | cost | workers replaced | slots empty s | pairs |")
    print("|---|---:|---:|---:|---:|---:|")
    details, unreached = [], []
    for ceiling in ceilings:
        (first, *workers), replaced = describe(out, f"rss-{ceiling}", walls[ceiling], base,
                                               ceiling)
        print(first)
        details += [f"- ceiling {ceiling}:"] + workers
        if ceiling != "0" and not replaced:
            unreached.append(ceiling)
    if unreached and base is not None:
        print(f"\nNo worker reached the ceiling {', '.join(unreached)}: those runs did the same "
              f"work as the one that never recycles, so their cost is the machine's run-to-run "
              f"spread, not recycling.")
    print("\nEach worker process (a replaced one is a new process): RSS after its first pair "
          "→ ... → after its last.\n")
    print("\n".join(details))
    print(f"\nresults in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
