"""Whose seconds a pipeline run spends: torch's, the model's, or exportsweep's own.

    .venv/bin/python bench/pipeline_profile.py MANIFEST [--only GLOB ...] [--json FILE]

Runs every selected entry through the real pipeline in this process (default options, a
long-lived fresh-process loader, as a worker does) with timers around the calls that are not
exportsweep's code: torch's tracers and passes, the model's own forward, the fresh process the
reload check waits for. Time is attributed exclusively (a call inside another timed call counts
for the inner one only, e.g. the ``ep.module()`` that ``run_decompositions`` makes), and what no
timer covers is exportsweep's own work (comparisons, copies of inputs, state snapshots, files,
bookkeeping). One entry runs first, unmeasured, to pay the process's one-time imports.

Prints, as Markdown, the seconds and share of each part, overall and per family: the upper
bound on what removing more of exportsweep's own work could save. Run it on an idle machine.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from exporter import freshload, pipeline  # noqa: E402
from exporter.spec import PipelineOptions  # noqa: E402
from pipeline_savings import run_selection  # noqa: E402
from zoo_bench import _commit  # noqa: E402

OWN = "exportsweep's own"

# (part, owner object, attribute): the calls whose time is not exportsweep's code.
TIMED = (
    ("torch.export.export (tracing)", torch.export, "export"),
    ("run_decompositions (retracing)", torch.export.ExportedProgram, "run_decompositions"),
    ("torch.export.save", torch.export, "save"),
    ("ep.module() (unlifting)", torch.export.ExportedProgram, "module"),
    ("ep.validate() (verifier)", torch.export.ExportedProgram, "validate"),
    ("fresh-process reload (waiting)", freshload.FreshLoader, "check"),
    ("building the model", pipeline, "build_case"),
    ("eager runs (a deep copy of the model, its forward)", pipeline, "_run_eager"),
    ("eager runs in float64", pipeline, "_run_eager64"),
    ("program runs (forward, state snapshot)", pipeline, "_run_program"),
)


class Timers:
    """Exclusive seconds per part: a stack of running timed calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []      # [part, started, seconds of inner timed calls]

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [part, time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                spent = time.perf_counter() - frame[1]
                self.seconds[part] += spent - frame[2]
                if self._stack:
                    self._stack[-1][2] += spent
        return timed


def install(timers: Timers) -> None:
    for part, owner, name in TIMED:
        setattr(owner, name, timers.wrap(part, getattr(owner, name)))


def measure(entries: list[Any], loader: freshload.FreshLoader) -> list[dict[str, Any]]:
    options = PipelineOptions()
    pipeline.run_entry(entries[0], options, loader=loader)       # one-time imports, unmeasured
    timers = Timers()
    install(timers)
    rows = []
    for entry in entries:
        timers.seconds.clear()
        t0 = time.perf_counter()
        records = pipeline.run_entry(entry, options, loader=loader)
        wall = time.perf_counter() - t0
        parts = dict(timers.seconds)
        parts[OWN] = wall - sum(parts.values())
        rows.append({"entry": entry.name, "family": entry.family or "entries", "wall_s": wall,
                     "pipeline_s": sum(r.total_s or 0 for r in records), "parts": parts,
                     "statuses": sorted({r.status for r in records})})
        print(f"{entry.name}: {wall:.1f} s, own {parts[OWN]:.2f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]], manifest: str) -> str:
    commit = _commit()
    families = sorted({r["family"] for r in rows})
    names = [p for p, _, _ in TIMED] + [OWN]
    total = {f: sum(r["wall_s"] for r in rows if r["family"] == f) for f in families}
    wall = sum(total.values())
    lines = [f"`bench/pipeline_profile.py {manifest}`: {datetime.now(timezone.utc):%Y-%m-%d}, "
             f"commit {commit}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"torch {torch.__version__}; {len(rows)} entries, {wall:.1f} s of run_entry "
             f"({sum(r['pipeline_s'] for r in rows):.1f} s of stage seconds)", "",
             "| part | " + " | ".join(families) + " | all (s) | share |",
             "|---|" + "---:|" * (len(families) + 2)]
    for name in sorted(names, key=lambda n: -sum(r["parts"].get(n, 0) for r in rows)):
        per = [sum(r["parts"].get(name, 0) for r in rows if r["family"] == f) for f in families]
        every = sum(per)
        cells = " | ".join(f"{s:.1f} ({s / total[f] * 100:.0f}%)" if total[f] else "-"
                           for s, f in zip(per, families))
        lines.append(f"| {name} | {cells} | {every:.1f} | {every / wall * 100:.1f}% |")
    return "\n".join(lines)


def main() -> int:
    return run_selection(__doc__.splitlines()[0], measure, table)[0]


if __name__ == "__main__":
    sys.exit(main())
