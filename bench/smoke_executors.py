"""Smoke sweep wall time: in-process executor vs Ray (embedded, one worker per core).

    .venv/bin/python bench/smoke_executors.py [--manifest manifests/smoke.yaml] [--out DIR]

Runs the same manifest both ways, one after the other on the same machine, and prints
wall time, rows and status counts for each (read back from each run's _run.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORTSWEEP = os.path.join(os.path.dirname(sys.executable), "exportsweep")


def run(manifest: str, out: str, run_id: str, extra: list[str]) -> dict:
    t0 = time.monotonic()
    subprocess.run([EXPORTSWEEP, "run", manifest, "--out", out, "--run-id", run_id, *extra],
                   check=True, cwd=os.path.dirname(HERE), stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    with open(os.path.join(out, f"run_id={run_id}", "_run.json")) as f:
        meta = json.load(f)
    return {"run_id": run_id, "command_wall_s": round(wall, 1), "sweep_wall_s": meta["wall_s"],
            "rows": meta["rows"], "counts": meta["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="manifests/smoke.yaml")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="exportsweep-bench-")
    results = [run(args.manifest, out, "bench-inprocess", ["--in-process"]),
               run(args.manifest, out, "bench-ray", [])]
    print(f"{'executor':<12} {'command s':>10} {'sweep s':>8} {'rows':>5}  counts")
    for name, r in zip(("in-process", "ray"), results):
        print(f"{name:<12} {r['command_wall_s']:>10} {r['sweep_wall_s']:>8} {r['rows']:>5}  "
              f"{r['counts']}")
    print(f"results in {out}")


if __name__ == "__main__":
    main()
