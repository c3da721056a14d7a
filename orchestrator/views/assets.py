"""The report's inline stylesheet and script (no framework, nothing fetched).

Themes: light by default, dark under ``prefers-color-scheme: dark``; the toggle button
(or ``#theme=dark|light`` in the URL) pins one with ``<html data-theme=...>``.

The script makes the entries table sortable (click a header) and filterable (text box,
status / stage / category selects), pages it (``PAGE`` rows at a time, all rows are in the
DOM), and reads its initial state from the URL fragment, e.g.
``report.html#status=FAIL,ERROR&stage=export&category=GRAPH_BREAK&q=bert&sort=wall_s&desc=1``
(``page=N``, ``all=1`` shows every row); it writes the state back to the fragment as the
reader changes it, so a view can be shared as a link.
"""

from exporter.status import STATUS_TABLE, STATUSES

PAGE_SIZE = 200


def _status_colours(dark: bool) -> str:
    """``--PASS:#...; --onPASS:#...`` for every status, from the status table."""
    return "".join(f" --{s.name}:{s.colour_dark if dark else s.colour};"
                   f" --on{s.name}:{s.ink_dark if dark else s.ink};" for s in STATUS_TABLE)


_LIGHT = """
  --bg:#f6f7f9; --panel:#ffffff; --fg:#1c1f24; --muted:#5d6571; --faint:#8a929c;
  --border:#dde1e6; --grid:#e8ebef; --axis:#9aa2ac; --accent:#2f6bd6; --accent2:#8a5cc8;
  --hover:#f0f3f8; --code:#f1f3f6; --warn-bg:#fff4e0; --warn-fg:#7a4a00; --warn-border:#f0b44c;
  --good:#1f8a4c; --bad:#c63a2f;""" + _status_colours(dark=False)
_DARK = """
  --bg:#121417; --panel:#1b1e23; --fg:#e4e7eb; --muted:#a3abb6; --faint:#7a828d;
  --border:#2e333a; --grid:#2a2f36; --axis:#6b737e; --accent:#6d9cf2; --accent2:#b18be6;
  --hover:#232830; --code:#23272e; --warn-bg:#3a2a0c; --warn-fg:#ffd58a; --warn-border:#a8741d;
  --good:#5fd08f; --bad:#ff7b6f;""" + _status_colours(dark=True)

