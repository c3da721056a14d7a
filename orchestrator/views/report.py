"""``exportsweep report``: one run as a single self-contained HTML page.

The page holds everything (inline CSS, a small inline script, SVG charts drawn by
:mod:`orchestrator.views.charts`); it fetches nothing, so it can be mailed, attached to a CI
job or opened from an object store.  It shows the headline pass rate and counts, the stage
funnel, pass rates by family / tag / mode, the failure taxonomy, the top failure clusters
with their repro commands, the dynamism of the exported programs (which input dims stayed
dynamic, per family and model), regressions and fixes against a baseline run, the trend over
every run of the results folder, the slowest and most memory-hungry entries, and a
sortable, filterable table of every (entry, mode).  Data-integrity problems (missing or
torn files, unfinished runs) are shown in a banner at the top.

:func:`build_report` works on data already loaded (testable without files);
:func:`write_report` is the thin loader behind the command.
"""

from __future__ import annotations

import shlex
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from exporter.schema import row_env
from exporter.status import FAILED, PASS, PASSING, SEVERITY, STATUSES, XPASS
from exporter.taxonomy import CATEGORY_BY_NAME, CATEGORY_NAMES, STAGE_ORDINAL, STAGES
from orchestrator.results.clusters import cluster_rows
from orchestrator.results.layout import RunMeta
from orchestrator.results.runs import RunData, RunInfo, list_runs, previous_run, read_run, \
    resolve_run
from orchestrator.results.storage import write_output
from orchestrator.views import diff as diffmod
from orchestrator.views import dynamism as dynamism_view
from orchestrator.views import matrix as matrix_view
from orchestrator.views.assets import CSS, JS, PAGE_SIZE
from orchestrator.views.charts import Bar, Point, Segment, attrs, esc, hbar_chart, run_chart
CHANGE_NOTES = {
    "NEW_FAILURE": "passed in the baseline, fails now", "REGRESSED": "fails at an earlier stage",
    "MISSING": "in the baseline, no result now",
    "SKIPPED": "ran in the baseline, skipped now (its reason says why): not compared",
    "CATEGORY_CHANGED": "fails for another category",
    "SIGNATURE_CHANGED": "same category, another root cause", "FIXED": "failed, passes now",
    "PROGRESSED": "still fails, but at a later stage", "NEW_ENTRY": "not in the baseline",
    "DRIFT": "outcome unchanged; numerics, time or memory drifted, or an XPASS",
    "FLAKY": "changed, but the entry is flaky (--flaky-reruns saw it flip): not a regression",
}
BAD_CHANGES = ("NEW_FAILURE", "REGRESSED", "MISSING")
GOOD_CHANGES = ("FIXED", "PROGRESSED")
TOP_CLUSTERS, TOP_N = 15, 10
UNKNOWN = "(unknown status)"
MAX_CHANGE_ROWS, MAX_DRIFT_ROWS = 500, 100      # per kind, in the changes section


@dataclass(frozen=True)
class RunSummary:
    """One point of the trend: a run's pass rate and wall time."""

    run_id: str
    started_at: str | None
    pairs: int
    counts: dict[str, int]
    wall_s: float | None

    @property
    def pass_rate(self) -> float | None:
        return 100.0 * sum(self.counts.get(s, 0) for s in PASSING) / self.pairs if self.pairs else None


def summarize(run_id: str, started_at: str | None, meta: RunMeta | None,
              final_rows: Sequence[dict[str, Any]] | None = None,
              finished_at: str | None = None) -> RunSummary:
    """From the rows when given, else from ``_run.json``'s end-of-run ``counts`` and ``wall_s``."""
    meta = meta or RunMeta(run_id)
    if final_rows is not None:
        counts = dict(Counter(r["status"] for r in final_rows))
    else:
        counts = {k: int(v) for k, v in (meta.counts or {}).items()}
    wall = meta.wall_s
    if wall is None:
        wall = _span_s(started_at or meta.started_at, finished_at or meta.finished_at)
    if wall is None and final_rows:
        starts = [r["started_at"] for r in final_rows if r.get("started_at")]
        ends = [r["finished_at"] for r in final_rows if r.get("finished_at")]
        wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    return RunSummary(run_id, started_at or meta.started_at, sum(counts.values()), counts,
                      float(wall) if wall is not None else None)


def needs_rows(meta: RunMeta | None) -> bool:
    """Whether ``_run.json`` lacks the end-of-run counts, so the trend must read the rows."""
    return meta is None or meta.counts is None or not meta.finished_at


def _span_s(start: str | None, end: str | None) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None


# -- the numbers ---------------------------------------------------------------------------

