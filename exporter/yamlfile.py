"""Reading a YAML file someone else wrote: strictly, in bounded time and memory.

PyYAML's ``safe_load`` constructs no objects, but it still lets through what a manifest must
not hold: a key given twice (the first value silently lost), bytes that are not UTF-8, nesting
deep enough to exhaust the parser's recursion, and aliases that multiply a small file into a
huge document ("billion laughs").  :func:`load_yaml` refuses each with one line that says
where, as a :class:`YamlProblem`.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from exporter.text import printable, quote

MAX_BYTES = 4 << 20          # a manifest of 4 MiB already lists tens of thousands of models
MAX_DEPTH = 64               # mappings and lists inside each other
MAX_NODES = 1_000_000        # values in the document once aliases are expanded


class YamlProblem(ValueError):
    """The file cannot be read as a strict YAML document; the message says where and why."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and bounds nesting depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep at line "
                                  f"{mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # type: ignore[override]
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue          # SafeLoader reports unhashable keys itself
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise YamlProblem(f"key {quote(key, 60)} appears twice in one mapping (lines "
                                      f"{seen[key]} and {line}): the first value would be lost")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str, max_bytes: int = MAX_BYTES) -> Any:
    """The document in ``path``; raises YamlProblem (or OSError for a file that cannot be
    opened) with a message fit for one line."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise YamlProblem(f"file is {size:,} bytes; the limit is {max_bytes:,}")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlProblem(f"not UTF-8: byte {exc.start} (line {line}) is "
                          f"0x{data[exc.start]:02x}") from None
    return loads_yaml(text)


def loads_yaml(text: str) -> Any:
    loader = None
    try:
        loader = _StrictLoader(text)        # the reader checks characters already here
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblem(f"invalid YAML{where}: {printable(problem, 200)}") from None
    except RecursionError:
        raise YamlProblem("nested too deeply to read") from None
    finally:
        if loader is not None:
            loader.dispose()
    nodes = _expanded_size(doc, {}, MAX_NODES)
    if nodes > MAX_NODES:
        raise YamlProblem(f"expands to more than {MAX_NODES:,} values (aliases repeating "
                          f"aliases?)")
    return doc


def _expanded_size(value: Any, memo: dict[int, int], limit: int) -> int:
    """How many values the document holds with every alias written out, counted once per
    distinct object (aliases share objects) and capped just past ``limit``."""
    if not isinstance(value, (dict, list)):
        return 1
    known = memo.get(id(value))
    if known is not None:
        return known
    memo[id(value)] = limit + 1          # a cycle (a recursive alias) counts as too big
    children = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    total = 1
    for key, child in children:
        total += _expanded_size(child, memo, limit) + (0 if key is None else 1)
        if total > limit:
            break
    memo[id(value)] = min(total, limit + 1)
    return memo[id(value)]
