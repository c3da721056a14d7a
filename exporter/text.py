"""Text from models, manifests and result files, made safe to show.

Anything exportsweep prints or writes may hold what a model, a manifest or a damaged file put
there: terminal escape sequences, control characters, megabytes of one value.  These helpers
are the one place that bounds and escapes it.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable

# C0 and C1 control characters (tab and newline included: callers that keep lines split
# first), DEL, and the bidirectional overrides that can make a line read as another.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Characters XML 1.0 cannot hold at all, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages never quote unbounded input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: object, limit: int | None = None) -> str:
    """One line for a terminal: control characters shown as ``\\xNN`` escapes, optionally
    cut to ``limit`` characters."""
    out = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                       "" if text is None else str(text))
    return out if limit is None or len(out) <= limit else out[: limit - 1] + "…"


def has_control(text: str) -> bool:
    return bool(_CONTROL.search(text))


def xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 forbids shown as ``\\xNN`` escapes."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def unknown_keys(error: Callable[[str, str | None], None], mapping: dict[Any, Any],
                 allowed: tuple[str, ...], prefix: str | None) -> None:
    """One ``error(message, field)`` per key of ``mapping`` not in ``allowed``, with the
    closest allowed key as a hint."""
    for key in mapping:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            shown = key if isinstance(key, str) and len(key) <= 40 and not has_control(key) \
                else quote(key, 40)
            fld = f"{prefix}.{shown}" if prefix else shown
            error("unknown key" + (f" (did you mean {quote(hint[0])}?)" if hint else
                                   f" (allowed: {', '.join(allowed)})"), fld)
