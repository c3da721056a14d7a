"""Inline SVG charts for the HTML report, drawn here in Python: no JavaScript, no files.

Colours come from CSS classes (``s-PASS``, ``c-accent``...) that the report's stylesheet
maps to CSS variables, so every chart follows the light or dark theme.  Each chart is an
``<svg role="img">`` with a ``<title>`` and ``<desc>``, a visible title, axes with units and
tick labels; every bar or point carries a ``<title>`` (the tooltip) and ``data-`` attributes
for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

CHAR_W = 6.7          # average width of a 12px sans-serif character, px
TICK_CHAR_W = 6.2     # 11px
FONT = 12


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def attrs(data: dict[str, object]) -> str:
    """`` data-k="v"`` pairs (None values left out)."""
    return "".join(f' data-{k}="{esc(v)}"' for k, v in data.items() if v is not None)


@dataclass
class Segment:
    value: float
    cls: str              # CSS class giving the fill, e.g. "s-FAIL"
    label: str = ""       # tooltip part, e.g. "FAIL 3"


@dataclass
class Bar:
    label: str
    segments: list[Segment]
    note: str = ""                                   # text right of the bar
    data: dict[str, object] = field(default_factory=dict)
    tooltip: str = ""


@dataclass
class Point:
    label: str              # short x label (date, run id)
    value: float | None
    tooltip: str
    data: dict[str, object] = field(default_factory=dict)
    highlight: bool = False


def nice_ticks(hi: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``hi``."""
    if not hi or hi <= 0 or math.isnan(hi):
        return [0.0, 1.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw * 0.999)
    count = max(1, math.ceil(hi / step - 1e-9))
    return [round(i * step, 10) for i in range(count + 1)]


def fmt_num(v: float) -> str:
    if v == int(v):
        v = int(v)
        return f"{v / 1000:g}k" if abs(v) >= 10000 else f"{v:,}"
    return f"{v:.3g}"


def _svg_open(chart_id: str, title: str, desc: str, width: int, height: float) -> str:
    h = math.ceil(height)
    return (f'<svg id="{esc(chart_id)}" class="chart" viewBox="0 0 {width} {h}" width="{width}" '
            f'height="{h}" role="img" aria-labelledby="{esc(chart_id)}-t {esc(chart_id)}-d">'
            f'<title id="{esc(chart_id)}-t">{esc(title)}</title>'
            f'<desc id="{esc(chart_id)}-d">{esc(desc)}</desc>'
            f'<text class="ct" x="0" y="14">{esc(title)}</text>')


def _fit(label: str, max_chars: int) -> str:
    return label if len(label) <= max_chars else label[: max(1, max_chars - 1)] + "…"


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    out = []
    for cls, name in items:
        out.append(f'<rect class="{esc(cls)}" x="{x:.1f}" y="{y - 9}" width="10" height="10" '
                   f'rx="2"/><text class="lg" x="{x + 14:.1f}" y="{y}">{esc(name)}</text>')
        x += 14 + len(name) * TICK_CHAR_W + 14
    return "".join(out)


