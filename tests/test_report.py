"""exportsweep report: the HTML page, its numbers, its escaping, and the page in a real browser.

The unit tests parse the page with ``html.parser``; the browser tests open it in headless
Chromium (Debian's ``chromium``, installed by ``make browser``), take light and dark
screenshots (kept in ``test-output/``) and read the DOM after the script ran (``--dump-dom``),
with filters and sorting given in the URL fragment.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from exporter.record import Record
from exporter.schema import RowContext, row
from exporter.status import FAILED, STATUSES
from exporter.taxonomy import STAGES, Failure
from orchestrator.results.layout import RUN_META, RunMeta
from orchestrator.results.runs import RunData, read_run
from orchestrator.results.sink import ResultSink
from orchestrator.views import diff, report

from conftest import REPO

BIN = Path(sys.executable).parent
OUTPUT = REPO / "test-output"
T0 = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


# -- synthetic rows, made with the real record and schema --------------------------------------

def _row(entry: str, status: str = "PASS", category: str | None = None, stage: str | None = None,
         *, mode: str = "strict", family: str = "manual", tags: tuple[str, ...] = (),
         message: str = "boom", seconds: float = 1.0, mem: float | None = 800.0,
         run_id: str = "night-2", **facts: Any) -> dict[str, Any]:
    r = Record(entry=entry, family=family, mode=mode, device="cpu", tags=list(tags),
               repro=f"exportsweep repro m.yaml {entry} --mode {mode}")
    if status == "SKIP":
        r.skip(message)
    else:
        last = stage or "serialize"
        for s in STAGES:
            if s == stage and category:
                break
            r.passed(s)
            r.seconds[s] = seconds / 8
            if s == last:
                break
        if category:
            r.fail(Failure.make(category, stage, message, exception_type="RuntimeError",
                                error_code="code"))
        r.status = status
    r.total_s = seconds if status != "SKIP" else 0.0
    r.peak_rss_mb = mem
    r.started_at = T0.timestamp()
    r.finished_at = T0.timestamp() + seconds
    for k, v in facts.items():
        setattr(r, k, v)
    return row(r, RowContext(run_id=run_id))


def _run(rows: list[dict[str, Any]], run_id: str = "night-2", meta: dict | None = None,
         problems: list[str] | None = None) -> RunData:
    return RunData(run_id, RunMeta(run_id, **(meta or {})), rows, rows, problems or [])


def _night(run_id: str, broken: bool, worse: bool = False) -> list[dict[str, Any]]:
    """A small zoo: three families, two modes, every status, several categories.

    ``broken``: two timm models fail; ``worse``: a third one too, and gpt2 is fixed."""
    rows = []
    for i in range(6):
        fails = (broken and i < 2) or (worse and i < 3)
        for mode in ("non-strict", "strict"):
            rows.append(_row(f"torchvision/resnet{i}", mode=mode, family="torchvision",
                             tags=("vision",), seconds=2.0 + i, mem=900 + 100 * i, run_id=run_id))
            rows.append(_row(f"timm/vit_{i}", "FAIL" if fails else "PASS",
                             "DATA_DEPENDENT_GUARD" if fails else None, "export" if fails else None,
                             mode=mode, family="timm", tags=("vision", "transformer"),
                             seconds=5.0 + 2 * i, mem=1500 + 50 * i,
                             message="Could not guard on data-dependent expression u0 > 4",
                             run_id=run_id))
    for mode in ("non-strict", "strict"):
        rows += [
            _row("transformers/bert", "XFAIL", "GRAPH_BREAK", "export", mode=mode,
                 family="transformers", tags=("nlp",), seconds=12.0, mem=2400,
                 message="Unsupported: call_function <b>generic</b> & 'friends'", run_id=run_id),
            _row("transformers/gpt2", *(("PASS", None, None) if worse else
                                        ("FAIL", "DECOMPOSITION_ERROR", "decompose")), mode=mode,
                 family="transformers", tags=("nlp",), seconds=20.0, mem=3100,
                 message="aten.foo has no decomposition", run_id=run_id),
            _row("manual/slow", "ERROR", "TIMEOUT", None, mode=mode, seconds=300.0, mem=500,
                 message="ran past its deadline of 300 s", run_id=run_id),
            _row("manual/cuda_only", "SKIP", mode=mode, message="no GPU in the cluster", mem=None,
                 run_id=run_id),
            _row("manual/numerics", "FAIL", "NUMERIC_MISMATCH", "numerics", mode=mode,
                 seconds=3.0, message="max abs err 0.5 > atol 1e-4", run_id=run_id),
        ]
    rows.append(_row("manual/stale", "XPASS", mode="strict", expected="FAIL GRAPH_BREAK",
                     run_id=run_id))
    return rows


# -- a small DOM, from html.parser ---------------------------------------------------------------

VOID = {"meta", "link", "br", "hr", "img", "input", "source", "wbr", "col", "area", "base"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None") -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, **attrs: str) -> list["Node"]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and all(
                        _matches(c, k, v) for k, v in attrs.items()):
                    out.append(c)
                out += c.all(tag, **attrs)
        return out

    def by_id(self, id_: str) -> "Node":
        found = self.all(id=id_)
        assert found, f"no element #{id_}"
        return found[0]

    def get(self, key: str) -> str | None:
        return self.attrs.get(key)


def _matches(node: Node, key: str, value: str) -> bool:
    if key == "class_":         # every class given, in any order
        return set(value.split()) <= set((node.attrs.get("class") or "").split())
    return node.attrs.get(key.replace("_", "-")) == value


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def dom(html: str) -> Node:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root


def entry_rows(doc: Node) -> list[Node]:
    return doc.by_id("entries").all("tbody")[0].all("tr")


# -- the page, from data -------------------------------------------------------------------------

def test_headline_numbers_match_the_rows():
    rows = _night("night-2", broken=True)
    doc = dom(report.build_report(_run(rows)))
    head = doc.by_id("headline")
    counts = {n.get("data-status"): int(n.get("data-count")) for n in head.all(class_="stat")
              if n.get("data-status")}
    expected = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    assert counts == expected and sum(counts.values()) == len(rows) == int(head.get("data-pairs"))
    ok = expected["PASS"] + expected["XFAIL"]
    assert head.get("data-pass-rate") == f"{100 * ok / len(rows):.1f}"
    assert f"{100 * ok / len(rows):.1f}%" in head.text()
    assert f"{ok} of {len(rows)} (entry, mode) pairs" in head.text()


def test_funnel_counts_pairs_reaching_each_stage():
    rows = [_row("a"), _row("b", "FAIL", "GRAPH_BREAK", "export"),
            _row("c", "FAIL", "NUMERIC_MISMATCH", "numerics"),
            _row("d", "FAIL", "MODEL_BUILD_ERROR", "build"), _row("e", "SKIP")]
    bars = {g.get("data-stage"): (int(g.get("data-reached")), int(g.get("data-failed")))
            for g in dom(report.build_report(_run(rows))).by_id("funnel").all("g", class_="bar")}
    assert list(bars) == list(STAGES)
    assert bars["build"] == (4, 1) and bars["eager"] == (3, 0) and bars["export"] == (3, 1)
    assert bars["verify"] == (2, 0) and bars["numerics"] == (2, 1) and bars["serialize"] == (1, 0)
    assert bars["aoti"] == (0, 0)


def test_rates_taxonomy_clusters_slowest_and_memory():
    rows = _night("night-2", broken=True)
    doc = dom(report.build_report(_run(rows)))
    fam = {g.get("data-group"): (int(g.get("data-pass")), int(g.get("data-total")))
           for g in doc.by_id("by-family").all("g", class_="bar")}
    assert fam["torchvision"] == (12, 12) and fam["timm"] == (8, 12)
    assert fam["transformers"] == (2, 4)        # bert XFAIL counts as a pass, gpt2 fails
    modes = {g.get("data-group") for g in doc.by_id("by-mode").all("g", class_="bar")}
    assert modes == {"strict", "non-strict"}
    tags = {g.get("data-group") for g in doc.by_id("by-tag").all("g", class_="bar")}
    assert tags == {"vision", "transformer", "nlp", "(untagged)"}
    cats = {g.get("data-category"): int(g.get("data-count"))
            for g in doc.by_id("taxonomy").all("g", class_="bar")}
    assert cats == {"DATA_DEPENDENT_GUARD": 4, "GRAPH_BREAK": 2, "DECOMPOSITION_ERROR": 2,
                    "TIMEOUT": 2, "NUMERIC_MISMATCH": 2}
    clusters = doc.by_id("clusters").all("tbody")[0].all("tr")
    assert len(clusters) == len({r["signature"] for r in rows if r["status"] in FAILED})
    assert int(clusters[0].get("data-rows")) == 4 and "DATA_DEPENDENT_GUARD" in clusters[0].text()
    assert all("exportsweep repro m.yaml" in c.text() for c in clusters)
    slow = doc.by_id("slowest").all("g", class_="bar")
    assert slow[0].get("data-entry") == "manual/slow" and len(slow) == report.TOP_N
    mem = doc.by_id("memory").all("g", class_="bar")
    assert mem[0].get("data-entry") == "transformers/gpt2" and float(mem[0].get("data-mib")) == 3100


def test_dynamism_per_family_and_model_least_covered_first():
    asked = ["x.shape[0] (auto)", "x.shape[1] (auto)"]
    rows = [
        _row("dyn/full", mode=m, family="manual", dynamic_requested=asked,
             dynamic_achieved=["x.shape[0] in [2, inf]", "x.shape[1] in [2, inf]"])
        for m in ("non-strict", "strict")] + [
        _row("dyn/fixed", mode=m, family="manual", dynamic_requested=asked,
             dynamic_achieved=["x.shape[0] in [2, inf]"],
             dynamic_specialized=["x.shape[1] = 6: Eq(x.shape[1], 6) at m.py:3: <if>"])
        for m in ("non-strict", "strict")] + [
        _row("tv/resnet", "FAIL", "DYNAMIC_SHAPE_FAILURE", "dynamic", mode="strict",
             family="torchvision", message="the program fails at x.shape[2]=2: Guard failed",
             dynamic_requested=["x.shape[0] (batch)"], dynamic_achieved=["x.shape[0] in [2, 8]"]),
        _row("tv/plain", family="torchvision"),               # asked nothing: not counted
    ]
    doc = dom(report.build_report(_run(rows)))
    section = doc.by_id("dynamism")
    assert section.get("data-entries") == "3"
    fam = {g.get("data-family"): (int(g.get("data-kept")), int(g.get("data-asked")),
                                  int(g.get("data-failing")))
           for g in section.all("g", class_="bar")}
    assert fam == {"manual": (3, 4, 0), "torchvision": (1, 1, 1)}
    models = section.all("tbody")[0].all("tr")
    assert [m.get("data-entry") for m in models] == ["dyn/fixed", "dyn/full", "tv/resnet"]
    assert "Eq(x.shape[1], 6) at m.py:3: <if>" in models[0].text()
    assert "<if>" not in report.build_report(_run(rows)).split('id="dynamism"')[1].split(
        "</section>")[0].replace("&lt;if&gt;", "")          # escaped
    assert "strict: the program fails at x.shape[2]=2" in models[2].text()


def test_clusters_list_the_failing_submodules_with_a_repro_each():
    rows = [_row("det/frcnn", "FAIL", "DATA_DEPENDENT_GUARD", "export", mode=m,
                 localized_paths=["roi_heads", ""], localized_classes=["RoIHeads", "Frcnn"],
                 localized_categories=["DATA_DEPENDENT_GUARD", "UNSUPPORTED_TYPE"])
            for m in ("non-strict", "strict")]
    doc = dom(report.build_report(_run(rows)))
    [cluster] = doc.by_id("clusters").all("tbody")[0].all("tr")
    items = cluster.all("li")
    texts = [i.text() for i in items if "[" in i.text()]
    assert any("det/frcnn [strict]: roi_heads RoIHeads · DATA_DEPENDENT_GUARD" in t
               for t in texts)
    assert any("(itself) Frcnn · UNSUPPORTED_TYPE" in t for t in texts)
    repros = [c.text() for c in cluster.all("code", class_="repro")]
    assert "exportsweep repro m.yaml det/frcnn --mode strict --submodule roi_heads" in repros
    assert "exportsweep repro m.yaml det/frcnn --mode strict --submodule ''" in repros


def test_entries_table_has_one_row_per_pair_with_its_facts():
    rows = _night("night-2", broken=True)
    doc = dom(report.build_report(_run(rows)))
    trs = entry_rows(doc)
    assert len(trs) == len(rows)
    assert {(t.get("data-entry"), t.get("data-mode")) for t in trs} == \
        {(r["entry"], r["mode"]) for r in rows}
    first = trs[0]       # the worst news first: FAIL rows lead
    assert first.get("data-status") == "FAIL"
    gpt2 = next(t for t in trs if t.get("data-entry") == "transformers/gpt2")
    assert gpt2.get("data-stage") == "decompose"
    assert gpt2.get("data-category") == "DECOMPOSITION_ERROR"
    assert gpt2.get("data-wall_s") == "20.000" and "3,100" in gpt2.text()
    assert "aten.foo has no decomposition" in gpt2.text() and "exportsweep repro" in gpt2.text()


def test_messages_and_names_are_escaped():
    evil = '<script>alert("pwned")</script> & \'quotes\' <img src=x onerror=alert(1)>'
    rows = [_row('model<b>"x"</b>', "FAIL", "EXPORT_ERROR", "export", message=evil),
            _row("ok")]
    html = report.build_report(_run(rows, problems=[f"part-1.parquet: torn {evil}"]))
    assert html.count("<script") == 1                  # only the report's own script
    assert "<img" not in html and "<b>" not in html
    doc = dom(html)
    tr = next(t for t in entry_rows(doc) if t.get("data-status") == "FAIL")
    assert tr.get("data-entry") == 'model<b>"x"</b>'
    assert evil in tr.text()                            # shown as text, exactly
    assert evil in doc.by_id("problems").text()
    assert evil[:60] in doc.by_id("clusters").text()


def test_changes_against_the_baseline_grouped_by_kind():
    base, new = _night("night-1", broken=False), _night("night-2", broken=True)
    new = [r for r in new if r["entry"] != "manual/numerics"]        # two pairs dropped out
    new.append(_row("manual/new_model", run_id="night-2"))
    doc = dom(report.build_report(_run(new), baseline=_run(base, "night-1")))
    section = doc.by_id("changes")
    assert section.get("data-baseline") == "night-1"
    chips = {li.get("data-kind"): int(li.get("data-count")) for li in section.all("li")}
    expected = diff.counts(diff.compare_runs(base, new))
    assert chips == {**expected, **({"DRIFT": chips["DRIFT"]} if "DRIFT" in chips else {})}
    assert chips["NEW_FAILURE"] == 4 and chips["MISSING"] == 2 and chips["NEW_ENTRY"] == 1
    groups = {g.get("data-kind"): g for g in section.all("details", class_="change-group")}
    assert "UNCHANGED" not in groups and {"NEW_FAILURE", "MISSING", "NEW_ENTRY"} <= set(groups)
    new_failures = groups["NEW_FAILURE"].all("tr", data_change="NEW_FAILURE")
    assert {t.get("data-entry") for t in new_failures} == {"timm/vit_0", "timm/vit_1"}
    assert "DATA_DEPENDENT_GUARD" in groups["NEW_FAILURE"].text()
    delta = doc.by_id("headline").all(class_="delta down")
    assert delta and float(delta[0].get("data-delta")) < 0


def test_without_baseline_the_section_says_so_and_no_problem_banner():
    doc = dom(report.build_report(_run(_night("night-1", broken=False))))
    assert doc.by_id("changes").get("data-baseline") == ""
    assert "No baseline run" in doc.by_id("changes").text()
    assert doc.by_id("problems").get("data-count") == "0"
    assert "hidden" in doc.by_id("problems").attrs


def test_an_empty_unfinished_run_still_renders():
    doc = dom(report.build_report(_run([], problems=["the run has not finished"]), [],
                                  baseline=_run([_row("a")], "night-1")))
    assert doc.by_id("headline").get("data-pass-rate") == "" and not entry_rows(doc)
    assert "the run has not finished" in doc.by_id("problems").text()
    assert dict((li.get("data-kind"), li.get("data-count"))
                for li in doc.by_id("changes").all("li")) == {"MISSING": "1"}


def test_trend_has_one_point_per_run_in_order_and_highlights_the_selected():
    history = [report.RunSummary("n1", "2026-11-18T02:00:00+00:00", 10, {"PASS": 10}, 60.0),
               report.RunSummary("n2", "2026-11-19T02:00:00+00:00", 10, {"PASS": 5, "FAIL": 5},
                                 90.0),
               report.RunSummary("night-2", "2026-11-20T02:00:00+00:00", 4, {"PASS": 3, "XFAIL": 1},
                                 None)]
    doc = dom(report.build_report(_run([_row("a")]), history))
    pts = doc.by_id("trend-pass").all("g")
    assert [p.get("data-run") for p in pts] == ["n1", "n2", "night-2"]
    assert [p.get("data-pass-rate") for p in pts] == ["100.0", "50.0", "100.0"]
    assert len(doc.by_id("trend-pass").all("circle")) == 3
    assert len(doc.by_id("trend-pass").all("polyline")) == 1
    assert [p.get("class") for p in pts] == ["pt", "pt", "pt hl"]
    walls = doc.by_id("trend-wall")
    assert len(walls.all("rect")) == 2                 # the run without wall time has no column
    for svg in doc.all("svg"):                         # accessible charts
        assert svg.get("role") == "img" and svg.all("title") and svg.get("aria-labelledby")


def test_run_summary_from_meta_or_from_rows():
    meta = RunMeta("r", counts={"PASS": 3, "FAIL": 1}, wall_s=12.5,
                   started_at="2026-11-20T02:00:00+00:00",
                   finished_at="2026-11-20T02:00:12+00:00")
    s = report.summarize("r", None, meta)
    assert s.pairs == 4 and s.pass_rate == 75.0 and s.wall_s == 12.5
    assert not report.needs_rows(meta) and report.needs_rows(RunMeta("r", started_at="x"))
    rows = [_row("a", seconds=5.0), _row("b", "XFAIL", "GRAPH_BREAK", "export")]
    s = report.summarize("r", "2026-11-20T02:00:00+00:00", RunMeta("r"), rows)
    assert s.pairs == 2 and s.pass_rate == 100.0 and s.wall_s == 5.0   # span of the rows


def test_page_is_self_contained():
    html = report.build_report(_run(_night("night-2", broken=True)))
    for banned in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert banned not in html, banned
    assert html.startswith("<!DOCTYPE html>") and "prefers-color-scheme: dark" in html
    assert 'id="theme-toggle"' in html and "data-theme" in html


# -- from files, through the command -------------------------------------------------------------

def _write_run(out: Path, run_id: str, rows: list[dict[str, Any]], day: int,
               finished: bool = True) -> dict[str, Any]:
    sink = ResultSink(str(out), run_id)
    parts = {}
    for i in range(0, len(rows), 7):
        chunk = rows[i:i + 7]
        parts[sink.write(chunk)] = len(chunk)
    start = T0 + timedelta(days=day)
    meta = {"run_id": run_id, "started_at": start.isoformat(timespec="seconds"),
            "finished_at": None, "expected_pairs": len(rows), "executor": "in-process",
            "versions": {"torch": "2.14.1", "exportsweep": "0.test"}}
    if finished:
        meta.update(finished_at=(start + timedelta(minutes=20 + 7 * day)).isoformat(
            timespec="seconds"), wall_s=1200.0 + 420 * day, parts=parts,
            counts=dict(report.status_counts(rows)), rows=len(rows))
    sink.write_meta(RunMeta(**meta))
    return meta


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """Four nights of the synthetic zoo: two models broke in night-2, a third one in night-3,
    when gpt2 got fixed."""
    out = tmp_path_factory.mktemp("zoo") / "results"
    for day, (run_id, broken) in enumerate((("night-0", False), ("night-1", False),
                                             ("night-2", True), ("night-3", True))):
        rows = _night(run_id, broken, worse=run_id == "night-3")
        if run_id == "night-1":
            rows = rows[:-3]
        _write_run(out, run_id, rows, day)
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "exportsweep"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_report_command_defaults_to_latest_against_previous(zoo, tmp_path):
    target = tmp_path / "r.html"
    proc = _cli("report", str(zoo), "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    assert str(target) in proc.stdout and "night-3" in proc.stdout and "night-2" in proc.stdout
    assert "pass rate" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1
    doc = dom(target.read_text())
    assert doc.by_id("changes").get("data-baseline") == "night-2"
    assert [g.get("data-run") for g in doc.by_id("trend-pass").all("g")] == \
        ["night-0", "night-1", "night-2", "night-3"]
    assert len(entry_rows(doc)) == len(read_run(str(zoo), "night-3").final_rows)


def test_report_command_run_and_baseline_options(zoo, tmp_path):
    target = tmp_path / "sub" / "r.html"
    proc = _cli("report", str(zoo), "--run", "night-2", "--baseline", "night-0", "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    doc = dom(target.read_text())
    assert doc.by_id("changes").get("data-baseline") == "night-0"
    assert "night-2" in doc.all("h1")[0].text()
    first = _cli("report", str(zoo), "--run", "night-0", "-o", str(target))
    assert first.returncode == 0 and "no baseline" in first.stdout
    assert "No baseline run" in target.read_text()


def test_report_command_unknown_run_is_a_usage_error(zoo, tmp_path):
    proc = _cli("report", str(zoo), "--run", "nope", "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.html").exists()
    proc = _cli("report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_missing_and_torn_files_are_reported_in_the_banner(tmp_path):
    out = tmp_path / "results"
    _write_run(out, "good", _night("good", False), 0)
    meta = _write_run(out, "bad", _night("bad", True), 1)
    folder = out / "run_id=bad"
    lost = sorted(meta["parts"])[0]
    (folder / lost).unlink()
    (folder / "part-09999-deadbeef.parquet").write_bytes(b"PAR1 torn in half")
    result = report.write_report(str(out), "bad", None, str(tmp_path / "r.html"))
    assert len(result.problems) >= 2 and "data problem" in result.summary()
    banner = dom((tmp_path / "r.html").read_text()).by_id("problems")
    assert int(banner.get("data-count")) >= 2 and "hidden" not in banner.attrs
    text = banner.text()
    assert lost in text and "missing" in text and "part-09999-deadbeef.parquet" in text


# -- in a real browser ---------------------------------------------------------------------------

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps", "--mute-audio",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars")


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium")
                                        else None)
    if path:
        return path
    if os.environ.get("EXPORTSWEEP_SKIP_BROWSER") == "1":
        pytest.skip("no chromium and EXPORTSWEEP_SKIP_BROWSER=1")
    pytest.fail("Chromium is not installed (/usr/bin/chromium): run `make browser` (installs "
                "Debian's chromium), or set EXPORTSWEEP_SKIP_BROWSER=1 to skip the browser tests")


def browse(page: Path, *args: str, fragment: str = "", timeout: int = 60) -> str:
    with tempfile.TemporaryDirectory(prefix="exportsweep-chromium-") as profile:
        proc = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--virtual-time-budget=5000", *args,
                               page.resolve().as_uri() + (f"#{fragment}" if fragment else "")],
                              capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def zoo_page(zoo, tmp_path_factory) -> Path:
    page = tmp_path_factory.mktemp("page") / "report.html"
    report.write_report(str(zoo), "latest", None, str(page))
    return page


def _top_left_rgb(path: Path) -> tuple[int, int, int]:
    """The first pixel of a PNG: on the first row every PNG filter leaves it as it is."""
    data = path.read_bytes()
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompressobj().decompress(idat, 8)
    return raw[1], raw[2], raw[3]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_light_and_dark(zoo_page, theme):
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / ("report.png" if theme == "light" else "report-dark.png")
    shot.unlink(missing_ok=True)
    browse(zoo_page, f"--screenshot={shot}", "--window-size=1400,2400",
           *(["--force-dark-mode"] if theme == "dark" else []))
    assert _png_size(shot) == (1400, 2400)
    assert shot.stat().st_size > 60_000            # a page with charts, not a blank one
    background = sum(_top_left_rgb(shot))           # the page background: --bg of the theme
    assert background > 600 if theme == "light" else background < 150, (theme, background)


def test_dom_after_the_script_ran(zoo_page, zoo):
    doc = dom(browse(zoo_page, "--dump-dom"))
    final = read_run(str(zoo), "night-3").final_rows
    trs = entry_rows(doc)
    assert len(trs) == len(final) and not any("hidden" in t.attrs for t in trs)
    assert doc.by_id("entries-count").text().startswith(f"{len(final)} of {len(final)}")
    for key in ("headline", "funnel", "by-family", "by-tag", "by-mode", "taxonomy", "clusters",
                "slowest", "memory", "trend", "changes"):
        assert doc.by_id(key).text().strip(), key
    assert len(doc.by_id("funnel").all("rect")) >= len(STAGES)
    assert len(doc.by_id("trend-pass").all("circle")) == 4
    assert len(doc.by_id("taxonomy").all("g", class_="bar")) == 4      # gpt2 got fixed
    chips = {li.get("data-kind"): int(li.get("data-count"))
             for li in doc.by_id("changes").all("li")}
    assert chips["NEW_FAILURE"] == 2 and chips["FIXED"] == 2


def test_fragment_filters_and_sorts_the_table(zoo_page):
    doc = dom(browse(zoo_page, "--dump-dom", fragment="status=FAIL&sort=wall_s&desc=1"))
    trs = entry_rows(doc)
    shown = [t for t in trs if "hidden" not in t.attrs]
    assert shown and all(t.get("data-status") == "FAIL" for t in shown)
    assert all(t.get("data-status") != "FAIL" for t in trs if "hidden" in t.attrs)
    walls = [float(t.get("data-wall_s")) for t in shown]
    assert walls == sorted(walls, reverse=True) and walls[0] > walls[-1]
    assert trs[:len(shown)] == shown                # matching rows first, in sorted order
    head = next(th for th in doc.by_id("entries").all("th") if th.get("data-key") == "wall_s")
    assert head.get("aria-sort") == "descending"
    doc = dom(browse(zoo_page, "--dump-dom",
                     fragment="category=TIMEOUT,GRAPH_BREAK&sort=entry&q=bert&theme=dark"))
    assert doc.all("html")[0].get("data-theme") == "dark"
    shown = [t for t in entry_rows(doc) if "hidden" not in t.attrs]
    assert [(t.get("data-entry"), t.get("data-category")) for t in shown] == \
        [("transformers/bert", "GRAPH_BREAK")] * 2


def test_clicks_sort_filter_theme_and_write_the_fragment(zoo_page, tmp_path):
    """The handlers themselves: a script clicks like a reader would, then the DOM is read."""
    page = tmp_path / "clicked.html"
    page.write_text(zoo_page.read_text().replace("</body>", """<script>
      var th = document.querySelector('#entries th[data-key=peak_mb]');
      th.click(); th.click();                       // numbers sort descending first: now ascending
      var st = document.getElementById('f-status');
      st.value = 'PASS'; st.dispatchEvent(new Event('change'));
      document.getElementById('theme-toggle').click();
      document.body.setAttribute('data-hash', location.hash);
    </script></body>"""))
    doc = dom(browse(page, "--dump-dom"))
    assert doc.all("html")[0].get("data-theme") == "dark"
    shown = [t for t in entry_rows(doc) if "hidden" not in t.attrs]
    assert shown and {t.get("data-status") for t in shown} == {"PASS"}
    mem = [float(t.get("data-peak_mb")) for t in shown]
    assert mem == sorted(mem) and mem[0] < mem[-1]
    hash_ = doc.all("body")[0].get("data-hash")
    assert "status=PASS" in hash_ and "sort=peak_mb" in hash_ and "desc" not in hash_


def test_real_sweep_in_the_browser(tmp_path_factory):
    """A real in-process sweep (real torch.export, real Parquet), reported and rendered."""
    from exporter.manifest import load_manifest
    from orchestrator.execute.config import SweepConfig
    from orchestrator.execute.sweep import run_sweep

    folder = tmp_path_factory.mktemp("real")
    (folder / "models").symlink_to(REPO / "tests" / "models", target_is_directory=True)
    manifest = folder / "m.yaml"
    manifest.write_text("""
