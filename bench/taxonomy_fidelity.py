"""How well the taxonomy holds on a real sweep: ``python bench/taxonomy_fidelity.py DIR [--run ID]``.

Reads one run (default: the latest) through exportsweep's checked reader and prints, as a
Markdown table:

- the share of export-stage failures (FAIL or XFAIL at ``export``) that name a user frame;
- of the entries that fail in both modes at the same stage with the same category (one root
  cause, as far as the rows can tell), the share whose two rows share one signature (one
  cluster listing both modes);
- the clusters (one per signature) that hold more than one category;
- the FAIL rows without an expectation (the manifest is not green on its own terms).

Each line lists the entries behind a shortfall, so a regression is easy to find.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from exporter.status import FAIL, STATUS_BY_NAME  # noqa: E402
from orchestrator.results.clusters import cluster_rows  # noqa: E402
from orchestrator.results.runs import read_run, resolve_run  # noqa: E402


def fidelity(rows: list[dict]) -> dict:
    # The model's failures (FAIL, XFAIL): infrastructure faults say nothing of the taxonomy.
    failed = [r for r in rows if r["status"] in STATUS_BY_NAME
              and STATUS_BY_NAME[r["status"]].kind == "fail"]
    export = [r for r in failed if r["failed_stage"] == "export"]
    framed = [r for r in export if r.get("user_frame")]
    by_entry: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in failed:
        by_entry[r["entry"]][r["mode"]] = r
    both = {e: m for e, m in by_entry.items() if len(m) == 2}
    one_cause = {e: m for e, m in both.items()
                 if len({(r["failed_stage"], r["category"]) for r in m.values()}) == 1}
    shared = [e for e, m in one_cause.items() if len({r["signature"] for r in m.values()}) == 1]
    mixed = [c for c in cluster_rows(rows) if len(c.categories) > 1]
    unexpected = [r for r in rows if r["status"] == FAIL and not r.get("expected")]
    return {
        "rows": len(rows), "failing_rows": len(failed),
        "export_failures": len(export), "with_user_frame": len(framed),
        "without_user_frame": sorted(f"{r['entry']} [{r['mode']}]" for r in export
                                     if not r.get("user_frame")),
        "both_modes_one_cause": len(one_cause), "one_signature": len(shared),
        "split_signatures": sorted(set(one_cause) - set(shared)),
        "both_modes_two_causes": sorted(set(both) - set(one_cause)),
        "clusters": len(cluster_rows(rows)), "mixed_clusters": [
            f"{c.signature}: {'/'.join(c.categories)} ({', '.join(c.entries[:3])})" for c in mixed],
        "fail_without_expectation": sorted(f"{r['entry']} [{r['mode']}] {r['category']}"
                                           for r in unexpected),
    }


def _share(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"


def markdown(f: dict, run_id: str) -> str:
    lines = [f"### Taxonomy fidelity, run `{run_id}` ({f['rows']} rows, "
             f"{f['failing_rows']} failing)", "",
             "| measure | value | behind a shortfall |", "|---|---|---|",
             f"| export-stage failures with a user frame | "
             f"{_share(f['with_user_frame'], f['export_failures'])} | "
             f"{', '.join(f['without_user_frame'][:12]) or '-'} |",
             f"| entries failing in both modes at one cause, one signature | "
             f"{_share(f['one_signature'], f['both_modes_one_cause'])} | "
             f"{', '.join(f['split_signatures'][:12]) or '-'} |",
             f"| clusters with more than one category | {len(f['mixed_clusters'])} of "
             f"{f['clusters']} | {'; '.join(f['mixed_clusters'][:6]) or '-'} |",
             f"| FAIL rows without an expectation | {len(f['fail_without_expectation'])} | "
             f"{', '.join(f['fail_without_expectation'][:12]) or '-'} |",
             f"| entries failing in both modes at different causes | "
             f"{len(f['both_modes_two_causes'])} | "
             f"{', '.join(f['both_modes_two_causes'][:12]) or '-'} |"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--run", default="latest")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run_id = resolve_run(args.dir, args.run)
    run = read_run(args.dir, run_id)
    for problem in run.problems:
        print(f"warning: {problem}", file=sys.stderr)
    result = fidelity(run.final_rows)
    print(json.dumps(result, indent=2) if args.json else markdown(result, run_id), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