CSS = f"""
:root {{{_LIGHT} color-scheme: light; }}
@media (prefers-color-scheme: dark) {{ :root:not([data-theme=light]) {{{_DARK} color-scheme: dark; }} }}
:root[data-theme=dark] {{{_DARK} color-scheme: dark; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; background: var(--bg); color: var(--fg);
  font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
  font-variant-numeric: tabular-nums; }}
code, .mono, .sig, .repro {{ font-size: 12px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }}
main {{ max-width: 1320px; margin: 0 auto; padding: 16px 20px 40px; }}
header {{ display: flex; align-items: flex-start; gap: 16px; }}
header .grow {{ flex: 1; min-width: 0; }}
h1 {{ font-size: 19px; margin: 0 0 2px; font-weight: 600; }}
h1 code {{ font-size: 17px; }}
h2 {{ font-size: 14px; margin: 0 0 8px; font-weight: 600; letter-spacing: .01em; }}
h2 .sub, .sub {{ color: var(--muted); font-weight: 400; }}
h3 {{ font-size: 13px; margin: 12px 0 6px; }}
.meta {{ color: var(--muted); margin: 0; display: flex; flex-wrap: wrap; gap: 2px 14px; }}
.meta b {{ color: var(--fg); font-weight: 500; }}
nav {{ margin: 10px 0 14px; display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; }}
a {{ color: var(--accent); text-decoration: none; }} a:hover {{ text-decoration: underline; }}
button, select, input {{ font: inherit; color: var(--fg); background: var(--panel);
  border: 1px solid var(--border); border-radius: 5px; padding: 3px 8px; }}
button {{ cursor: pointer; }} button:hover {{ background: var(--hover); }}
section {{ background: var(--panel); border: 1px solid var(--border); border-radius: 8px;
  padding: 12px 14px; margin: 0 0 14px; min-width: 0; }}
.grid2 {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 0 14px; }}
.grid3 {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 0 14px; }}
#problems {{ background: var(--warn-bg); color: var(--warn-fg); border-color: var(--warn-border); }}
#problems ul {{ margin: 4px 0 0; padding-left: 20px; }}
#headline {{ display: flex; flex-wrap: wrap; align-items: center; gap: 10px 26px; }}
.big {{ font-size: 38px; font-weight: 650; line-height: 1; }}
.big small {{ font-size: 14px; font-weight: 400; color: var(--muted); }}
.delta {{ font-size: 13px; font-weight: 500; }} .up {{ color: var(--good); }} .down {{ color: var(--bad); }}
.stats {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.stat {{ border: 1px solid var(--border); border-left: 4px solid var(--c); border-radius: 6px;
  padding: 4px 12px 5px; min-width: 78px; }}
.stat .n {{ font-size: 20px; font-weight: 600; display: block; }}
.stat .k {{ font-size: 11px; color: var(--muted); letter-spacing: .04em; }}
.stat.zero {{ opacity: .55; }}
svg.chart {{ max-width: 100%; height: auto; display: block; overflow: visible; }}
svg .ct {{ font-size: 13px; font-weight: 600; fill: var(--fg); }}
svg .ax, svg .lg {{ font-size: 11px; fill: var(--muted); }}
svg .lb {{ font-size: 12px; fill: var(--fg); }}
svg .nt {{ font-size: 11px; fill: var(--muted); }}
svg .grid {{ stroke: var(--grid); stroke-width: 1; }}
svg .axis {{ stroke: var(--axis); stroke-width: 1; }}
svg .line {{ fill: none; stroke: var(--accent); stroke-width: 2; }}
svg .dot {{ fill: var(--panel); stroke: var(--accent); stroke-width: 2; }}
svg .dot.hl {{ fill: var(--accent); }}
svg .col {{ fill: var(--accent); opacity: .55; }} svg .col.hl {{ opacity: 1; }}
svg g.bar:hover .seg, svg g.pt:hover .col {{ opacity: .8; }}
.c-accent {{ fill: var(--accent); }} .c-bad {{ fill: var(--FAIL); }} .c-muted {{ fill: var(--SKIP); }}
.c-mem {{ fill: var(--accent2); }}
.k0 {{ fill: #8c96a3; }} .k1 {{ fill: #b3a06b; }} .k2 {{ fill: #4a7fd6; }} .k3 {{ fill: #49a3a0; }}
.k4 {{ fill: #7b62c9; }} .k5 {{ fill: #d08a3c; }} .k6 {{ fill: #c65a86; }} .k7 {{ fill: #5aa15b; }}
.k8 {{ fill: #a0524a; }}
{"".join(f".s-{s} {{ fill: var(--{s}); }} " for s in STATUSES)}
td.mx-diff {{ background: color-mix(in srgb, var(--FAIL) 18%, transparent); }}
.mx-counts {{ margin: 0 0 8px; padding-left: 18px; }}
.st {{ display: inline-block; white-space: nowrap; font-size: 11px; font-weight: 600; padding: 0 6px; border-radius: 4px;
  background: var(--SKIP); letter-spacing: .03em; }}
{"".join(f".st.s-{s} {{ background: var(--{s}); color: var(--on{s}); }} " for s in STATUSES)}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--grid); vertical-align: top; }}
th {{ font-size: 11px; color: var(--muted); font-weight: 600; letter-spacing: .03em;
  border-bottom: 1px solid var(--border); white-space: nowrap; position: sticky; top: 0;
  background: var(--panel); }}
td.num, th.num, #entries td:nth-child(7), #entries td:nth-child(8) {{ text-align: right;
  white-space: nowrap; }}
#entries td:nth-child(4), #entries td:nth-child(5) {{ white-space: nowrap; }}
#entries td:first-child {{ font-weight: 500; }}
tbody tr:hover {{ background: var(--hover); }}
th[data-key] {{ cursor: pointer; user-select: none; }}
th[aria-sort=ascending]::after {{ content: " ▲"; }} th[aria-sort=descending]::after {{ content: " ▼"; }}
.sig {{ color: var(--muted); font-size: 11px; }}
.repro {{ background: var(--code); border-radius: 4px; padding: 1px 5px; overflow-wrap: anywhere; }}
table.fixed {{ table-layout: fixed; }} table.fixed td {{ overflow-wrap: anywhere; }}
.nw {{ white-space: nowrap; }}
.change-group .scroll {{ max-height: 260px; overflow-y: auto; border-bottom: 1px solid var(--border); }}
.change-group summary {{ margin: 4px 0; }}
#clusters .msg, #clusters .msg .clamp {{ max-width: none; }}
select {{ max-width: 260px; }}
.msg .clamp {{ overflow: hidden; text-overflow: ellipsis; white-space: nowrap; cursor: pointer; }}
#entries table {{ min-width: 1100px; }}
.msg.open .clamp {{ white-space: pre-wrap; word-break: break-word; }}
.msg .more {{ display: none; margin-top: 3px; }} .msg.open .more {{ display: block; }}
.ent {{ font-weight: 500; word-break: break-all; }}
.controls {{ display: flex; flex-wrap: wrap; gap: 6px 10px; align-items: center; margin: 0 0 8px; }}
.controls input[type=search] {{ width: 260px; }}
.pager {{ display: flex; gap: 8px; align-items: center; margin-top: 8px; color: var(--muted); }}
.chips {{ display: flex; flex-wrap: wrap; gap: 6px; list-style: none; padding: 0; margin: 0 0 6px; }}
.chips li {{ border: 1px solid var(--border); border-radius: 12px; padding: 1px 10px; font-size: 12px; }}
.chips li b {{ font-weight: 600; }}
.chips li.bad {{ border-color: var(--FAIL); }} .chips li.good {{ border-color: var(--PASS); }}
.none {{ color: var(--muted); margin: 4px 0; }}
details summary {{ cursor: pointer; color: var(--muted); }}
.copy {{ font-size: 11px; padding: 0 6px; margin-left: 4px; }}
.scroll {{ overflow-x: auto; }}
footer {{ color: var(--faint); font-size: 11px; margin-top: 20px; }}
@media print {{ nav, .controls, .pager, #theme-toggle, .copy {{ display: none; }} }}
"""

