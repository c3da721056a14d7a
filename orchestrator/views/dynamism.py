"""The report's dynamism section: how much of the input space the exported programs cover.

Reads the rows' ``dynamic_*`` columns only (see ``exporter.dynamism``). Coverage is counted in
input dims: of the dims an entry asked to be dynamic, how many the program kept dynamic
(by a range or by a relation to another dim); the rest were fixed to the example's size,
each with torch's reason. Per family, then per model with what was fixed and why, the
relations found, the sizes that failed and torch's suggested spec.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from exporter.taxonomy import STAGE_FALLBACK
from orchestrator.views.charts import Bar, Segment, attrs, esc, hbar_chart

DYNAMIC_FAILURE = STAGE_FALLBACK["dynamic"]     # what a failure at other sizes is
TOP_MODELS = 300


@dataclass
class Coverage:
    """One entry's dynamism, over its modes (a dim counts as kept when every mode kept it)."""

    entry: str
    family: str
    requested: int = 0
    achieved: int = 0
    specialized: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    failed_at: list[str] = field(default_factory=list)      # "mode: message head"
    suggested: str | None = None
    modes: int = 0

    @property
    def share(self) -> float:
        return self.achieved / self.requested if self.requested else 0.0


def coverage(rows: Sequence[dict[str, Any]]) -> list[Coverage]:
    """One Coverage per entry that asked for dynamic dims, fewest kept first."""
    by_entry: dict[str, Coverage] = {}
    for r in rows:
        asked = r.get("dynamic_requested") or []
        if not asked:
            continue
        c = by_entry.setdefault(r["entry"], Coverage(r["entry"], r.get("family") or "",
                                                     requested=len(asked),
                                                     achieved=len(asked)))
        c.modes += 1
        c.achieved = min(c.achieved, len(r.get("dynamic_achieved") or []))
        for note in r.get("dynamic_specialized") or []:
            if note not in c.specialized:
                c.specialized.append(note)
        for rel in r.get("dynamic_relations") or []:
            if rel not in c.relations:
                c.relations.append(rel)
        if r.get("category") == DYNAMIC_FAILURE:
            c.failed_at.append(f"{r['mode']}: {(r.get('message') or '').splitlines()[0][:300]}")
        c.suggested = c.suggested or r.get("dynamic_suggested")
    return sorted(by_entry.values(), key=lambda c: (c.share, c.entry))


def section(rows: Sequence[dict[str, Any]]) -> str:
    entries = coverage(rows)
    if not entries:
        return ('<section id="dynamism" data-entries="0"><h2>Dynamism</h2><p class="none">No '
                'entry asked for dynamic dims.</p></section>')
    families: dict[str, list[Coverage]] = defaultdict(list)
    for c in entries:
        families[c.family].append(c)
    bars = []
    for family, group in sorted(families.items()):
        asked = sum(c.requested for c in group)
        kept = sum(c.achieved for c in group)
        failing = sum(1 for c in group if c.failed_at)
        bars.append(Bar(family, [Segment(kept, "s-PASS", f"kept dynamic {kept}"),
                                 Segment(asked - kept, "s-FAIL", f"fixed {asked - kept}")],
                        note=f"{100 * kept / asked:.0f}% of {asked} dims · {len(group)} entries"
                             + (f" · {failing} failing at other sizes" if failing else ""),
                        data={"family": family, "asked": asked, "kept": kept,
                              "entries": len(group), "failing": failing}))
    svg = hbar_chart(bars, chart_id="dynamism-chart", title="Input dims kept dynamic, by family",
                     percent=True, width=440, axis_label="share of the dims asked dynamic (%)",
                     max_label_chars=24, legend=[("s-PASS", "kept dynamic"), ("s-FAIL", "fixed")],
                     desc="per family, the share of requested dynamic dims the programs kept")
    trs = []
    for c in entries[:TOP_MODELS]:
        fixed = "".join(f"<li>{esc(n)}</li>" for n in c.specialized)
        rel = "".join(f"<li>{esc(n)}</li>" for n in c.relations)
        failed = "".join(f"<li>{esc(n)}</li>" for n in c.failed_at)
        hint = f'<div class="sig">{esc(c.suggested)}</div>' if c.suggested else ""
        trs.append(
            f'<tr{attrs({"entry": c.entry, "share": f"{c.share:.3f}"})}><td>{esc(c.entry)}</td>'
            f'<td class="num">{c.achieved}/{c.requested}</td>'
            f'<td class="num">{100 * c.share:.0f}%</td>'
            f'<td class="msg"><ul>{fixed}</ul>{hint}</td><td class="msg"><ul>{rel}</ul></td>'
            f'<td class="msg"><ul>{failed}</ul></td></tr>')
    shown = f"{TOP_MODELS} of {len(entries)}" if len(entries) > TOP_MODELS else f"{len(entries)}"
    return (f'<section id="dynamism" data-entries="{len(entries)}"><h2>Dynamism <span class='
            f'"sub">{shown} entries asking for dynamic dims, least covered first</span></h2>'
            f'{svg}<details><summary>Per model: what was fixed and why, relations, failures '
            f'at other sizes, torch\'s suggested spec</summary><div class="scroll"><table '
            f'class="fixed"><thead><tr><th style="width:18%">entry</th><th class="num" '
            f'style="width:7%">kept</th><th class="num" style="width:6%">share</th><th>fixed '
            f'to the example (why) · suggested spec</th><th style="width:18%">relations</th>'
            f'<th style="width:20%">fails at other sizes</th></tr></thead><tbody>'
            f'{"".join(trs)}</tbody></table></div></details></section>')
