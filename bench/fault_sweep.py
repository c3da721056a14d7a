"""Inject real faults into a Ray sweep and count the rows that come back.

    .venv/bin/python bench/fault_sweep.py [--timeout 8]

Runs tests/models/faults.py's segfault, os._exit, GIL-holding loop and sleep hang
next to normal models on embedded Ray, then prints, per entry, the rows expected
(one per attempt: crashes are retried once) and the rows found, with categories.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pyarrow.dataset as ds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = {  # entry -> (factory, rows expected, final category)
    "segfault": ("faults.py:make_segfault", 2, "WORKER_CRASH"),
    "os_exit": ("faults.py:make_exit", 2, "WORKER_CRASH"),
    "gil_loop": ("faults.py:make_gil_loop", 1, "TIMEOUT"),
    "sleep_hang": ("faults.py:make_sleep_hang", 1, "TIMEOUT"),
    "normal_a": ("tiny.py:make_guard", 1, "DATA_DEPENDENT_GUARD"),
    "normal_b": ("tiny.py:make_guard", 1, "DATA_DEPENDENT_GUARD"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", default="8")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="exportsweep-faults-")
    models = os.path.join(ROOT, "tests", "models")
    lines = ["version: 1", "defaults: {modes: [non-strict], timeout_s: 60}", "entries:"]
    for name, (factory, _, _) in FAULTS.items():
        lines += [f"  - name: {name}", f"    entrypoint: {models}/{factory}",
                  "    inputs: [{shape: [2, 3]}]"]
    manifest = os.path.join(tmp, "faults.yaml")
    with open(manifest, "w") as f:
        f.write("\n".join(lines) + "\n")
    out = os.path.join(tmp, "out")
    exe = os.path.join(os.path.dirname(sys.executable), "exportsweep")
    t0 = time.monotonic()
    subprocess.run([exe, "run", manifest, "--out", out, "--run-id", "faults", "--timeout",
                    args.timeout, "--cpu-workers", "2"], check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    rows = ds.dataset(out, partitioning="hive").to_table().to_pylist()
    print(f"{'entry':<12} {'expected':>8} {'found':>6}  final category       attempts")
    ok = True
    for name, (_, expected, category) in FAULTS.items():
        mine = [r for r in rows if r["entry"] == name]
        final = [r for r in mine if r["final"]]
        got = final[0]["category"] if len(final) == 1 else f"{len(final)} final rows"
        ok &= len(mine) == expected and got == category
        print(f"{name:<12} {expected:>8} {len(mine):>6}  {got:<20} "
              f"{sorted(r['attempt'] for r in mine)}")
    print(f"faults injected: 4, rows expected: {sum(v[1] for v in FAULTS.values())}, "
          f"rows found: {len(rows)}, all as expected: {ok}, wall {wall:.1f} s")


if __name__ == "__main__":
    main()
