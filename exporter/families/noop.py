"""noop family: entries that do no torch work, to measure the orchestrator alone.

``{source: noop, count: 100000, sleep_s: 0}`` lists ``noop/000000`` ... ``noop/099999``.  The
pipeline recognises the family and, instead of building and exporting a model, waits
``sleep_s`` and returns a passing row per mode with every stage skipped: dispatch, result
transport, the sink, resume and the views then run at full scale with nothing else to pay.
"""

from __future__ import annotations

from typing import Any, Mapping

from exporter.families import FamilyError, FamilyModel

SOURCE = "noop"
ENTRYPOINT = "exporter.families.noop:build"
EXTRA_KEYS: frozenset[str] = frozenset({"count", "sleep_s"})
MAX_COUNT = 1_000_000
SKIP_REASON = "noop entry: no torch work (orchestrator benchmark)"


def _count(extra: Mapping[str, Any]) -> int:
    count = extra.get("count", 100)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise FamilyError(f"family 'noop': count must be an integer from 1 to {MAX_COUNT}, "
                          f"got {count!r}")
    return count


def _sleep(extra: Mapping[str, Any]) -> float:
    sleep_s = extra.get("sleep_s", 0.0)
    if isinstance(sleep_s, bool) or not isinstance(sleep_s, (int, float)) or \
            not 0 <= sleep_s <= 3600:
        raise FamilyError(f"family 'noop': sleep_s must be a number of seconds from 0 to 3600, "
                          f"got {sleep_s!r}")
    return float(sleep_s)


def catalog(extra: Mapping[str, Any]) -> dict[str, FamilyModel]:
    count, sleep_s = _count(extra), _sleep(extra)
    width = max(6, len(str(count - 1)))
    return {f"{i:0{width}d}": FamilyModel(f"{SOURCE}/{i:0{width}d}", ENTRYPOINT,
                                          {"sleep_s": sleep_s}, (SOURCE,), "cpu")
            for i in range(count)}


def explain_missing(name: str, extra: Mapping[str, Any]) -> str | None:
    return f"noop entries are numbered 0 to count - 1 ({_count(extra)} here)"


def build(sleep_s: float = 0.0) -> dict[str, Any]:
    """Never called by the pipeline (it skips noop entries); here so the entrypoint resolves."""
    raise FamilyError("noop entries build no model: the pipeline runs them without torch")
