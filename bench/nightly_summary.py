"""The figures of one sweep, as the Markdown ``docs/nightly.md`` keeps.

    .venv/bin/python bench/nightly_summary.py DIR [--run ID] [--top N]

Reads one run (default: the latest) through exportsweep's checked reader and prints: wall time
(from ``_run.json``), entries and (entry, mode) pairs per hour, statuses, pass rate per family
and mode, categories with the stages they fail at, the largest clusters, peak worker RSS (the
highest any row saw, and per family), the slowest models (both modes' pipeline seconds) and
how much of the sweep's worker time they took.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from exporter.status import STATUS_BY_NAME  # noqa: E402
from orchestrator.results.clusters import cluster_rows  # noqa: E402
from orchestrator.results.layout import run_dir  # noqa: E402
from orchestrator.results.runs import read_run, resolve_run  # noqa: E402


def _seconds(meta) -> float | None:
    if not meta or not meta.started_at or not meta.finished_at:
        return None
    parse = datetime.fromisoformat
    return (parse(meta.finished_at) - parse(meta.started_at)).total_seconds()


def _passed(status: str) -> bool:
    return STATUS_BY_NAME[status].kind == "pass" if status in STATUS_BY_NAME else False


def replacements(log_path: str) -> list[tuple[str, float]]:
    """(reason, seconds its slot stood empty) for each worker the driver replaced: from the
    "worker replaced" event to the fresh worker's "worker ready"."""
    events = []
    try:
        with open(log_path, encoding="utf-8") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        return []
    ready = {e.get("worker"): e["timestamp"] for e in events if e.get("event") == "worker ready"}
    gaps = []
    for e in events:
        if e.get("event") == "worker replaced" and e.get("by") in ready:
            gap = datetime.fromisoformat(ready[e["by"]]) - datetime.fromisoformat(e["timestamp"])
            gaps.append((str(e.get("reason")), gap.total_seconds()))
    return gaps


def summary(run, top: int, gaps: list[tuple[str, float]]) -> str:
    rows = run.final_rows
    wall = _seconds(run.meta)
    entries = {r["entry"] for r in rows}
    out = [f"### Run `{run.run_id}`", ""]
    if wall:
        out.append(f"Wall time {wall / 60:.1f} min for {len(entries)} entries, {len(rows)} "
                   f"(entry, mode) pairs: {len(entries) * 3600 / wall:.0f} entries/hour, "
                   f"{len(rows) * 3600 / wall:.0f} pairs/hour.")
    statuses = Counter(r["status"] for r in rows)
    out += ["", "Statuses: " + ", ".join(f"{s} {n}" for s, n in statuses.most_common()), ""]

    out += ["| family | mode | pairs | passed | pass rate | FAIL | XFAIL | other |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["mode"])].append(r)
    for (family, mode), group in sorted(groups.items()):
        passed = sum(_passed(r["status"]) for r in group)
        counts = Counter(r["status"] for r in group)
        other = len(group) - passed - counts["FAIL"] - counts["XFAIL"]
        out.append(f"| {family} | {mode} | {len(group)} | {passed} | "
                   f"{100 * passed / len(group):.0f}% | {counts['FAIL']} | {counts['XFAIL']} | "
                   f"{other} |")

    failing = [r for r in rows if r.get("category")]
    by_category: dict[str, list[dict]] = defaultdict(list)
    for r in failing:
        by_category[r["category"]].append(r)
    out += ["", "| category | pairs | entries | stages |", "|---|---:|---:|---|"]
    for category, group in sorted(by_category.items(), key=lambda kv: -len(kv[1])):
        stages = Counter(r["failed_stage"] for r in group)
        out.append(f"| {category} | {len(group)} | {len({r['entry'] for r in group})} | "
                   + ", ".join(f"{s} {n}" for s, n in stages.most_common()) + " |")

    clusters = sorted(cluster_rows(rows), key=lambda c: (-c.n_entries, -c.rows))[:top]
    out += ["", "| cluster | category | stage | entries | modes | what | example entries |",
            "|---|---|---|---:|---|---|---|"]
    for c in clusters:
        what = (c.error_code or c.message or "").replace("|", "\\|").replace("\n", " ")[:90]
        out.append(f"| `{c.signature[:12]}` | {'/'.join(c.categories)} | {'/'.join(c.stages)} | "
                   f"{c.n_entries} | {'/'.join(c.modes)} | {what} | "
                   f"{', '.join(c.entries[:3])} |")

    rss = [r for r in rows if r.get("peak_rss_mb")]
    if rss:
        worst = max(rss, key=lambda r: r["peak_rss_mb"])
        out += ["", f"Peak worker RSS: {worst['peak_rss_mb']:.0f} MiB ({worst['entry']}, "
                f"{worst['mode']}). Per family (max / median):"]
        per_family: dict[str, list[float]] = defaultdict(list)
        for r in rss:
            per_family[r["family"]].append(r["peak_rss_mb"])
        for family, values in sorted(per_family.items()):
            values.sort()
            out.append(f"- {family}: {values[-1]:.0f} / {values[len(values) // 2]:.0f} MiB")

    workers: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(rss, key=lambda r: r["started_at"]):
        workers[r.get("worker_id") or "?"].append(r)
    if workers:
        out += ["", f"{len(workers)} worker processes ran the sweep (a replaced worker is a new "
                "one). RSS after its first entry, its largest, after its last entry:", "",
                "| worker | pairs | first entry MiB | max MiB | last entry MiB |",
                "|---|---:|---:|---:|---:|"]
        for worker, group in sorted(workers.items(), key=lambda kv: kv[1][0]["started_at"]):
            peaks = [r["peak_rss_mb"] for r in group]
            out.append(f"| {worker[:12]} | {len(group)} | {peaks[0]:.0f} | {max(peaks):.0f} | "
                       f"{peaks[-1]:.0f} |")
    if gaps and wall:
        slots = len({r.get("worker_id") for r in rows if r.get("pool") == "cpu"}) - len(gaps)
        empty = sum(g for _, g in gaps)
        reasons = Counter(reason.split(" ")[0] for reason, _ in gaps)
        why = ", ".join(f"{k} {n}" for k, n in reasons.items())
        out += ["", f"{len(gaps)} workers replaced ({why}); their slots stood empty "
                f"{empty:.0f} s in all, {100 * empty / (max(slots, 1) * wall):.1f}% of the sweep's "
                "worker time."]

    per_entry: dict[str, float] = defaultdict(float)
    for r in rows:
        per_entry[r["entry"]] += r.get("total_s") or 0.0
    total = sum(per_entry.values())
    slowest = sorted(per_entry.items(), key=lambda kv: -kv[1])[:top]
    out += ["", f"Slowest models (pipeline seconds, both modes; all entries: {total:.0f} s):", "",
            "| entry | seconds | share |", "|---|---:|---:|"]
    for entry, seconds in slowest:
        out.append(f"| {entry} | {seconds:.0f} | {100 * seconds / total:.1f}% |")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--run", default="latest")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    run = read_run(args.dir, resolve_run(args.dir, args.run))
    for problem in run.problems:
        print(f"warning: {problem}", file=sys.stderr)
    logs = os.path.join(run_dir(args.dir, run.run_id), "_logs", "driver.jsonl")
    print(summary(run, args.top, replacements(logs)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
