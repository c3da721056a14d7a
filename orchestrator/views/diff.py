"""What changed between two runs, per (entry, mode, environment), or between two environments
of one run, and whether a nightly job should fail.

Compares the final rows of a base run and a new run: outcome changes (a model
that newly fails, is fixed, fails earlier or later in the pipeline, or for
another reason), models that silently dropped out, new models, and drift in
numerics, wall time and memory.  Output as a table, JSON or Markdown;
``--fail-on`` turns chosen changes into a non-zero exit code.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from exporter.environments import CURRENT
from exporter.schema import row_env
from exporter.status import EXPORTED, SKIPPED, XPASS
from exporter.text import printable

CHANGES = ("NEW_FAILURE", "REGRESSED", "MISSING", "SKIPPED", "CATEGORY_CHANGED",
           "SIGNATURE_CHANGED", "FIXED", "PROGRESSED", "NEW_ENTRY", "FLAKY", "UNCHANGED")
# --fail-on names -> what they gate on ("drift" and "xpass" are not changes of outcome).
GATES = {"regression": {"NEW_FAILURE", "REGRESSED"}, "new_failure": {"NEW_FAILURE"},
         "regressed": {"REGRESSED"}, "missing": {"MISSING"}, "skipped": {"SKIPPED"},
         "category_changed": {"CATEGORY_CHANGED"}, "signature_changed": {"SIGNATURE_CHANGED"},
         "new_entry": {"NEW_ENTRY"}, "flaky": {"FLAKY"}, "drift": set(), "xpass": set(),
         "incomplete": set()}   # data problems (missing / torn files): judged by the CLI


@dataclass(frozen=True)
class Thresholds:
    max_abs_err: float = 1e-4     # numeric drift: the new max error passes this and grew
    time_ratio: float = 1.5       # wall time grew by this factor...
    time_floor_s: float = 1.0     # ...and by at least this many seconds (noise below)
    mem_ratio: float = 1.3        # peak memory grew by this factor


@dataclass
class Change:
    entry: str
    mode: str
    change: str
    base_status: str | None
    new_status: str | None
    base_category: str | None = None
    new_category: str | None = None
    base_stage: str | None = None
    new_stage: str | None = None
    drift: list[str] = field(default_factory=list)
    update_expectation: bool = False       # XPASS: the manifest's expect is stale
    repro: str | None = None
    env: str = CURRENT                     # the environment, or "A -> B" across two


def compare_runs(base: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]],
                 thresholds: Thresholds = Thresholds(),
                 across: tuple[str, str] | None = None) -> list[Change]:
    """Changes per (entry, mode, environment). ``across=(A, B)``: ``base`` holds environment
    A's rows and ``new`` environment B's (of one run, say): pairs match by (entry, mode)."""
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["entry"], r["mode"], f"{across[0]} -> {across[1]}" if across else row_env(r)

    base_by = {key(r): r for r in base}
    new_by = {key(r): r for r in new}
    out = []
    for k in sorted(set(base_by) | set(new_by)):
        out.append(_compare(base_by.get(k), new_by.get(k), k, thresholds))
    return sorted(out, key=lambda c: (CHANGES.index(c.change), c.entry, c.mode, c.env))


def _compare(b: dict[str, Any] | None, n: dict[str, Any] | None, key: tuple[str, str, str],
             t: Thresholds) -> Change:
    entry, mode, env = key
    change = Change(entry, mode, "UNCHANGED", b and b["status"], n and n["status"],
                    b and b["category"], n and n["category"], b and b["failed_stage"],
                    n and n["failed_stage"], repro=(n or b or {}).get("repro"), env=env)
    if b is None:
        change.change = "NEW_ENTRY"
    elif n is None:
        change.change = "MISSING"
    else:
        change.change = _outcome_change(b, n)
        # An entry known to flip between runs: its change says nothing of the change
        # under test, and no regression gate counts it.
        if change.change != "UNCHANGED" and (b.get("flaky") or n.get("flaky")):
            change.change = "FLAKY"
        change.drift = _drift(b, n, t)
        change.update_expectation = n["status"] == XPASS
    return change


def _outcome_change(b: dict[str, Any], n: dict[str, Any]) -> str:
    if n["status"] in SKIPPED:
        # Ran before (or elsewhere), not now: nothing to compare, and not a fix.
        return "UNCHANGED" if b["status"] in SKIPPED else "SKIPPED"
    if b["status"] in SKIPPED:
        return "FIXED" if n["status"] in EXPORTED else "NEW_FAILURE"
    b_ok, n_ok = b["status"] in EXPORTED, n["status"] in EXPORTED
    if b_ok and not n_ok:
        return "NEW_FAILURE"
    if n_ok and not b_ok:
        return "FIXED"
    if b_ok and n_ok:
        return "UNCHANGED"
    b_ord, n_ord = b["stage_ordinal"] or 0, n["stage_ordinal"] or 0
    if n_ord < b_ord:
        return "REGRESSED"
    if n_ord > b_ord:
        return "PROGRESSED"
    if b["category"] != n["category"]:
        return "CATEGORY_CHANGED"
    if b["signature"] != n["signature"]:
        return "SIGNATURE_CHANGED"
    return "UNCHANGED"


def _drift(b: dict[str, Any], n: dict[str, Any], t: Thresholds) -> list[str]:
    out = []
    be, ne = b.get("max_abs_err"), n.get("max_abs_err")
    if ne is not None and ne > t.max_abs_err and (be is None or ne > be):
        out.append(f"max_abs_err {_num(be)} -> {_num(ne)}")
    bt, nt = b.get("total_s") or 0.0, n.get("total_s") or 0.0
    if bt > 0 and nt > bt * t.time_ratio and nt - bt >= t.time_floor_s:
        out.append(f"wall {bt:.1f}s -> {nt:.1f}s (x{nt / bt:.1f})")
    bm, nm = b.get("peak_rss_mb"), n.get("peak_rss_mb")
    if bm and nm and nm > bm * t.mem_ratio:
        out.append(f"peak memory {bm:.0f} -> {nm:.0f} MiB (x{nm / bm:.1f})")
    return out


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def gate(changes: list[Change], fail_on: Iterable[str]) -> list[Change]:
    """The changes that trip the given gates (empty: the job passes)."""
    names = set(fail_on)
    wanted = set().union(*(GATES[g] for g in names)) if names else set()
    return [c for c in changes if c.change in wanted
            or ("drift" in names and c.drift) or ("xpass" in names and c.update_expectation)]


def counts(changes: list[Change]) -> dict[str, int]:
    got = Counter(c.change for c in changes)
    return {k: got[k] for k in CHANGES if got[k]}


# -- rendering ------------------------------------------------------------------------------

def to_json(changes: list[Change], base: str, new: str, problems: list[str] = ()) -> str:
    return json.dumps({"base_run": base, "new_run": new, "counts": counts(changes),
                       "problems": list(problems), "changes": [asdict(c) for c in changes]},
                      indent=2)


def to_table(changes: list[Change], base: str, new: str, show_unchanged: bool = False) -> str:
    lines = [f"diff {base} -> {new}: " + ", ".join(f"{n} {k}" for k, n in counts(changes).items())]
    shown = [c for c in changes if show_unchanged or c.change != "UNCHANGED" or c.drift
             or c.update_expectation]
    envs = _show_envs(changes)
    if shown:
        lines.append(f"{'CHANGE':<18} {'ENTRY':<44} {'MODE':<10} "
                     + (f"{'ENV':<16} " if envs else "") + f"{'BASE':<28} NEW")
    for c in shown:
        lines.append(f"{c.change:<18} {printable(c.entry, 44):<44} {printable(c.mode):<10} "
                     + (f"{printable(c.env, 16):<16} " if envs else "") +
                     f"{_outcome(c.base_status, c.base_category, c.base_stage):<28} "
                     f"{_outcome(c.new_status, c.new_category, c.new_stage)}")
        for d in c.drift:
            lines.append(f"{'':<18} drift: {d}")
        if c.update_expectation:
            lines.append(f"{'':<18} XPASS: update the expectation in the manifest")
    return "\n".join(lines)


def to_markdown(changes: list[Change], base: str, new: str, problems: list[str] = ()) -> str:
    lines = [f"### exportsweep: `{base}` → `{new}`", "",
             " · ".join(f"**{n}** {k.lower().replace('_', ' ')}" for k, n in counts(changes).items()),
             ""]
    lines += [f"> ⚠️ {p}" for p in problems] + ([""] if problems else [])
    shown = [c for c in changes if c.change != "UNCHANGED" or c.drift or c.update_expectation]
    envs = _show_envs(changes)
    if shown:
        lines += ["| change | entry | mode | " + ("env | " if envs else "") + "base | new | "
                  "notes |", "|---|---|---|" + ("---|" if envs else "") + "---|---|---|"]
        for c in shown:
            notes = "; ".join(c.drift + (["XPASS: update the expectation"]
                                         if c.update_expectation else []))
            lines.append(f"| {c.change} | `{printable(c.entry)}` | {printable(c.mode)} | "
                         + (f"{printable(c.env)} | " if envs else "") +
                         f"{_outcome(c.base_status, c.base_category, c.base_stage)} | "
                         f"{_outcome(c.new_status, c.new_category, c.new_stage)} | {notes} |")
    return "\n".join(lines) + "\n"


def _show_envs(changes: list[Change]) -> bool:
    return any(c.env != CURRENT for c in changes)


def _outcome(status: str | None, category: str | None, stage: str | None) -> str:
    if status is None:
        return "(absent)"
    return printable(status + (f" {category}" if category else "") +
                     (f"@{stage}" if stage else ""))