def status_counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    got = Counter(r["status"] for r in rows)
    return {s: got[s] for s in STATUSES}


def pass_rate(rows: Sequence[dict[str, Any]]) -> float | None:
    return 100.0 * sum(r["status"] in PASSING for r in rows) / len(rows) if rows else None


def stage_funnel(rows: Sequence[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(stage, pairs that reached it, pairs that failed in it), in pipeline order.

    A pair reached a stage when its ``stage_reached`` is that stage or a later one; a stage
    skipped on the way (no dynamic dims) counts as reached by the pairs that went past it."""
    out = []
    for stage in STAGES:
        n = STAGE_ORDINAL[stage]
        reached = sum(1 for r in rows if (r.get("stage_ordinal") or 0) >= n)
        failed = sum(1 for r in rows if r.get("failed_stage") == stage)
        out.append((stage, reached, failed))
    return out


def group_counts(rows: Iterable[dict[str, Any]], key: str) -> list[tuple[str, dict[str, int]]]:
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        values = r.get(key)
        if key == "tags":
            values = values or ["(untagged)"]
        for v in values if isinstance(values, list) else [values or "(none)"]:
            groups[v][r["status"]] += 1
    return sorted(((g, _known_first(c)) for g, c in groups.items()),
                  key=lambda item: (_rate(item[1]), item[0]))


def _known_first(counts: Counter[str]) -> dict[str, int]:
    """Counts per status in display order; rows of an unknown status (damaged files) are
    counted apart, never as passes."""
    out = {s: counts[s] for s in STATUSES}
    unknown = sum(n for s, n in counts.items() if s not in STATUSES)
    if unknown:
        out[UNKNOWN] = unknown
    return out


def _rate(counts: dict[str, int]) -> float:
    total = sum(counts.values())
    return sum(counts.get(s, 0) for s in PASSING) / total if total else 0.0


def category_counts(rows: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, int]]]:
    got: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        if r["status"] in FAILED and r.get("category"):
            got[r["category"]][r["status"]] += 1
    return sorted(((c, dict(n)) for c, n in got.items()), key=lambda i: (-sum(i[1].values()), i[0]))


# -- the page -------------------------------------------------------------------------------

def build_report(run: RunData, history: Sequence[RunSummary] = (),
                 baseline: RunData | None = None, *, problems: Sequence[str] = (),
                 thresholds: diffmod.Thresholds = diffmod.Thresholds(),
                 changes: list[diffmod.Change] | None = None,
                 generated_at: str | None = None) -> str:
    """The whole page for ``run``; ``history`` holds every run of the folder, oldest first.

    ``problems`` are shown in the banner beside the runs' own; ``changes`` (run against
    ``baseline``) are computed here unless given."""
    rows = run.final_rows
    if baseline is not None and changes is None:
        changes = diffmod.compare_runs(baseline.final_rows, rows, thresholds)
    if baseline is None:
        changes = None
    all_problems = [*run.problems, *(f"baseline {baseline.run_id}: {p}" for p in
                                     (baseline.problems if baseline else ()))]
    all_problems += [p for p in problems if p not in all_problems]
    generated = generated_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    sections = [
        _problems(all_problems), _headline(run, baseline),
        _changes(changes, baseline, run.run_id),
        _trend(history, run),
        '<div class="grid2">', _funnel(rows), _taxonomy(rows), "</div>",
        matrix_view.section(rows),
        _clusters(rows),
        _flaky(rows),
        dynamism_view.section(rows),
        '<div class="grid3">',
        _rates("by-family", "Pass rate by family", group_counts(rows, "family")),
        _rates("by-mode", "Pass rate by mode", group_counts(rows, "mode")),
        _rates("by-tag", "Pass rate by tag", group_counts(rows, "tags")),
        "</div>",
        '<div class="grid2">', _slowest(rows), _memory(rows), "</div>",
        _entries(rows),
    ]
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("headline", "summary"), ("changes", "changes"), ("trend", "trend"), ("funnel", "funnel"),
        ("taxonomy", "taxonomy"), ("matrix", "environments"), ("clusters", "clusters"),
        ("dynamism", "dynamism"),
        ("by-family", "pass rates"),
        ("slowest", "slowest"), ("memory", "memory"), ("entries", "all entries"))
        if i != "matrix" or 'id="matrix"' in " ".join(sections))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="exportsweep report">'
            f'<title>exportsweep · {esc(run.run_id)}</title><style>{CSS}</style></head>\n'
            f'<body><main>{_header(run, generated)}<nav aria-label="sections">{nav}</nav>\n'
            + "\n".join(s for s in sections if s)
            + f'\n<footer>exportsweep report · generated {esc(generated)} · pass rate = '
            f'(PASS + XFAIL) / all final (entry, mode) pairs</footer></main>'
            f'<script>{JS}</script></body></html>\n')


def _header(run: RunData, generated: str) -> str:
    m = run.meta or RunMeta(run.run_id)
    versions = m.versions
    torch_v = versions.get("torch") or next((r["torch_version"] for r in run.final_rows
                                             if r.get("torch_version")), None)
    facts = [("started", m.started_at), ("finished", m.finished_at),
             ("wall", _fmt_s(m.wall_s, unit=True) if m.wall_s is not None else None),
             ("executor", m.executor), ("torch", torch_v),
             ("exportsweep", versions.get("exportsweep")),
             ("commit", (versions.get("git_commit") or "")[:10] or None),
             ("host", m.resources.get("hostname")), ("manifest", m.manifest)]
    meta = "".join(f"<span>{k} <b>{esc(v)}</b></span>" for k, v in facts if v)
    return (f'<header><div class="grow"><h1>exportsweep report · run <code>{esc(run.run_id)}'
            f'</code></h1><p class="meta">{meta}</p></div>'
            f'<button id="theme-toggle" type="button" aria-label="switch light / dark theme">'
            f'◐ theme</button></header>')


def _problems(problems: Sequence[str]) -> str:
    if not problems:
        return '<section id="problems" data-count="0" hidden></section>'
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return (f'<section id="problems" role="alert" data-count="{len(problems)}"><h2>⚠ Data '
            f'problems: {len(problems)} — the numbers below may be incomplete</h2>'
            f'<ul>{items}</ul></section>')


def _headline(run: RunData, baseline: RunData | None) -> str:
    rows = run.final_rows
    counts = status_counts(rows)
    rate = pass_rate(rows)
    delta = ""
    base_rate = pass_rate(baseline.final_rows) if baseline else None
    if rate is not None and base_rate is not None:
        d = round(rate - base_rate, 1)
        cls = "up" if d > 0 else "down" if d < 0 else ""
        arrow = "▲" if d > 0 else "▼" if d < 0 else "="
        delta = (f'<span class="delta {cls}" data-delta="{d:.1f}">{arrow} {abs(d):.1f} pts vs '
                 f'{esc(baseline.run_id)}</span>')
    retries = len(run.rows) - len(rows)
    ok = sum(counts[s] for s in PASSING)
    stats = "".join(
        f'<div class="stat{" zero" if not n else ""}" data-status="{s}" data-count="{n}" '
        f'style="--c:var(--{s})"><span class="n">{n:,}</span><span class="k">{s}</span></div>'
        for s, n in counts.items())
    return (f'<section id="headline" data-pairs="{len(rows)}" data-pass-rate='
            f'"{"" if rate is None else f"{rate:.1f}"}" aria-label="headline">'
            f'<div><div class="big">{"—" if rate is None else f"{rate:.1f}%"} <small>pass rate'
            f'</small></div><div class="sub">{ok:,} of {len(rows):,} (entry, mode) pairs pass or '
            f'fail as expected{f" · {retries} retried attempts" if retries > 0 else ""}</div>'
            f'{delta}</div><div class="stats">{stats}</div></section>')


def _changes(changes: list[diffmod.Change] | None, baseline: RunData | None, run_id: str) -> str:
    if changes is None:
        return ('<section id="changes" data-baseline=""><h2>Changes</h2><p class="none">No '
                'baseline run to compare with (this is the first run of the folder, or none '
                'was given).</p></section>')
    groups: dict[str, list[diffmod.Change]] = defaultdict(list)
    for c in changes:
        if c.change != "UNCHANGED":
            groups[c.change].append(c)
        elif c.drift or c.update_expectation:
            groups["DRIFT"].append(c)
    counts = diffmod.counts(changes)
    chips = "".join(
        f'<li class="{"bad" if k in BAD_CHANGES else "good" if k in GOOD_CHANGES else ""}" '
        f'data-kind="{k}" data-count="{n}"><b>{n:,}</b> {k.lower().replace("_", " ")}</li>'
        for k, n in counts.items())
    if groups.get("DRIFT"):
        chips += f'<li data-kind="DRIFT" data-count="{len(groups["DRIFT"])}"><b>' \
                 f'{len(groups["DRIFT"]):,}</b> drift</li>'
    body = []
    for kind in (*diffmod.CHANGES, "DRIFT"):
        items = groups.get(kind)
        if not items:
            continue
        cap = MAX_DRIFT_ROWS if kind == "DRIFT" else MAX_CHANGE_ROWS
        trs = "".join(_change_row(kind, c) for c in items[:cap])
        if len(items) > cap:
            trs += (f'<tr><td colspan="5" class="none">… and {len(items) - cap:,} more: '
                    f'<code>exportsweep diff DIR {esc(baseline.run_id)} {esc(run_id)}</code> '
                    f'lists them all</td></tr>')
        is_open = kind in BAD_CHANGES or sum(map(len, groups.values())) <= 20
        body.append(f'<details class="change-group" data-kind="{kind}" '
                    f'{"open" if is_open else ""}><summary><b>{kind}'
                    f'</b> · {len(items):,} <span class="sub">{CHANGE_NOTES.get(kind, "")}</span>'
                    f'</summary><div class="scroll"><table class="fixed"><thead><tr>'
                    f'<th style="width:26%">entry</th><th style="width:9%">mode</th>'
                    f'<th style="width:27%">{esc(baseline.run_id)} (baseline)</th>'
                    f'<th style="width:27%">{esc(run_id)}</th><th>repro</th></tr></thead>'
                    f'<tbody>{trs}</tbody></table></div></details>')
    if not body:
        body.append('<p class="none">No change of outcome.</p>')
    return (f'<section id="changes" data-baseline="{esc(baseline.run_id)}"><h2>Changes '
            f'<span class="sub">vs baseline <code>{esc(baseline.run_id)}</code></span></h2>'
            f'<ul class="chips">{chips}</ul>{"".join(body)}</section>')


def _change_row(kind: str, c: diffmod.Change) -> str:
    notes = c.drift + (["XPASS: update the expectation"] if c.update_expectation else [])
    note = f'<div class="sub">{esc("; ".join(notes))}</div>' if notes else ""
    repro = "" if kind in ("FIXED", "MISSING", "SKIPPED") else _repro(c.repro, compact=True)
    return (f'<tr data-change="{kind}"{attrs({"entry": c.entry, "mode": c.mode})}>'
            f'<td class="ent">{esc(c.entry)}</td><td>{esc(c.mode)}</td>'
            f'<td>{_outcome(c.base_status, c.base_category, c.base_stage)}</td>'
            f'<td>{_outcome(c.new_status, c.new_category, c.new_stage)}{note}</td>'
            f'<td>{repro}</td></tr>')


def _outcome(status: str | None, category: str | None, stage: str | None) -> str:
    if status is None:
        return '<span class="sub">(absent)</span>'
    return (f'<span class="st s-{esc(status)}">{esc(status)}</span> {esc(category or "")}'
            + (f' <span class="sub">@{esc(stage)}</span>' if stage else ""))


def _repro(cmd: str | None, compact: bool = False) -> str:
    """The command, and a button that copies it (the script reads the code element);
    ``compact``: only the button, the command in its tooltip."""
    if not cmd:
        return ""
    if compact:
        return (f'<code class="repro" hidden>{esc(cmd)}</code><button class="copy" type="button" '
                f'title="{esc(cmd)}">copy repro</button>')
    return f'<code class="repro">{esc(cmd)}</code><button class="copy" type="button">copy</button>'


def _trend(history: Sequence[RunSummary], run: RunData) -> str:
    runs = list(history)
    if not any(h.run_id == run.run_id for h in runs):
        runs.append(summarize(run.run_id, run.meta.started_at if run.meta else None, run.meta,
                              run.final_rows))
    points_rate, points_wall = [], []
    wall_hi = max((h.wall_s or 0 for h in runs), default=0)
    div, unit = (3600, "h") if wall_hi > 3 * 3600 else (60, "min") if wall_hi > 600 else (1, "s")
    for h in runs:
        label = _short_time(h.started_at) or h.run_id[:12]
        rate = h.pass_rate
        tip = (f"{h.run_id} ({h.started_at or 'start unknown'}): "
               f"{'-' if rate is None else f'{rate:.1f}%'} pass of {h.pairs} pairs, wall "
               f"{_fmt_s(h.wall_s, unit=True)}")
        data = {"run": h.run_id, "pass-rate": None if rate is None else f"{rate:.1f}",
                "wall-s": h.wall_s}
        hl = h.run_id == run.run_id
        points_rate.append(Point(label, rate, tip, data, hl))
        wall = None if h.wall_s is None else h.wall_s / div
        points_wall.append(Point(label, wall, tip, data, hl))
    rate_svg = run_chart(points_rate, chart_id="trend-pass", title="Pass rate per run",
                         axis_label="pass rate (%)", y_max=100, unit="%",
                         desc=f"pass rate of {len(runs)} runs, oldest first")
    wall_svg = run_chart(points_wall, chart_id="trend-wall", title=f"Wall time per run ({unit})",
                         axis_label=f"wall time ({unit})", kind="bar",
                         desc=f"wall time of {len(runs)} runs, oldest first")
    table = "".join(
        f'<tr><td><code>{esc(h.run_id)}</code></td><td>{esc(h.started_at or "")}</td>'
        f'<td class="num">{h.pairs:,}</td><td class="num">'
        f'{"" if h.pass_rate is None else f"{h.pass_rate:.1f}%"}</td>'
        f'<td class="num">{_fmt_s(h.wall_s, unit=True)}</td></tr>' for h in reversed(runs))
    return (f'<section id="trend" data-runs="{len(runs)}"><h2>Trend <span class="sub">{len(runs)} '
            f'run(s) in this folder; the selected run is filled</span></h2>'
            f'<div class="grid2"><div>{rate_svg}</div><div>{wall_svg}</div></div>'
            f'<details><summary>as a table</summary><table><thead><tr><th>run</th><th>started'
            f'</th><th class="num">pairs</th><th class="num">pass rate</th><th class="num">wall'
            f'</th></tr></thead><tbody>{table}</tbody></table></details></section>')


def _funnel(rows: Sequence[dict[str, Any]]) -> str:
    bars = []
    for stage, reached, failed in stage_funnel(rows):
        went_on = reached - failed
        bars.append(Bar(stage, [Segment(went_on, "c-accent", f"went on {went_on}"),
                                Segment(failed, "c-bad", f"failed here {failed}")],
                        note=f"{reached:,}" + (f" · {failed:,} failed" if failed else ""),
                        data={"stage": stage, "reached": reached, "failed": failed}))
    svg = hbar_chart(bars, chart_id="funnel-chart", title="Stage funnel",
                     axis_label="(entry, mode) pairs that reached the stage",
                     max_value=max(len(rows), 1),
                     legend=(("c-accent", "passed on"), ("c-bad", "failed in this stage")),
                     desc="pairs reaching each pipeline stage, in order, and how many failed there")
    return f'<section id="funnel" data-pairs="{len(rows)}">{svg}</section>'


def _taxonomy(rows: Sequence[dict[str, Any]]) -> str:
    bars = [Bar(cat, [Segment(n.get(s, 0), f"s-{s}", f"{s} {n.get(s, 0)}") for s in FAILED],
                note=f"{sum(n.values()):,}", data={"category": cat, "count": sum(n.values())},
                tooltip=f"{cat}: {sum(n.values())} ({', '.join(f'{s} {v}' for s, v in n.items())})"
                        f" — {CATEGORY_BY_NAME[cat].meaning if cat in CATEGORY_BY_NAME else ''}")
            for cat, n in category_counts(rows)]
    svg = hbar_chart(bars, chart_id="taxonomy-chart", title="Failure categories",
                     axis_label="(entry, mode) pairs", empty="no failures in this run",
                     legend=[(f"s-{s}", s) for s in FAILED],
                     desc="failing pairs per taxonomy category, split by status")
    return f'<section id="taxonomy" data-categories="{len(bars)}">{svg}</section>'


def _clusters(rows: Sequence[dict[str, Any]]) -> str:
    clusters = cluster_rows(rows)
    if not clusters:
        return '<section id="clusters" data-count="0"><h2>Failure clusters</h2><p class="none">' \
               'No failing rows.</p></section>'
    parts = _localized_parts(rows)
    trs = []
    for c in clusters[:TOP_CLUSTERS]:
        message = (c.message or "").strip()[:1500]
        where = parts.get(c.signature, [])
        found = (f'<details class="where"><summary>failing submodules ({len(where)})</summary>'
                 f'<ul>{"".join(where[:20])}</ul></details>') if where else ""
        entries = "".join(f"<li>{esc(e)}</li>" for e in c.entries[:50])
        more = f"<li>… {len(c.entries) - 50} more</li>" if len(c.entries) > 50 else ""
        code = f'<span class="sig">{esc(c.error_code)}</span> ' if c.error_code else ""
        trs.append(
            f'<tr{attrs({"signature": c.signature, "rows": c.rows})}>'
            f'<td class="num">{c.rows:,}</td>'
            f'<td class="num"><details><summary>{c.n_entries:,}</summary><ul>{entries}{more}</ul>'
            f'</details></td><td>{esc(", ".join(c.categories))}<br><span class="sig">'
            f'{esc(c.signature)}</span></td><td>{esc(", ".join(c.stages))}</td>'
            f'<td class="nw">{"<br>".join(esc(m) for m in c.modes)}</td><td class="msg">'
            f'<div class="clamp">{esc(message)}</div><div>{code}{_repro(c.repro)}</div>'
            f'{found}</td></tr>')
    shown = f"top {TOP_CLUSTERS} of {len(clusters)}" if len(clusters) > TOP_CLUSTERS else \
        f"{len(clusters)}"
    return (f'<section id="clusters" data-count="{len(clusters)}"><h2>Failure clusters <span '
            f'class="sub">{shown}; one root cause (signature) each, largest first</span></h2>'
            f'<div class="scroll"><table class="fixed"><thead><tr><th class="num" '
            f'style="width:5%">pairs</th><th class="num" style="width:6%">entries</th><th '
            f'style="width:17%">category · signature</th><th style="width:8%">stage</th><th '
            f'style="width:8%">modes</th><th>message '
            f'(click to expand) · error code · repro</th></tr></thead><tbody>{"".join(trs)}'
            f'</tbody></table></div></section>')


def _flaky(rows: Sequence[dict[str, Any]]) -> str:
    """Entries whose outcome flipped between fresh-process reruns (--flaky-reruns)."""
    flaky = sorted((r for r in rows if r.get("flaky")), key=lambda r: (r["entry"], r["mode"]))
    if not flaky:
        return ""
    trs = "".join(
        f'<tr{attrs({"entry": r["entry"], "mode": r["mode"]})}><td>{esc(r["entry"])}</td>'
        f'<td>{esc(r["mode"])}</td><td class="num">{r.get("reruns") or 0}</td><td>'
        + "<br>".join(esc(o) for o in r.get("flaky_outcomes") or []) + "</td></tr>"
        for r in flaky)
    return (f'<section id="flaky" data-count="{len(flaky)}"><h2>Flaky <span class="sub">'
            f'{len(flaky)} (entry, mode) pairs whose outcome changed between fresh-process '
            f'reruns; diff and its gates treat them apart</span></h2><div class="scroll"><table>'
            f'<thead><tr><th>entry</th><th>mode</th><th class="num">reruns</th><th>outcomes '
            f'seen</th></tr></thead><tbody>{trs}</tbody></table></div></section>')


def _localized_parts(rows: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Per signature, the failing submodules localization found (--localize), each with the
    command that exports just that part."""
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        paths = r.get("localized_paths") or []
        for path, cls, category in zip(paths, r.get("localized_classes") or [],
                                       r.get("localized_categories") or []):
            target = shlex.quote(path)           # '' names the whole model
            repro = f'{r["repro"]} --submodule {target}' if r.get("repro") else None
            item = (f'<li>{esc(r["entry"])} [{esc(r["mode"])}]: <b>{esc(path or "(itself)")}'
                    f'</b> {esc(cls)} · {esc(category)}{_repro(repro, compact=True)}</li>')
            if r.get("signature") and item not in out[r["signature"]]:
                out[r["signature"]].append(item)
    return out


def _rates(section_id: str, title: str, groups: list[tuple[str, dict[str, int]]]) -> str:
    bars = []
    for name, counts in groups:
        total = sum(counts.values())
        ok = sum(counts[s] for s in PASSING)
        bars.append(Bar(name, [Segment(counts[s], f"s-{s}", f"{s} {counts[s]}") for s in STATUSES],
                        note=f"{100 * ok / total:.0f}% of {total:,}" if total else "-",
                        data={"group": name, "pass": ok, "total": total}))
    svg = hbar_chart(bars, chart_id=f"{section_id}-chart", title=title, percent=True, width=440,
                     axis_label="share of (entry, mode) pairs (%)", max_label_chars=24,
                     legend=[(f"s-{s}", s) for s in STATUSES if any(c[s] for _, c in groups)],
                     desc=f"{title.lower()}: status shares, worst first")
    return f'<section id="{section_id}" data-groups="{len(groups)}">{svg}</section>'


def _slowest(rows: Sequence[dict[str, Any]]) -> str:
    top = sorted((r for r in rows if r.get("total_s")), key=lambda r: -r["total_s"])[:TOP_N]
    used = [s for s in STAGES if any(r.get(f"seconds_{s}") for r in top)]
    palette = {s: f"k{i % 9}" for i, s in enumerate(STAGES)}
    bars = [Bar(f"{r['entry']} [{r['mode']}]",
                [Segment(r.get(f"seconds_{s}") or 0.0, palette[s],
                         f"{s} {_fmt_s(r.get(f'seconds_{s}'))}s") for s in used]
                or [Segment(r["total_s"], "c-accent", "")],
                note=_fmt_s(r["total_s"], unit=True),
                data={"entry": r["entry"], "mode": r["mode"], "seconds": r["total_s"]})
            for r in top]
    svg = hbar_chart(bars, chart_id="slowest-chart", title=f"Slowest {len(bars)} (entry, mode)",
                     axis_label="wall time (s), by stage", max_label_chars=38,
                     legend=[(palette[s], s) for s in used],
                     desc="the slowest pairs, wall seconds split by pipeline stage")
    return f'<section id="slowest" data-count="{len(bars)}">{svg}</section>'


def _memory(rows: Sequence[dict[str, Any]]) -> str:
    top = sorted((r for r in rows if r.get("peak_rss_mb")), key=lambda r: -r["peak_rss_mb"])[:TOP_N]
    bars = [Bar(f"{r['entry']} [{r['mode']}]", [Segment(r["peak_rss_mb"], "c-mem",
                                                        f"{r['peak_rss_mb']:,.0f} MiB")],
                note=f"{r['peak_rss_mb']:,.0f} MiB",
                data={"entry": r["entry"], "mode": r["mode"], "mib": r["peak_rss_mb"]})
            for r in top]
    svg = hbar_chart(bars, chart_id="memory-chart", title=f"Most memory: top {len(bars)}",
                     axis_label="peak resident memory of the worker (MiB)", max_label_chars=38,
                     desc="the pairs with the highest peak worker memory")
    return f'<section id="memory" data-count="{len(bars)}">{svg}</section>'


def _entries(rows: Sequence[dict[str, Any]]) -> str:
    ordered = sorted(rows, key=lambda r: (SEVERITY.get(r["status"], 9), r["entry"], r["mode"],
                                          row_env(r)))
    several = len({row_env(r) for r in rows}) > 1
    body = []
    for i, r in enumerate(ordered):
        stage = r.get("failed_stage") or r.get("stage_reached") or ""
        message = (r.get("message") or r.get("skip_reason") or "")[:1500]
        if r["status"] == XPASS:
            message = message or (f"expected {r.get('expected') or 'a failure'}: update the "
                                  f"expectation")
        data = {"entry": r["entry"], "mode": r["mode"], "family": r.get("family"),
                "env": row_env(r) if several else None,
                "status": r["status"], "stage": stage, "category": r.get("category") or "",
                "wall_s": "" if r.get("total_s") is None else f"{r['total_s']:.3f}",
                "peak_mb": "" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.1f}"}
        repro = f'<div class="more">{_repro(r.get("repro"))}</div>' \
            if r["status"] != PASS and r.get("repro") else ""
        sig = f'<br><span class="sig">{esc(r["signature"])}</span>' if r.get("signature") else ""
        mem = "" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:,.0f}"
        msg = f'<td class="msg"><div class="clamp">{esc(message)}</div>{repro}</td>' \
            if message or repro else "<td></td>"
        body.append(
            f'<tr{attrs(data)}{" hidden" if i >= PAGE_SIZE else ""}><td>{esc(r["entry"])}</td>'
            f'<td>{esc(r["mode"])}{esc(f" @{row_env(r)}") if several else ""}</td>'
            f'<td>{esc(r.get("family") or "")}</td>'
            f'<td><span class="st s-{esc(r["status"])}">{esc(r["status"])}</span></td>'
            f'<td>{esc(stage)}</td><td>{esc(r.get("category") or "")}{sig}</td>'
            f'<td>{_fmt_s(r.get("total_s"))}</td><td>{mem}</td>{msg}</tr>')
    present = Counter(r["status"] for r in rows)
    cats = Counter(r.get("category") for r in rows if r.get("category"))
    stages = Counter(r.get("failed_stage") or r.get("stage_reached") for r in rows)
    status_opts = "".join(f'<option value="{s}">{s} ({present[s]})</option>' for s in STATUSES)
    stage_opts = "".join(f'<option value="{s}">{s} ({stages[s]})</option>' for s in STAGES)
    cat_opts = "".join(f'<option value="{c}">{c} ({cats[c]})</option>' for c in
                       sorted(CATEGORY_NAMES, key=lambda c: (-cats[c], c)))
    heads = [("entry", "entry", "", 17), ("mode", "mode", "", 7), ("family", "family", "", 8),
             ("status", "status", "", 5), ("stage", "stage", "", 7),
             ("category", "category · signature", "", 17), ("wall_s", "wall s", "num", 5),
             ("peak_mb", "peak MiB", "num", 6), ("", "message (click to expand)", "", 0)]
    ths = "".join(f'<th{f" data-key={k}" if k else ""}{f" class={c}" if c else ""}'
                  f'{f" style=width:{w}%" if w else ""}{" aria-sort=none tabindex=0" if k else ""}>'
                  f'{t}</th>'
                  for k, t, c, w in heads)
    return (f'<section id="entries" data-rows="{len(rows)}"><h2>All entries <span class="sub">'
            f'one row per final (entry, mode); click a header to sort, click a message to '
            f'expand</span></h2><div class="controls" role="search">'
            f'<input id="f-text" type="search" placeholder="filter: entry, message, signature…" '
            f'aria-label="filter text"><select id="f-status" aria-label="status"><option value="">'
            f'any status</option>{status_opts}</select><select id="f-stage" aria-label="stage">'
            f'<option value="">any stage</option>{stage_opts}</select><select id="f-category" '
            f'aria-label="category"><option value="">any category</option>{cat_opts}</select>'
            f'<span id="entries-count" class="sub">{len(rows):,} pairs</span></div>'
            f'<noscript><p class="none">Without JavaScript only the first {PAGE_SIZE} rows are '
            f'shown.</p></noscript><div class="scroll"><table class="fixed" '
            f'data-page-size="{PAGE_SIZE}" data-matched="{len(rows)}" '
            f'data-ranks="{" ".join(sorted(SEVERITY, key=SEVERITY.get))}" '
            f'data-stages="{" ".join(STAGES)}"><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}'
            f'</tbody></table></div><div class="pager"><button id="pg-prev" type="button">‹ prev'
            f'</button><button id="pg-next" type="button">next ›</button><label><input '
            f'id="f-all" type="checkbox"> show all rows</label></div></section>')