JS = r"""
(function () {
  "use strict";
  var t0 = window.performance ? performance.now() : 0;
  var root = document.documentElement;
  function $(s) { return document.querySelector(s); }
  var P = new URLSearchParams(location.hash.replace(/^#/, ""));
  var dark = window.matchMedia ? matchMedia("(prefers-color-scheme: dark)") : null;
  var theme = P.get("theme");
  try { theme = theme || localStorage.getItem("exportsweep-theme"); } catch (e) {}
  if (theme === "dark" || theme === "light") root.setAttribute("data-theme", theme);
  var toggle = $("#theme-toggle");
  if (toggle) toggle.addEventListener("click", function () {
    var cur = root.getAttribute("data-theme") || (dark && dark.matches ? "dark" : "light");
    var next = cur === "dark" ? "light" : "dark";
    root.setAttribute("data-theme", next);
    try { localStorage.setItem("exportsweep-theme", next); } catch (e) {}
  });
  document.addEventListener("click", function (ev) {
    var t = ev.target;
    var btn = t.closest && t.closest("button.copy");
    if (btn) {
      var code = btn.previousElementSibling, text = code ? code.textContent : "";
      var label = btn.textContent;
      var done = function () {
        btn.textContent = "copied";
        setTimeout(function () { btn.textContent = label; }, 1200);
      };
      if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, function () {});
      return;
    }
    var clamp = t.closest && t.closest(".msg .clamp");
    if (clamp) clamp.parentNode.classList.toggle("open");
  });

  var table = $("#entries table");
  if (!table) return;
  var PAGE = +table.getAttribute("data-page-size") || 200;
  var tbody = table.tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  rows.forEach(function (r, i) { r._i = i; });
  var NUM = { wall_s: 1, peak_mb: 1 };
  var ORDER = {};      // status: worst first; stage: pipeline order
  ["ranks", "stages"].forEach(function (a) {
    var m = {};
    (table.getAttribute("data-" + a) || "").split(" ").forEach(function (v, i) { m[v] = i + 1; });
    ORDER[a === "ranks" ? "status" : "stage"] = m;
  });
  var NAMES = { total_s: "wall_s", peak_rss_mb: "peak_mb" };
  var F = { q: $("#f-text"), status: $("#f-status"), stage: $("#f-stage"), category: $("#f-category") };
  var S = { sort: NAMES[P.get("sort")] || P.get("sort") || "", desc: P.get("desc") === "1",
            page: Math.max(1, +P.get("page") || 1), all: P.get("all") === "1" };
  ["status", "stage", "category"].forEach(function (k) {
    var v = P.get(k);
    if (!v || !F[k]) return;
    if (!Array.prototype.some.call(F[k].options, function (o) { return o.value === v; })) {
      var o = document.createElement("option"); o.value = v; o.textContent = v; F[k].appendChild(o);
    }
    F[k].value = v;
  });
  if (P.get("q") && F.q) F.q.value = P.get("q");
  var showAll = $("#f-all"); if (showAll) showAll.checked = S.all;

  function key(r, k) {
    var v = r.getAttribute("data-" + k);
    if (ORDER[k]) return ORDER[k][v] || 0;
    if (NUM[k]) return v === null || v === "" ? null : parseFloat(v);
    return v === null ? "" : v.toLowerCase();
  }
  function apply(write) {
    var text = F.q ? F.q.value.trim().toLowerCase() : "";
    var want = {};
    ["status", "stage", "category"].forEach(function (k) {
      if (F[k] && F[k].value) want[k] = F[k].value.split(",");
    });
    var hit = rows.filter(function (r) {
      for (var k in want) if (want[k].indexOf(r.getAttribute("data-" + k) || "") < 0) return false;
      return !text || r.textContent.toLowerCase().indexOf(text) >= 0;
    });
    var k = S.sort;
    if (k && rows.length && rows[0].hasAttribute("data-" + k)) {
      var vals = new Map(); hit.forEach(function (r) { vals.set(r, key(r, k)); });
      var dir = S.desc ? -1 : 1;
      hit.sort(function (a, b) {
        var x = vals.get(a), y = vals.get(b);
        if (x === null || y === null) return x === y ? a._i - b._i : (x === null ? 1 : -1);
        return (x < y ? -dir : x > y ? dir : 0) || a._i - b._i;
      });
    } else hit.sort(function (a, b) { return a._i - b._i; });
    var pages = Math.max(1, Math.ceil(hit.length / PAGE));
    S.page = Math.min(S.page, pages);
    var lo = S.all ? 0 : (S.page - 1) * PAGE, hi = S.all ? hit.length : lo + PAGE;
    var frag = document.createDocumentFragment(), on = new Set(hit);
    hit.forEach(function (r, i) { r.hidden = i < lo || i >= hi; frag.appendChild(r); });
    rows.forEach(function (r) { if (!on.has(r)) { r.hidden = true; frag.appendChild(r); } });
    tbody.appendChild(frag);
    table.setAttribute("data-matched", hit.length);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var tk = th.getAttribute("data-key");
      if (tk) th.setAttribute("aria-sort", tk === S.sort ? (S.desc ? "descending" : "ascending") : "none");
    });
    var info = $("#entries-count");
    if (info) info.textContent = hit.length + " of " + rows.length + " pairs" +
      (S.all || pages === 1 ? "" : " · page " + S.page + " of " + pages);
    var prev = $("#pg-prev"), next = $("#pg-next");
    if (prev) prev.disabled = S.all || S.page <= 1;
    if (next) next.disabled = S.all || S.page >= pages;
    if (write) {
      var out = new URLSearchParams();
      ["status", "stage", "category"].forEach(function (k) {
        if (F[k] && F[k].value) out.set(k, F[k].value);
      });
      if (text) out.set("q", F.q.value.trim());
      if (S.sort) { out.set("sort", S.sort); if (S.desc) out.set("desc", "1"); }
      if (S.page > 1) out.set("page", S.page);
      if (S.all) out.set("all", "1");
      if (root.getAttribute("data-theme")) out.set("theme", root.getAttribute("data-theme"));
      try { history.replaceState(null, "", "#" + out.toString()); } catch (e) {}
    }
  }
  var timer = null;
  if (F.q) F.q.addEventListener("input", function () {
    clearTimeout(timer); timer = setTimeout(function () { S.page = 1; apply(true); }, 150);
  });
  ["status", "stage", "category"].forEach(function (k) {
    if (F[k]) F[k].addEventListener("change", function () { S.page = 1; apply(true); });
  });
  if (showAll) showAll.addEventListener("change", function () { S.all = showAll.checked; apply(true); });
  var prevB = $("#pg-prev"), nextB = $("#pg-next");
  if (prevB) prevB.addEventListener("click", function () { S.page -= 1; apply(true); });
  if (nextB) nextB.addEventListener("click", function () { S.page += 1; apply(true); });
  function onHead(ev) {
    var th = ev.target.closest("th[data-key]");
    if (!th || (ev.type === "keydown" && ev.key !== "Enter" && ev.key !== " ")) return;
    ev.preventDefault();
    var k = th.getAttribute("data-key");
    if (S.sort === k) S.desc = !S.desc; else { S.sort = k; S.desc = th.classList.contains("num"); }
    apply(true);
  }
  table.tHead.addEventListener("click", onHead);
  table.tHead.addEventListener("keydown", onHead);
  apply(false);
  root.setAttribute("data-ready", "1");
  if (t0) root.setAttribute("data-script-ms", Math.round(performance.now() - t0));
})();
"""