version: 1
defaults: {modes: [non-strict, strict]}
entries:
  - {name: mlp, entrypoint: "models/tiny.py:make_mlp", inputs: [{shape: [2, 4]}], tags: [tiny]}
  - name: guard
    entrypoint: "models/tiny.py:make_guard"
    inputs: [{shape: [2, 3]}]
    expect: {status: FAIL, category: DATA_DEPENDENT_GUARD}
  - {name: fails, entrypoint: "models/tiny.py:make_guard", inputs: [{shape: [2, 3]}],
     modes: [strict]}
""")
    out = folder / "results"
    run_sweep(load_manifest(manifest), SweepConfig(out=str(out), run_id="real-1"),
              out=io.StringIO())
    page = folder / "report.html"
    result = report.write_report(str(out), "latest", None, str(page))
    assert result.run_id == "real-1" and result.baseline_id is None and not result.problems
    final = read_run(str(out), "real-1").final_rows
    doc = dom(browse(page, "--dump-dom", fragment="sort=status"))
    trs = entry_rows(doc)
    assert len(trs) == len(final) == 5
    assert [t.get("data-status") for t in trs] == ["FAIL", "XFAIL", "XFAIL", "PASS", "PASS"]
    fails = trs[0]
    assert fails.get("data-entry") == "fails"
    assert fails.get("data-category") == "DATA_DEPENDENT_GUARD"
    assert "exportsweep repro" in fails.text() and "--mode strict" in fails.text()
    bars = {g.get("data-stage"): int(g.get("data-reached"))
            for g in doc.by_id("funnel").all("g", class_="bar")}
    assert bars["build"] == 5 and bars["export"] == 5
    assert bars["serialize"] == sum(r["status"] == "PASS" for r in final)
    meta = json.loads((out / "run_id=real-1" / RUN_META).read_text())
    assert doc.by_id("headline").get("data-pairs") == str(meta["rows"])