def _fmt_s(s: float | None, unit: bool = False) -> str:
    if s is None:
        return "-" if unit else ""
    if unit and s >= 3600:
        return f"{s / 3600:.1f} h"
    if unit and s >= 120:
        return f"{s / 60:.1f} min"
    text = f"{s:.2f}" if s < 10 else f"{s:.1f}" if s < 100 else f"{s:,.0f}"
    return text + (" s" if unit else "")


def _short_time(iso: str | None) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%m-%d %H:%M") if iso else ""
    except ValueError:
        return ""


# -- loading and writing ---------------------------------------------------------------------

@dataclass
class ReportResult:
    output: str
    run_id: str
    baseline_id: str | None
    pairs: int
    pass_rate: float | None
    counts: dict[str, int]
    changes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    bytes: int = 0

    def summary(self) -> str:
        rate = "-" if self.pass_rate is None else f"{self.pass_rate:.1f}%"
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        changed = ", ".join(f"{n} {k}" for k, n in self.changes.items() if k != "UNCHANGED")
        base = f"; vs {self.baseline_id}: {changed or 'no change'}" if self.baseline_id else \
            "; no baseline"
        probs = f"; {len(self.problems)} data problem(s)" if self.problems else ""
        return (f"report of run {self.run_id} written to {self.output} "
                f"({self.bytes / 1024:,.0f} KiB): {self.pairs} pairs, pass rate {rate} ({counts})"
                f"{base}{probs}")


