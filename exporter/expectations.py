"""Expected outcomes: the ``expect`` field of an entry, and expectation files.

A manifest may name an expectations file (``expectations: expected.yaml``, relative to it)::

    version: 1
    expectations:
      transformers/gpt2: {status: FAIL, category: DECOMPOSITION_ERROR, stage: decompose}
      transformers/vilt:                       # per mode, when the modes differ
        strict: {status: FAIL, category: DATA_DEPENDENT_GUARD, stage: export}

An entry's mode listed there is expected to do that, whatever the entry's own ``expect``
says; a mode not listed keeps the entry's own expectation (PASS when it has none). XFAIL,
XPASS and ``diff``'s gates judge by the result. ``exportsweep expect update`` rewrites the
file from a run, in place: hand-written comments and the order of the entries stay.
"""

from __future__ import annotations

import difflib
import io
import os
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from exporter.errors import ManifestError
from exporter.spec import EXPECT_STATUSES, MODES, Expectation
from exporter.status import FAIL, PASS, STATUS_BY_NAME
from exporter.taxonomy import CATEGORY_NAMES, STAGES
from exporter.text import quote, unknown_keys
from exporter.yamlfile import YamlProblem, load_yaml

FILE_VERSION = 1
HEADER = ("# Expected outcomes per entry and mode (exportsweep). `exportsweep expect update "
          "MANIFEST --from DIR`\n# rewrites this file from a run; comments and order stay.\n")


class Scope(Protocol):
    def error(self, message: str, field: str | None = None) -> None: ...

    def at(self, entry: str | None) -> "Scope": ...


def check_expect(scope: Scope, value: Any, modes: tuple[str, ...]) -> dict[str, Expectation]:
    """``{status, category?, stage?}`` for every mode, or a mapping mode -> that."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        scope.error("must be {status, category?, stage?} or a mapping mode -> that", "expect")
        return {}
    if not set(value) & set(MODES):       # one expectation for every mode of the entry
        one = check_expectation(scope, value, "expect")
        return {m: one for m in modes} if one is not None else {}
    unknown_keys(scope.error, value, MODES, "expect")
    out: dict[str, Expectation] = {}
    for mode in MODES:
        if mode in value:
            one = check_expectation(scope, value[mode], f"expect.{mode}")
            if one is not None:
                out[mode] = one
    return out


def check_expectation(scope: Scope, spec: Any, fld: str) -> Expectation | None:
    if not isinstance(spec, dict):
        scope.error("must be a mapping {status, category?, stage?}", fld)
        return None
    unknown_keys(scope.error, spec, ("status", "category", "stage"), fld)
    status = spec.get("status", FAIL)
    category, stage = spec.get("category"), spec.get("stage")
    if status not in EXPECT_STATUSES:
        scope.error(f"status must be one of {', '.join(EXPECT_STATUSES)}, got {quote(status)}",
                    f"{fld}.status")
    elif category is not None and category not in CATEGORY_NAMES:
        hint = difflib.get_close_matches(str(category), CATEGORY_NAMES, n=1)
        scope.error(f"unknown category {quote(category)}" + (
            f" (did you mean {hint[0]}?)" if hint else ""), f"{fld}.category")
    elif stage is not None and stage not in STAGES:
        scope.error(f"unknown stage {quote(stage)} (stages: {', '.join(STAGES)})", f"{fld}.stage")
    elif status == PASS and (category or stage):
        scope.error("an expected PASS takes no category or stage", fld)
    else:
        return Expectation(status, category, stage)
    return None


# -- the file ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpectationsFile:
    path: str
    raw: dict[str, Any]           # entry name -> its (unchecked) expect value


def read_file(path: str, errors: list[ManifestError]) -> ExpectationsFile | None:
    """The file's entries, unchecked (their modes come from the manifest); mistakes in its
    shape go to ``errors`` naming the file. A missing file is an empty one: the first
    ``expect update`` creates it."""
    if not os.path.exists(path):
        return ExpectationsFile(path, {})
    try:
        doc = load_yaml(path)
    except YamlProblem as exc:
        errors.append(ManifestError(path, str(exc)))
        return None
    except OSError as exc:
        errors.append(ManifestError(path, f"cannot be read: {exc.strerror or type(exc).__name__}"))
        return None
    if doc is None:
        return ExpectationsFile(path, {})
    if not isinstance(doc, dict):
        errors.append(ManifestError(path, "top level must be a mapping with 'version' and "
                                          "'expectations'"))
        return None
    for key in doc:
        if key not in ("version", "expectations"):
            errors.append(ManifestError(path, f"unknown key {quote(key)}", field=str(key)))
    if type(doc.get("version")) is not int or doc.get("version") != FILE_VERSION:
        errors.append(ManifestError(path, f"unsupported expectations version "
                                          f"{quote(doc.get('version'))} (supported: 1)",
                                    field="version"))
        return None
    raw = doc.get("expectations") or {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        errors.append(ManifestError(path, "must map entry names to expectations",
                                    field="expectations"))
        return None
    return ExpectationsFile(path, dict(raw))


# -- writing it from what a run observed --------------------------------------------------------

def observed(status: str, category: str | None, stage: str | None) -> Expectation | None:
    """What a final row says the entry does in that mode (the status table's kind: it
    exported, or the model failed); None for outcomes that are not the model's (ERROR,
    SKIP): they say nothing about what to expect."""
    kind = STATUS_BY_NAME[status].kind if status in STATUS_BY_NAME else None
    if kind == "pass":
        return Expectation(PASS)
    if kind == "fail":
        return Expectation(FAIL, category, stage)
    return None


def as_yaml(per_mode: dict[str, Expectation], modes: Iterable[str]) -> Any:
    """The file's value for one entry: one mapping when every mode of the entry expects the
    same, else one per mode (in MODES order)."""
    def one(x: Expectation) -> dict[str, str]:
        return {k: v for k, v in (("status", x.status), ("category", x.category),
                                  ("stage", x.stage)) if v is not None}
    values = list(per_mode.values())
    if set(per_mode) == set(modes) and all(v == values[0] for v in values):
        return one(values[0])
    return {m: one(per_mode[m]) for m in MODES if m in per_mode}


def rewrite(text: str, changes: dict[str, Any]) -> str:
    """The file's text with each named entry set to its new value (None removes it), through
    a round-trip YAML editor: comments, order and layout of the rest stay as they were; new
    entries are appended in flow style, one line each."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()                       # round-trip mode
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(text) if text.strip() else None
    if doc is None:
        doc = CommentedMap()
        doc["version"] = FILE_VERSION
        doc.yaml_set_start_comment(HEADER.rstrip("\n").replace("# ", "", 1).replace("\n# ", "\n"))
    if doc.get("expectations") is None:
        doc["expectations"] = CommentedMap()
    table = doc["expectations"]
    for name, value in changes.items():
        if value is None:
            if name in table:
                del table[name]
            continue
        table[name] = _flow(value)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _flow(value: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap
    if not isinstance(value, dict):
        return value
    m = CommentedMap((k, _flow(v)) for k, v in value.items())
    m.fa.set_flow_style()
    return m
