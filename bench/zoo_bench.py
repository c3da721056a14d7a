"""exportsweep against the alternatives, on one selection, in one run.

    .venv/bin/python bench/zoo_bench.py MANIFEST [--only GLOB] [--out DIR] [--skip a,b,c]

Runs the same (entry, mode) pairs three ways, one after the other on this machine:

  (a) ``exportsweep run`` on embedded local Ray (one worker per core, the defaults);
  (b) ``exportsweep run --in-process``: one process, one entry after another;
  (c) the way PyTorch's own benchmark runner isolates models: one fresh subprocess per model,
      one at a time, each running the same pipeline (``exportsweep run --in-process --only
      NAME``, so imports, the reload process and the result write are paid per model).

and prints, as Markdown, the wall time of each, the ratios (a)/(b) and (a)/(c), CPU utilisation
(busy share of all cores over the wall time, from /proc/stat) and peak memory in use on the
machine above the idle baseline (/proc/meminfo, sampled every 0.25 s), with the date, the
commit and the machine. The machine should be otherwise idle. It also checks that the three
agree on every pair's status and category (a benchmark of different work would mean nothing).
The selection is listed here first, which also fills the family catalog cache
(exporter/families/cache.py) as any earlier run would: all three ways start warm, as nightly
runs after the first do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from exporter.manifest import load_manifest  # noqa: E402
from orchestrator.results.runs import read_run  # noqa: E402

EXPORTSWEEP = os.path.join(os.path.dirname(sys.executable), "exportsweep")


def _cpu_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]                   # idle + iowait
    return sum(fields) - idle, sum(fields)


def _used_mb() -> float:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


@contextmanager
def measured() -> Iterator[dict]:
    """Wall time, CPU utilisation and peak memory in use (above the start) of a block."""
    facts: dict = {}
    stop = threading.Event()
    base = _used_mb()
    peak = [base]

    def sample() -> None:
        while not stop.wait(0.25):
            peak[0] = max(peak[0], _used_mb())

    thread = threading.Thread(target=sample, daemon=True)
    busy0, total0 = _cpu_jiffies()
    t0 = time.monotonic()
    thread.start()
    try:
        yield facts
    finally:
        stop.set()
        thread.join()
        busy1, total1 = _cpu_jiffies()
        facts["wall_s"] = round(time.monotonic() - t0, 1)
        facts["cpu_util"] = round((busy1 - busy0) / max(1, total1 - total0), 3)
        facts["peak_mem_mb"] = round(peak[0] - base)


def _glob_literal(name: str) -> str:
    """``--only`` takes globs: match exactly this name."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _run(manifest: str, out: str, run_id: str, *extra: str) -> None:
    subprocess.run([EXPORTSWEEP, "run", manifest, "--out", out, "--run-id", run_id, *extra],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _verdicts(out: str, run_ids: list[str]) -> dict[tuple[str, str], tuple[str, str | None]]:
    verdicts = {}
    for run_id in run_ids:
        for r in read_run(out, run_id).final_rows:
            verdicts[(r["entry"], r["mode"])] = (r["status"], r["category"])
    return verdicts


def _pipeline_s(out: str, run_ids: list[str]) -> float:
    return round(sum(r["total_s"] or 0.0 for run_id in run_ids
                     for r in read_run(out, run_id).final_rows), 1)


def bench(manifest: str, only: list[str], out: str, skip: set[str]) -> dict:
    names = [e.name for e in load_manifest(manifest).select(only)]
    selection = [a for glob in only for a in ("--only", glob)]
    results: dict = {"manifest": manifest, "only": only, "entries": len(names), "ways": {}}
    if "a" not in skip:
        with measured() as facts:
            _run(manifest, out, "a-ray", *selection)
        results["ways"]["a"] = {**facts, "runs": ["a-ray"]}
    if "b" not in skip:
        with measured() as facts:
            _run(manifest, out, "b-inprocess", "--in-process", *selection)
        results["ways"]["b"] = {**facts, "runs": ["b-inprocess"]}
    if "c" not in skip:
        runs = []
        with measured() as facts:
            for i, name in enumerate(names):
                run_id = f"c-{i:05d}"
                _run(manifest, out, run_id, "--in-process", "--only", _glob_literal(name))
                runs.append(run_id)
        results["ways"]["c"] = {**facts, "runs": runs}
    verdicts = {k: _verdicts(out, w["runs"]) for k, w in results["ways"].items()}
    for key, way in results["ways"].items():
        way["pairs"] = len(verdicts[key])
        way["pipeline_s"] = _pipeline_s(out, way["runs"])
    first = next(iter(verdicts.values()), {})
    results["disagreements"] = sorted(
        f"{e} [{m}]: " + " / ".join(f"{k}={v.get((e, m))}" for k, v in verdicts.items())
        for (e, m) in first if len({str(v.get((e, m))) for v in verdicts.values()}) > 1)
    return results


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def markdown(results: dict) -> str:
    import torch
    ways = results["ways"]
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [f"`{results['manifest']}`" + (f" `--only {' '.join(results['only'])}`"
                                            if results["only"] else "")
             + f": {results['entries']} entries. {datetime.now(timezone.utc):%Y-%m-%d}, commit "
             f"`{_commit()}`, {os.cpu_count()} cores, {mem_gb:.0f} GiB, Python "
             f"{platform.python_version()}, torch {torch.__version__}.", "",
             "| way | wall s | pipeline s | CPU utilisation | peak memory MiB | pairs |",
             "|---|---|---|---|---|---|"]
    label = {"a": "(a) exportsweep, local Ray", "b": "(b) exportsweep --in-process",
             "c": "(c) one subprocess per model"}
    for key, w in ways.items():
        lines.append(f"| {label[key]} | {w['wall_s']} | {w['pipeline_s']} | "
                     f"{100 * w['cpu_util']:.0f}% | {w['peak_mem_mb']} | {w['pairs']} |")
    lines.append("")
    if "a" in ways:
        for other in ("b", "c"):
            if other in ways:
                lines.append(f"- (a)/({other}) = **{ways['a']['wall_s'] / ways[other]['wall_s']:.2f}**")
    lines.append(f"- verdicts that differ between the ways: {len(results['disagreements'])}"
                 + "".join(f"\n  - {d}" for d in results["disagreements"][:10]))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB")
    parser.add_argument("--out", help="results folder (default: a new temporary one)")
    parser.add_argument("--skip", default="", help="ways to leave out, e.g. 'c'")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="exportsweep-zoo-bench-")
    results = bench(args.manifest, args.only, out, set(filter(None, args.skip.split(","))))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(markdown(results), end="")
    print(f"\nresults in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