def load_history(out: str, infos: Sequence[RunInfo],
                 loaded: dict[str, RunData]) -> tuple[list[RunSummary], list[str]]:
    """A summary per run, from ``_run.json`` where it has the end-of-run counts, else the rows."""
    summaries, problems = [], []
    for info in infos:
        data = loaded.get(info.run_id)
        if data is None and needs_rows(info.meta):
            data = read_run(out, info.run_id)
            if data.problems:
                problems.append(f"run {info.run_id} (trend): {len(data.problems)} data problem(s),"
                                f" e.g. {data.problems[0]}")
        summaries.append(summarize(info.run_id, info.started_at, info.meta,
                                   data.final_rows if data is not None else None, info.finished_at))
    return summaries, problems


def save(output: str, text: str) -> int:
    """The one place the page is written: a local path, or an object-store URI."""
    data = text.encode("utf-8")
    write_output(output, data)
    return len(data)


def write_report(out: str, run: str = "latest", baseline: str | None = None,
                 output: str = "report.html") -> ReportResult:
    """Load ``run`` (an id, ``latest`` or ``previous``), its baseline (default: the run before
    it) and every run's summary from ``out``; write the page to ``output``."""
    infos = list_runs(out)              # once: the aliases, the baseline and the trend
    run_id = resolve_run(out, run, infos)
    base_id = resolve_run(out, baseline, infos) if baseline else previous_run(out, run_id, infos)
    data = read_run(out, run_id)
    base = None if base_id is None else data if base_id == run_id else read_run(out, base_id)
    loaded = {d.run_id: d for d in (data, base) if d is not None}
    history, problems = load_history(out, infos, loaded)
    changes = diffmod.compare_runs(base.final_rows, data.final_rows) if base else None
    size = save(output, build_report(data, history, base, problems=problems, changes=changes))
    return ReportResult(output, run_id, base.run_id if base else None, len(data.final_rows),
                        pass_rate(data.final_rows), status_counts(data.final_rows),
                        diffmod.counts(changes) if changes else {},
                        [*data.problems, *(base.problems if base else ()), *problems], size)
