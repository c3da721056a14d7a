"""The orchestrator alone at scale: N no-op entries through the real supervisor and sink.

    .venv/bin/python bench/orchestrator_scale.py [--entries 100000] [--out DIR]

Writes a manifest of ``{source: noop, count: N}`` (one mode, no torch work), runs it twice
with ``exportsweep run`` on embedded local Ray (the second run has the first as history),
and reports, as Markdown:

- dispatch throughput: entries per second from the first worker ready to the last row
  (the driver's log), and for the whole command;
- the driver's peak RSS (VmHWM of the ``exportsweep`` process, polled) and its RSS over
  the run (sampled every 0.5 s: flat is the goal);
- files written per run, and the wall time of ``exportsweep report`` and ``diff`` on them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run(manifest: str, out: str, run_id: str) -> dict:
    t0 = time.monotonic()
    proc = subprocess.Popen([os.path.join(BIN, "exportsweep"), "run", manifest, "--out", out,
                             "--run-id", run_id], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []
    peak = [0]

    def poll() -> None:
        while proc.poll() is None:
            rss, hwm = _status_kb(proc.pid, "VmRSS"), _status_kb(proc.pid, "VmHWM")
            if rss is not None:
                samples.append((round(time.monotonic() - t0, 1), round(rss / 1024)))
            if hwm is not None:
                peak[0] = max(peak[0], hwm)
            time.sleep(0.5)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, err = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"exportsweep run failed ({proc.returncode}): {err[-2000:]}")
    wall = time.monotonic() - t0
    events = [json.loads(line) for line in
              open(os.path.join(out, f"run_id={run_id}", "_logs", "driver.jsonl"))]
    stamp = {e["event"]: datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
             for e in events if e["event"] in ("sweep started", "sweep finished")}
    ready = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
             for e in events if e["event"] == "worker ready"]
    with open(os.path.join(out, f"run_id={run_id}", "_run.json")) as f:
        meta = json.load(f)
    rows = meta["rows"]
    dispatch_s = (stamp["sweep finished"] - min(ready)).total_seconds()
    files = len([n for n in os.listdir(os.path.join(out, f"run_id={run_id}"))
                 if n.endswith(".parquet")])
    return {"run_id": run_id, "rows": rows, "command_s": round(wall, 1),
            "dispatch_s": round(dispatch_s, 1), "entries_per_s": round(rows / dispatch_s),
            "driver_peak_rss_mb": round(peak[0] / 1024), "files": files,
            "rss_samples_mb": samples}


def timed(*args: str) -> float:
    t0 = time.monotonic()
    subprocess.run([os.path.join(BIN, "exportsweep"), *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.monotonic() - t0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--out", help="results folder (default: a new temporary one)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    folder = args.out or tempfile.mkdtemp(prefix="exportsweep-scale-")
    os.makedirs(folder, exist_ok=True)
    manifest = os.path.join(folder, "noop.yaml")
    with open(manifest, "w") as f:
        f.write(f"version: 1\ndefaults: {{modes: [non-strict]}}\n"
                f"families:\n  - {{source: noop, count: {args.entries}, sleep_s: 0}}\n")
    out = os.path.join(folder, "results")
    runs = [run(manifest, out, "scale-1"), run(manifest, out, "scale-2")]
    report_s = timed("report", out, "--run", "scale-2", "-o", os.path.join(folder, "r.html"))
    diff_s = timed("diff", out, "scale-1", "scale-2", "--format", "json")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "report_s": report_s, "diff_s": diff_s}, f, indent=2)
    print(f"{args.entries} noop entries, one mode, embedded local Ray, {os.cpu_count()} cores\n")
    print("| run | rows | command s | dispatch s | entries/s | driver peak RSS MiB | files |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['run_id']} | {r['rows']} | {r['command_s']} | {r['dispatch_s']} | "
              f"{r['entries_per_s']} | {r['driver_peak_rss_mb']} | {r['files']} |")
    for r in runs:
        rss = [mb for _, mb in r["rss_samples_mb"]]
        if rss:
            quarters = [rss[min(len(rss) - 1, i * len(rss) // 4)] for i in range(4)] + [rss[-1]]
            print(f"\n{r['run_id']} driver RSS MiB at 0/25/50/75/100% of the run: "
                  f"{' / '.join(map(str, quarters))}")
    print(f"\n`exportsweep report` {report_s} s, `exportsweep diff` {diff_s} s")
    print(f"results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
