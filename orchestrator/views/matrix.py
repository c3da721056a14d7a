"""The report's environment matrix: one row per (entry, mode), one column per environment.

Shown for runs with more than one environment (``--env``, a manifest's ``environments``).
Each cell is that environment's outcome (status, category, stage); a cell that differs from the
first environment's (``current``, the driver's own, when present) is highlighted, and the
rows that differ anywhere come first. Above the table: each environment's torch, and per
environment the count of each kind of change against the first, by the same rules as
``exportsweep diff DIR RUN --env A --vs-env B`` (views.diff).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from exporter.environments import CURRENT
from exporter.schema import row_env
from orchestrator.views import diff as diffmod
from orchestrator.views.charts import attrs, esc

MAX_ROWS = 2000


def environments(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The run's environments, ``current`` first, then by name."""
    found = {row_env(r) for r in rows}
    return sorted(found, key=lambda e: (e != CURRENT, e))


def outcome(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    return r["status"] + (f" {r['category']}" if r.get("category") else "") + (
        f" @{r['failed_stage']}" if r.get("failed_stage") else "")


def changes_against(rows: Sequence[dict[str, Any]], base: str, other: str
                    ) -> list[diffmod.Change]:
    return diffmod.compare_runs([r for r in rows if row_env(r) == base],
                                [r for r in rows if row_env(r) == other], across=(base, other))


def section(rows: Sequence[dict[str, Any]]) -> str:
    envs = environments(rows)
    if len(envs) < 2:
        return ""
    base = envs[0]
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    torch_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        cells[(r["entry"], r["mode"])][row_env(r)] = r
        if r.get("torch_version"):
            torch_of[row_env(r)].add(str(r["torch_version"]))

    def differs(key: tuple[str, str]) -> bool:
        return len({outcome(cells[key].get(e)) for e in envs}) > 1

    ordered = sorted(cells, key=lambda k: (not differs(k), k))
    n_diff = sum(1 for k in cells if differs(k))
    heads = "".join(f"<th>{esc(e)}<br><span class=sub>torch "
                    f"{esc(', '.join(sorted(torch_of[e])) or '?')}</span></th>" for e in envs)
    body = []
    for key in ordered[:MAX_ROWS]:
        here = cells[key]
        base_outcome = outcome(here.get(base))
        tds = "".join(
            f'<td class="{"mx-diff" if e != base and outcome(here.get(e)) != base_outcome else ""}">'
            f'{_cell(here.get(e))}</td>' for e in envs)
        body.append(f'<tr{attrs({"entry": key[0], "mode": key[1], "differs": str(differs(key)).lower()})}>'
                    f'<td>{esc(key[0])}</td><td>{esc(key[1])}</td>{tds}</tr>')
    summary = []
    for other in envs[1:]:
        counts = diffmod.counts(changes_against(rows, base, other))
        shown = ", ".join(f"{n} {k.lower().replace('_', ' ')}" for k, n in counts.items())
        summary.append(f'<li{attrs({"env": other})}><b>{esc(base)} → {esc(other)}</b>: '
                       f'{esc(shown or "no pairs")}</li>')
    more = f'<p class="sub">first {MAX_ROWS} of {len(cells)} pairs</p>' \
        if len(cells) > MAX_ROWS else ""
    return (f'<section id="matrix" data-envs="{len(envs)}" data-differ="{n_diff}"><h2>'
            f'Environments <span class="sub">{len(cells)} (entry, mode) pairs in {len(envs)} '
            f'environments; {n_diff} differ (highlighted against {esc(base)}, listed first)'
            f'</span></h2><ul class="mx-counts">{"".join(summary)}</ul>{more}'
            f'<div class="scroll"><table><thead><tr><th>entry</th><th>mode</th>{heads}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div></section>')


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return '<span class="sub">not run</span>'
    status = r["status"]
    rest = (f" {r['category']}" if r.get("category") else "") + (
        f" @{r['failed_stage']}" if r.get("failed_stage") else "")
    return f'<span class="st s-{esc(status)}">{esc(status)}</span>{esc(rest)}'