def hbar_chart(bars: Sequence[Bar], *, chart_id: str, title: str, axis_label: str,
               desc: str = "", width: int = 620, max_value: float | None = None,
               percent: bool = False, legend: Sequence[tuple[str, str]] = (),
               max_label_chars: int = 40, empty: str = "nothing to show") -> str:
    """Horizontal (stacked) bars, one row per item, x axis at the bottom with ticks."""
    if not bars:
        return (_svg_open(chart_id, title, desc or empty, width, 44)
                + f'<text class="ax" x="0" y="36">{esc(empty)}</text></svg>')
    labels = [_fit(b.label, max_label_chars) for b in bars]
    label_w = min(max(len(s) for s in labels) * CHAR_W + 10, width * 0.45)
    note_w = max(len(b.note) for b in bars) * TICK_CHAR_W + 10 if any(b.note for b in bars) else 4
    x0, x1 = label_w, width - note_w
    top = 42 if legend else 26
    row_h, bar_h = 20, 13
    hi = 100.0 if percent else (max_value if max_value is not None else
                                max(sum(s.value for s in b.segments) for b in bars))
    ticks = [0.0, 25.0, 50.0, 75.0, 100.0] if percent else nice_ticks(hi)
    scale = (x1 - x0) / (ticks[-1] or 1)
    axis_y = top + len(bars) * row_h + 2
    out = [_svg_open(chart_id, title, desc or title, width, axis_y + 36)]
    if legend:
        out.append(_legend(legend, 0, 32))
    for t in ticks:
        x = x0 + t * scale
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}"/>'
                   f'<text class="ax" x="{x:.1f}" y="{axis_y + 13}" text-anchor="middle">'
                   f'{fmt_num(t)}{"%" if percent else ""}</text>')
    out.append(f'<line class="axis" x1="{x0}" y1="{axis_y}" x2="{x1}" y2="{axis_y}"/>'
               f'<text class="ax" x="{(x0 + x1) / 2:.1f}" y="{axis_y + 30}" '
               f'text-anchor="middle">{esc(axis_label)}</text>')
    for i, (b, label) in enumerate(zip(bars, labels)):
        y = top + i * row_h
        tip = b.tooltip or f"{b.label}: " + ", ".join(s.label for s in b.segments if s.label)
        out.append(f'<g class="bar"{attrs(b.data)}><title>{esc(tip)}</title>'
                   f'<text class="lb" x="{x0 - 8:.1f}" y="{y + bar_h - 2}" '
                   f'text-anchor="end">{esc(label)}</text>')
        x = x0
        total = sum(s.value for s in b.segments)
        for s in b.segments:
            value = s.value * 100.0 / total if percent and total else s.value
            w = value * scale
            if w > 0:
                out.append(f'<rect class="seg {esc(s.cls)}" x="{x:.1f}" y="{y}" '
                           f'width="{max(w, 1.0):.1f}" height="{bar_h}"/>')
            x += w
        if b.note:
            out.append(f'<text class="nt" x="{x1 + 6:.1f}" y="{y + bar_h - 2}">'
                       f'{esc(b.note)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def run_chart(points: Sequence[Point], *, chart_id: str, title: str, axis_label: str,
              kind: str = "line", desc: str = "", width: int = 620, height: int = 230,
              y_max: float | None = None, unit: str = "") -> str:
    """One point (line) or column (bar) per run, in run order; y axis with ticks and unit."""
    left, right, top, bottom = 52, 12, 30, 44
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    values = [p.value for p in points if p.value is not None]
    hi = y_max if y_max is not None else (max(values) if values else 1.0)
    ticks = nice_ticks(hi)
    scale = (y0 - y1) / (ticks[-1] or 1)
    n = max(1, len(points))
    step = (x1 - x0) / n
    xs = [x0 + step * (i + 0.5) for i in range(len(points))]
    out = [_svg_open(chart_id, title, desc or title, width, height)]
    for t in ticks:
        y = y0 - t * scale
        out.append(f'<line class="grid" x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}"/>'
                   f'<text class="ax" x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{fmt_num(t)}{esc(unit)}</text>')
    out.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>'
               f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1 - 4}"/>'
               f'<text class="ax" transform="translate(11 {(y0 + y1) / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{esc(axis_label)}</text>'
               f'<text class="ax" x="{(x0 + x1) / 2:.1f}" y="{height - 4}" '
               f'text-anchor="middle">run (oldest → newest, by start time)</text>')
    # x labels: as many as fit without overlapping, always the last one
    label_w = max((len(p.label) for p in points), default=1) * TICK_CHAR_W + 12
    every = max(1, math.ceil(label_w / step))
    for i, (p, x) in enumerate(zip(points, xs)):
        if (len(points) - 1 - i) % every == 0:
            out.append(f'<line class="axis" x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}"/>'
                       f'<text class="ax" x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">'
                       f'{esc(p.label)}</text>')
    if kind == "line":
        path = " ".join(f"{x:.1f},{y0 - p.value * scale:.1f}" for p, x in zip(points, xs)
                        if p.value is not None)
        if path:
            out.append(f'<polyline class="line" points="{path}"/>')
    bar_w = max(2.0, min(36.0, step * 0.7))
    for p, x in zip(points, xs):
        cls = " hl" if p.highlight else ""
        out.append(f'<g class="pt{cls}"{attrs(p.data)}><title>{esc(p.tooltip)}</title>')
        if p.value is not None:
            y = y0 - p.value * scale
            if kind == "line":
                out.append(f'<circle class="dot{cls}" cx="{x:.1f}" cy="{y:.1f}" '
                           f'r="{5 if p.highlight else 3.5}"/>')
            else:
                out.append(f'<rect class="col{cls}" x="{x - bar_w / 2:.1f}" y="{y:.1f}" '
                           f'width="{bar_w:.1f}" height="{max(p.value * scale, 1.0):.1f}"/>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)
