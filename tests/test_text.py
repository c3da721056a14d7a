"""Text made safe to show: bounded quotes, escaped control characters, XML-valid."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from exporter.text import has_control, printable, quote, xml_safe
from orchestrator.execute.console import Progress, summary


def test_printable_escapes_what_a_terminal_would_obey():
    assert printable("ok\x1b[31mred\x07\n\u202eevil") == "ok\\x1b[31mred\\x07\\n\\u202eevil"
    assert printable("x" * 50, 10) == "x" * 9 + "…" and printable(None) == ""
    assert has_control("a\tb") and not has_control("héllo wörld ✓")


def test_quote_is_bounded():
    assert quote("a" * 1000, 20) == repr("a" * 1000)[:19] + "…"
    assert quote(["x"] * 10**5).endswith("…") and len(quote(["x"] * 10**5)) == 80


@given(st.text())
def test_any_text_becomes_valid_xml_and_one_terminal_line(text):
    element = ET.Element("t", attr=xml_safe(text))
    element.text = xml_safe(text)
    ET.fromstring(ET.tostring(element))                  # parses back
    shown = printable(text)
    assert "\n" not in shown and "\x1b" not in shown and not has_control(shown)


def test_console_lines_carry_no_escape_sequences():
    row = {"entry": "evil\x1b[2J\x1b[31m", "mode": "strict", "status": "FAIL", "family": "m\x07",
           "category": "EXPORT_ERROR", "failed_stage": "export", "total_s": 1.0,
           "message": "boom\x1b]0;title\x07\nsecond", "expected": None, "repro": "r\x1b[0m"}
    stream = io.StringIO()
    Progress(total=1, stream=stream).rows_done([row])
    summary([row], "out", 1.0, stream=stream)
    assert "\x1b" not in stream.getvalue() and "\x07" not in stream.getvalue()
    assert "evil\\x1b[2J" in stream.getvalue()
