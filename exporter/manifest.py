"""Load, expand and validate a manifest (YAML, ``version: 1``) into :class:`Entry` records.

The manifest is an external contract, so validation is exhaustive and happens
before anything runs: every mistake found becomes one line naming the file, the
entry and the field (collected into :class:`ManifestErrors`).  Entry points are
checked without executing user code (a file's top-level names are read with
``ast``), so validating never registers custom ops twice.

Scoping rules: ``defaults`` apply to the entries and families of the file that
declares them and of the files it includes (an included file's own defaults win
over its includer's); relative paths resolve against the declaring file.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib.machinery
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from exporter import environments, expectations, families
from exporter.environments import CURRENT, Environment
from exporter.errors import ManifestError, ManifestErrors
from exporter.spec import (DEVICES, DTYPES, INTEGER_DTYPES, MODES, DimSpec, Entry, Expectation,
                           TensorSpec, Tolerance, target_path)
from exporter.text import has_control, quote, unknown_keys
from exporter.yamlfile import YamlProblem, load_yaml

TOP_KEYS = ("version", "defaults", "include", "entries", "families", "expectations",
            "environments")
ENTRY_KEYS = ("name", "entrypoint", "kwargs", "inputs", "examples", "dynamic_shapes", "modes",
              "device", "tolerance", "timeout_s", "tags", "expect", "train", "seed", "localize",
              "environments")
DEFAULTABLE_KEYS = tuple(k for k in ENTRY_KEYS if k not in ("name", "entrypoint"))
FAMILY_COMMON_KEYS = ("source", "include", "exclude", "limit", "defaults", "overrides")
SUPPORTED_VERSIONS = (1,)
MAX_NAME = 200                        # characters in an entry name or a tag
MAX_TIMEOUT_S = 7 * 24 * 3600.0       # a week: beyond that a deadline is a typo
MAX_ELEMENTS = 1 << 31                # elements in one example tensor
MAX_DIM = (1 << 63) - 1               # a dimension size or bound: torch's int64
# [low, high) an integer dtype can hold.
DTYPE_RANGES = {"int64": (-(1 << 63), 1 << 63), "int32": (-(1 << 31), 1 << 31),
                "int16": (-(1 << 15), 1 << 15), "int8": (-128, 128), "uint8": (0, 256)}


@dataclass
class _Scope:
    """Where we are while reading: the file, the entry and the collected mistakes."""

    file: str
    errors: list[ManifestError]
    entry: str | None = None
    # entrypoint checked -> its problem (None: fine): a family of 100,000 entries shares one
    # entrypoint, whose module is read once, not once per entry
    checked: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def error(self, message: str, field: str | None = None) -> None:
        self.errors.append(ManifestError(self.file, message, entry=self.entry, field=field))

    def at(self, entry: str | None) -> "_Scope":
        return _Scope(self.file, self.errors, entry, self.checked)


@dataclass(frozen=True)
class Manifest:
    path: str
    entries: tuple[Entry, ...]
    files: tuple[str, ...] = field(default=())   # every file read, includes too
    expectations: str | None = None              # the expectations file it names
    # each entry's own expect (before the expectations file): what `expect update` compares to
    own_expect: dict[str, dict[str, Expectation]] = field(default_factory=dict)
    environments: dict[str, Environment] = field(default_factory=dict)   # declared, by name

    def select(self, patterns: list[str] | None) -> tuple[Entry, ...]:
        if not patterns:
            return self.entries
        return tuple(e for e in self.entries if any(fnmatch.fnmatchcase(e.name, p) for p in patterns))

    def get(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        hint = difflib.get_close_matches(name, [e.name for e in self.entries], n=3)
        raise ManifestErrors([ManifestError(self.path, "no such entry" + (
            f" (did you mean {', '.join(hint)}?)" if hint else ""), entry=name)])


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read, expand and validate a manifest; raise :class:`ManifestErrors` listing every mistake."""
    errors: list[ManifestError] = []
    path = os.fspath(path)
    entries: list[Entry] = []
    files: list[str] = []
    named: list[str] = []
    envs: dict[str, Environment] = {}
    _read_file(path, {}, [], entries, files, errors, named=named, envs=envs)
    _check_unique(entries, errors)
    _check_entry_environments(entries, envs, errors)
    own = {e.name: dict(e.expect) for e in entries}
    exp_path = named[0] if named else None
    if exp_path is not None and not errors:
        entries = _apply_expectations(exp_path, entries, errors)
        if os.path.exists(exp_path):
            files.append(exp_path)
    if errors:
        raise ManifestErrors(errors)
    return Manifest(path=path, entries=tuple(entries), files=tuple(files),
                    expectations=exp_path, own_expect=own, environments=envs)


def _check_entry_environments(entries: list[Entry], declared: dict[str, Environment],
                              errors: list[ManifestError]) -> None:
    """An entry restricted to some environments names declared ones (or ``current``)."""
    known = [CURRENT, *declared]
    for entry in entries:
        for name in entry.environments or ():
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                errors.append(ManifestError(entry.source, f"no environment {quote(name)} is "
                                            f"declared (declared: {', '.join(known)})" + (
                                                f"; did you mean {hint[0]}?" if hint else ""),
                                            entry=entry.name, field="environments"))


def _apply_expectations(path: str, entries: list[Entry],
                        errors: list[ManifestError]) -> list[Entry]:
    """Each entry with its modes' expectations from the file laid over its own."""
    found = expectations.read_file(path, errors)
    if found is None:
        return entries
    by_name = {e.name: e for e in entries}
    scope = _Scope(path, errors)
    out = {e.name: e for e in entries}
    for name, value in found.raw.items():
        entry = by_name.get(name)
        if entry is None:
            hint = difflib.get_close_matches(name, list(by_name), n=1)
            scope.at(name).error("no entry of the manifest has this name" + (
                f" (did you mean {hint[0]}?)" if hint else ""), "expectations")
            continue
        per_mode = expectations.check_expect(scope.at(name), value, entry.modes)
        out[name] = replace(entry, expect={**entry.expect, **per_mode})
    return [out[e.name] for e in entries]


# -- files -----------------------------------------------------------------------------------

def _read_file(path: str, inherited: dict[str, Any], chain: list[str], out: list[Entry],
               files: list[str], errors: list[ManifestError], root: str | None = None,
               named: list[str] | None = None,
               envs: dict[str, Environment] | None = None) -> None:
    scope = _Scope(path, errors)
    real = os.path.realpath(path)
    # Every file a sweep reads lies under the top manifest's folder: it is hashed into the
    # run's record and shipped to clusters, and a manifest cannot reach into /etc.
    root = os.path.dirname(real) if root is None else root
    if real in chain:
        cycle = " -> ".join(os.path.basename(p) for p in chain + [real])
        scope.error(f"include cycle: {cycle}", "include")
        return
    if not os.path.isfile(path):
        scope.error("manifest file not found")
        return
    try:
        doc = load_yaml(path)
    except YamlProblem as exc:
        scope.error(str(exc))
        return
    except OSError as exc:
        scope.error(f"cannot be read: {exc.strerror or type(exc).__name__}")
        return
    files.append(path)
    if not isinstance(doc, dict):
        scope.error(f"top level must be a mapping with 'version' and 'entries', got {_tname(doc)}")
        return
    _unknown_keys(scope, doc, TOP_KEYS, None)
    version = doc.get("version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:   # true == 1 in Python
        scope.error(f"unsupported manifest version {quote(version)} (supported: 1)", "version")
        return

    base = os.path.dirname(os.path.abspath(path))
    if "expectations" in doc:
        target = doc["expectations"]
        if chain:
            scope.error("only the top manifest names an expectations file", "expectations")
        elif not isinstance(target, str) or not target.endswith((".yaml", ".yml")):
            scope.error(f"must be a relative path to a .yaml file, got {quote(target)}",
                        "expectations")
        elif not os.path.realpath(os.path.join(base, target)).startswith(root + os.sep):
            scope.error(f"{quote(target)} lies outside {root}", "expectations")
        elif named is not None:
            named.append(os.path.join(base, target))
    if "environments" in doc:
        if chain:
            scope.error("only the top manifest declares environments", "environments")
        elif envs is not None:
            envs.update(environments.parse_declarations(
                doc["environments"], base, path, lambda m, f: scope.error(m, f)))
    defaults = dict(inherited)
    own_defaults = doc.get("defaults") or {}
    if not isinstance(own_defaults, dict):
        scope.error(f"must be a mapping of entry fields, got {_tname(own_defaults)}", "defaults")
    else:
        _unknown_keys(scope, own_defaults, DEFAULTABLE_KEYS, "defaults")
        defaults.update({k: v for k, v in own_defaults.items() if k in DEFAULTABLE_KEYS})

    includes = doc.get("include") or []
    if not _is_list_of(includes, str):
        scope.error("must be a list of relative file paths", "include")
        includes = []
    for inc in includes:
        target = os.path.join(base, inc)
        if not os.path.realpath(target).startswith(root + os.sep):
            scope.error(f"{quote(inc)} lies outside {root}: included files must stay inside the "
                        f"top manifest's folder", "include")
            continue
        _read_file(target, defaults, chain + [real], out, files, errors, root)

    raw_entries = doc.get("entries") or []
    if not isinstance(raw_entries, list):
        scope.error(f"must be a list of entries, got {_tname(raw_entries)}", "entries")
        raw_entries = []
    for i, raw in enumerate(raw_entries):
        entry_scope = scope.at(raw.get("name") if isinstance(raw, dict) and isinstance(
            raw.get("name"), str) else f"#{i + 1}")
        if not isinstance(raw, dict):
            entry_scope.error(f"an entry must be a mapping, got {_tname(raw)}")
            continue
        entry = _build_entry(entry_scope, {**defaults, **raw}, base, family="manual")
        if entry is not None:
            out.append(entry)

    raw_families = doc.get("families") or []
    if not isinstance(raw_families, list):
        scope.error(f"must be a list of family specs, got {_tname(raw_families)}", "families")
        raw_families = []
    for i, fam in enumerate(raw_families):
        out.extend(_expand_family(scope.at(f"families[{i}]"), fam, defaults, base))


def _expand_family(scope: _Scope, spec: Any, defaults: dict[str, Any], base: str) -> list[Entry]:
    if not isinstance(spec, dict):
        scope.error(f"a family must be a mapping with 'source', got {_tname(spec)}")
        return []
    source = spec.get("source")
    if source not in families.SOURCES:
        scope.error(f"unknown family source {quote(source)} (known: {', '.join(families.SOURCES)})",
                    "source")
        return []
    scope = scope.at(f"families[{source}]")
    allowed = FAMILY_COMMON_KEYS + tuple(sorted(families.family_keys(source)))
    _unknown_keys(scope, spec, allowed, None)
    include = spec.get("include", ["*"])
    exclude = spec.get("exclude", [])
    limit = spec.get("limit")
    ok = True
    for key, value in (("include", include), ("exclude", exclude)):
        if not _is_list_of(value, str):
            scope.error("must be a list of glob patterns", key)
            ok = False
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        scope.error(f"must be a positive integer, got {quote(limit)}", "limit")
        ok = False
    fam_defaults = spec.get("defaults") or {}
    overrides = spec.get("overrides") or {}
    if not isinstance(fam_defaults, dict):
        scope.error("must be a mapping of entry fields", "defaults")
        ok = False
    else:
        _unknown_keys(scope, fam_defaults, DEFAULTABLE_KEYS, "defaults")
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        scope.error("must map name globs to mappings of entry fields", "overrides")
        ok = False
    else:
        for pattern, fields in overrides.items():
            _unknown_keys(scope, fields, DEFAULTABLE_KEYS, f"overrides[{pattern}]")
    if not ok:
        return []
    extra = {k: v for k, v in spec.items() if k not in FAMILY_COMMON_KEYS}
    try:
        models = families.expand(source, include, exclude, limit, extra)
    except (families.FamilyUnavailable, families.UnknownModel, ValueError) as exc:
        scope.error(str(exc), "include" if isinstance(exc, families.UnknownModel) else None)
        return []
    used_patterns: set[str] = set()
    out: list[Entry] = []
    for model in models:
        raw: dict[str, Any] = {**defaults, **fam_defaults,
                               "tags": list(defaults.get("tags", [])) + list(model.tags)}
        # The family's suggested device applies only where neither the file's defaults
        # nor the family's own defaults name one.
        raw.setdefault("device", model.device)
        for pattern, fields in overrides.items():
            if fnmatch.fnmatchcase(model.name, pattern):
                used_patterns.add(pattern)
                raw.update(fields)
        raw.update(name=model.name, entrypoint=model.entrypoint, kwargs=model.kwargs)
        entry = _build_entry(scope.at(model.name), raw, base, family=source)
        if entry is not None:
            out.append(entry)
    for pattern in overrides:
        if pattern not in used_patterns:
            scope.error(f"override pattern {quote(pattern)} matches no model of this family",
                        "overrides")
    return out


# -- entries ---------------------------------------------------------------------------------

def _build_entry(scope: _Scope, raw: dict[str, Any], base: str, family: str) -> Entry | None:
    n_errors = len(scope.errors)
    _unknown_keys(scope, raw, ENTRY_KEYS, None)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        scope.error("every entry needs a non-empty string 'name'", "name")
        return None
    if has_control(name) or len(name) > MAX_NAME or name != name.strip():
        scope.error(f"a name is at most {MAX_NAME} printable characters without control "
                    f"characters or surrounding spaces", "name")
        return None
    entrypoint = _check_entrypoint(scope, raw.get("entrypoint"), base, "entrypoint", required=True)
    kwargs = raw.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        scope.error(f"must be a mapping of keyword arguments, got {_tname(kwargs)}", "kwargs")
    modes = _check_modes(scope, raw.get("modes", list(MODES)))
    device = raw.get("device", "cpu")
    if device not in DEVICES:
        scope.error(f"must be one of {', '.join(DEVICES)}, got {quote(device)}", "device")
    inputs = _check_inputs(scope, raw.get("inputs"), base)
    examples = _check_examples(scope, raw.get("examples"), base, inputs)
    dynamic = _check_dynamic(scope, raw.get("dynamic_shapes"), inputs)
    tolerance = _check_tolerance(scope, raw.get("tolerance"))
    timeout = raw.get("timeout_s", 300)
    if not _is_number(timeout) or not 0 < timeout <= MAX_TIMEOUT_S:
        scope.error(f"must be a positive number of seconds, at most {MAX_TIMEOUT_S:g}, got "
                    f"{quote(timeout)}", "timeout_s")
    tags = raw.get("tags", [])
    if not _is_list_of(tags, str) or any(has_control(t) or not t or len(t) > MAX_NAME
                                         for t in tags):
        scope.error(f"must be a list of strings (each non-empty, at most {MAX_NAME} printable "
                    f"characters)", "tags")
        tags = []
    expect = expectations.check_expect(scope, raw.get("expect"), modes)
    train = raw.get("train", False)
    if not isinstance(train, bool):
        scope.error(f"must be true or false, got {quote(train)}", "train")
    localize = raw.get("localize", False)
    if not isinstance(localize, bool):
        scope.error(f"must be true or false, got {quote(localize)}", "localize")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 1 << 63:
        scope.error(f"must be an integer in [0, 2**63), got {quote(seed)}", "seed")
    envs = raw.get("environments")
    if envs is not None and (not _is_list_of(envs, str) or not envs or any(
            environments.name_problem(e) for e in envs)):
        scope.error(f"must be a non-empty list of environment names, got {quote(envs)}",
                    "environments")
    if len(scope.errors) > n_errors:
        return None
    return Entry(name=name, entrypoint=entrypoint or "", source=scope.file, base_dir=base,
                 family=family, kwargs=dict(kwargs), inputs=inputs, examples=examples,
                 dynamic_shapes=dynamic,
                 modes=modes, device=device, tolerance=tolerance, timeout_s=float(timeout),
                 tags=tuple(dict.fromkeys(tags)), expect=expect, train=train, seed=seed,
                 localize=localize,
                 environments=tuple(dict.fromkeys(envs)) if envs is not None else None)


def _check_entrypoint(scope: _Scope, value: Any, base: str, field: str,
                      required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
        scope.error(f"must be 'pkg.module:attr' or 'path/file.py:attr', got {quote(value)}", field)
        return None
    key = (value, base)
    if key not in scope.checked:
        scope.checked[key] = _entrypoint_problem(value, base)
    problem = scope.checked[key]
    if problem is not None:
        scope.error(problem, field)
        return None
    return value


def _entrypoint_problem(value: str, base: str) -> str | None:
    target, attr = value.split(":")
    path = target_path(target, base)
    if path is not None:
        if not os.path.isfile(path):
            return f"file {quote(target)} not found (resolved to {path})"
        names = _top_level_names(path)
    else:
        try:
            spec = _find_module(target)
        except (ImportError, ValueError) as exc:
            spec = None
            reason = str(exc)
        else:
            reason = "not found"
        if spec is None:
            return f"module {quote(target)} cannot be imported: {reason}"
        origin = spec.origin if spec.origin and spec.origin.endswith(".py") else None
        names = _top_level_names(origin) if origin else None
    if names is not None and attr not in names:
        hint = difflib.get_close_matches(attr, sorted(names), n=3)
        return f"{quote(target)} defines no {quote(attr)}" + (
            f" (did you mean {', '.join(hint)}?)" if hint else "")
    return None


def _find_module(name: str) -> Any:
    """The module's spec, found without importing anything: ``importlib.util.find_spec``
    would import (run) the parent packages of a dotted name, and validating a manifest
    never runs its code."""
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ValueError(f"{quote(name)} is not a module name")
    spec = importlib.util.find_spec(parts[0])       # a top-level name: found, not imported
    for i in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]),
                                                        list(spec.submodule_search_locations))
    return spec


def _top_level_names(path: str) -> set[str] | None:
    """Names bound at a module's top level, read with ast (None: cannot tell, e.g. star imports)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            return None     # conditional definitions: trust the import at run time
    return names


def _check_modes(scope: _Scope, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not _is_list_of(value, str) or not value:
        scope.error(f"must be a non-empty list of {', '.join(MODES)}", "modes")
        return MODES
    bad = [m for m in value if m not in MODES]
    if bad:
        scope.error(f"unknown mode {quote(bad[0])} (known: {', '.join(MODES)})", "modes")
        return MODES
    return tuple(dict.fromkeys(value))


def _check_examples(scope: _Scope, value: Any, base: str, inputs: Any) -> Any:
    """More input sets for one export (torch.export.AdditionalInputs): a list of input lists
    shaped like ``inputs`` (same count, same dtypes), or a 'module:attr' callable returning
    a list of input sets."""
    if value is None:
        return None
    if isinstance(value, str):
        return _check_entrypoint(scope, value, base, "examples", required=True)
    if not isinstance(value, list) or not value or not all(isinstance(v, list) for v in value):
        scope.error("must be a non-empty list of input lists (each like 'inputs') or a "
                    "'module:attr' callable", "examples")
        return None
    out = []
    for k, item in enumerate(value):
        specs = _check_inputs(scope, item, base, f"examples[{k}]")
        if not isinstance(specs, tuple):
            continue
        if isinstance(inputs, tuple):
            if len(specs) != len(inputs):
                scope.error(f"has {len(specs)} inputs; 'inputs' has {len(inputs)}",
                            f"examples[{k}]")
                continue
            for i, (a, b) in enumerate(zip(specs, inputs)):
                if a.dtype != b.dtype or len(a.shape) != len(b.shape):
                    scope.error(f"is {a.dtype} of rank {len(a.shape)}; inputs[{i}] is "
                                f"{b.dtype} of rank {len(b.shape)}", f"examples[{k}][{i}]")
        out.append(specs)
    return tuple(out)


def _check_inputs(scope: _Scope, value: Any, base: str,
                  field: str = "inputs") -> tuple[TensorSpec, ...] | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _check_entrypoint(scope, value, base, field, required=True)
    if not isinstance(value, list):
        scope.error("must be a list of {shape, dtype} or a 'module:attr' callable", field)
        return None
    specs: list[TensorSpec] = []
    for i, item in enumerate(value):
        fld = f"{field}[{i}]"
        if not isinstance(item, dict):
            scope.error(f"must be a mapping like {{shape: [2, 3], dtype: float32}}, got "
                        f"{_tname(item)}", fld)
            continue
        _unknown_keys(scope, item, ("shape", "dtype", "low", "high"), fld)
        shape = item.get("shape")
        if not _is_list_of(shape, int) or any(d < 0 for d in shape) or len(shape) > 64:
            scope.error(f"shape must be a list of at most 64 non-negative integers, got "
                        f"{quote(shape)}", f"{fld}.shape")
            continue
        if math.prod(shape) > MAX_ELEMENTS:
            scope.error(f"shape {quote(shape)} has {math.prod(shape):,} elements; the limit is "
                        f"{MAX_ELEMENTS:,}", f"{fld}.shape")
            continue
        dtype = item.get("dtype", "float32")
        if dtype not in DTYPES:
            hint = difflib.get_close_matches(str(dtype), DTYPES, n=1)
            scope.error(f"unknown dtype {quote(dtype)}" + (f" (did you mean {hint[0]}?)" if hint else
                                                      f" (known: {', '.join(DTYPES)})"),
                        f"{fld}.dtype")
            continue
        low, high = item.get("low"), item.get("high")
        if (low is not None or high is not None) and dtype not in INTEGER_DTYPES:
            scope.error(f"low/high apply to integer dtypes only, not {dtype}", fld)
            continue
        if any(v is not None and (not isinstance(v, int) or isinstance(v, bool))
               for v in (low, high)):
            scope.error(f"low and high must be integers, got low={quote(low)} "
                        f"high={quote(high)}", fld)
            continue
        if dtype in DTYPE_RANGES:
            lo_ok, hi_ok = DTYPE_RANGES[dtype]
            eff_low = 0 if low is None else low
            eff_high = eff_low + 10 if high is None else high
            if not lo_ok <= eff_low < eff_high <= hi_ok:
                scope.error(f"needs {lo_ok} <= low < high <= {hi_ok} for {dtype} (high is "
                            f"exclusive, low + 10 when not given), got low={eff_low} "
                            f"high={eff_high}", fld)
                continue
        specs.append(TensorSpec(tuple(shape), dtype, low, high))
    return tuple(specs)


def _check_dynamic(scope: _Scope, value: Any, inputs: Any) -> Any:
    if value is None:
        return None
    if value in ("auto", "discover"):
        return value
    if not isinstance(value, dict):
        scope.error("must be 'auto', 'discover' or a mapping input index -> dim -> "
                    "{name, min, max}", "dynamic_shapes")
        return None
    shapes = [s.shape for s in inputs] if isinstance(inputs, tuple) else None
    out: dict[int, dict[int, DimSpec]] = {}
    for idx, dims in value.items():
        fld = f"dynamic_shapes.{quote(idx, 40)}"
        i = _as_index(idx)
        if i is None:
            scope.error("input keys must be positional indices (0, 1, ...)", fld)
            continue
        if shapes is not None and i >= len(shapes):
            scope.error(f"input {i} does not exist (the entry has {len(shapes)} inputs)", fld)
            continue
        if not isinstance(dims, dict):
            scope.error("must map dimension index -> {name, min, max} or 'auto'", fld)
            continue
        out[i] = {}
        for d, spec in dims.items():
            dfld = f"{fld}.{quote(d, 40)}"
            j = _as_index(d)
            rank = len(shapes[i]) if shapes is not None else None
            if j is None or (rank is not None and j >= rank):
                scope.error(f"dimension {quote(d)} is not a valid index" +
                            (f" for an input of rank {rank}" if rank is not None else ""), dfld)
                continue
            dim = _check_dim(scope, spec, dfld, shapes[i][j] if shapes is not None else None)
            if dim is not None:
                out[i][j] = dim
    _check_dim_names(scope, out)
    return out


_DERIVED = re.compile(r"^\s*(?:(\d+)\s*\*\s*)?([A-Za-z_]\w*)\s*(?:([+-])\s*(\d+))?\s*$")


def _check_dim(scope: _Scope, spec: Any, fld: str, example: int | None) -> DimSpec | None:
    if spec in ("auto", "dynamic"):
        return DimSpec(auto=True)
    if isinstance(spec, str):
        m = _DERIVED.match(spec)
        if not m or (m.group(1) is None and m.group(3) is None):
            scope.error(f"must be 'auto', {{name, min, max}} or a dim derived from a named one "
                        f"such as '2*batch' or 'seq+1', got {quote(spec)}", fld)
            return None
        coeff = int(m.group(1) or 1)
        offset = int(m.group(4) or 0) * (-1 if m.group(3) == "-" else 1)
        if coeff < 1:
            scope.error(f"a derived dim's factor must be at least 1, got {quote(spec)}", fld)
            return None
        return DimSpec(derived=(coeff, m.group(2), offset))
    if not isinstance(spec, dict):
        scope.error("must be 'auto', {name, min, max} or a derived dim such as '2*batch'", fld)
        return None
    _unknown_keys(scope, spec, ("name", "min", "max"), fld)
    name, lo, hi = spec.get("name"), spec.get("min"), spec.get("max")
    if name is not None and (not isinstance(name, str) or not name.isidentifier()):
        scope.error(f"name must be a Python identifier, got {quote(name)}", f"{fld}.name")
        return None
    for key, v in (("min", lo), ("max", hi)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)
                              or not 0 <= v <= MAX_DIM):
            scope.error(f"must be an integer in [0, 2**63), got {quote(v)}", f"{fld}.{key}")
            return None
    if lo is not None and hi is not None and lo > hi:
        scope.error(f"impossible range: min {lo} > max {hi}", fld)
        return None
    if example is not None and ((lo is not None and example < lo) or
                                (hi is not None and example > hi)):
        scope.error(f"example size {example} lies outside [{lo}, {hi}]", fld)
        return None
    return DimSpec(name=name, min=lo, max=hi)


def _check_dim_names(scope: _Scope, dims: dict[int, dict[int, DimSpec]]) -> None:
    seen: dict[str, DimSpec] = {}
    named = {d.name for per_input in dims.values() for d in per_input.values() if d.name}
    for i, per_input in dims.items():
        for j, dim in per_input.items():
            if dim.derived is not None and dim.derived[1] not in named:
                scope.error(f"derived from {quote(dim.derived[1])}, which no dim of this entry "
                            f"is named", f"dynamic_shapes.{i}.{j}")
            if dim.name is None:
                continue
            other = seen.setdefault(dim.name, dim)
            if (other.min, other.max) != (dim.min, dim.max):
                scope.error(f"dimension name {quote(dim.name)} is declared with two different ranges",
                            f"dynamic_shapes.{i}.{j}")


def _check_tolerance(scope: _Scope, value: Any) -> Tolerance:
    if value is None:
        return Tolerance()
    if not isinstance(value, dict):
        scope.error("must be a mapping {atol, rtol}", "tolerance")
        return Tolerance()
    _unknown_keys(scope, value, ("atol", "rtol"), "tolerance")
    out = {}
    for key in ("atol", "rtol"):
        v = value.get(key, getattr(Tolerance(), key))
        if not _is_number(v) or v < 0:
            scope.error(f"must be a non-negative number, got {quote(v)}", f"tolerance.{key}")
        else:
            out[key] = float(v)
    return Tolerance(**out)


def _check_unique(entries: list[Entry], errors: list[ManifestError]) -> None:
    first: dict[str, Entry] = {}
    for entry in entries:
        if entry.name in first:
            prev = first[entry.name]
            where = "" if prev.source == entry.source else f" (first defined in {prev.source})"
            errors.append(ManifestError(entry.source, f"duplicate entry name{where}",
                                        entry=entry.name, field="name"))
        else:
            first[entry.name] = entry


# -- small helpers ---------------------------------------------------------------------------

def _unknown_keys(scope: _Scope, mapping: dict[str, Any], allowed: tuple[str, ...],
                  prefix: str | None) -> None:
    unknown_keys(scope.error, mapping, allowed, prefix)


def _is_list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, kind) and not (kind is int and isinstance(v, bool)) for v in value)


def _is_number(value: Any) -> bool:
    """A finite int or float: YAML's true, .nan and .inf are not numbers of seconds."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _as_index(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 0 else None
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None


def _tname(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def entry_table(entries: tuple[Entry, ...]) -> list[dict[str, str]]:
    """The expanded entries as printable rows (for ``exportsweep validate``)."""
    rows = []
    for e in entries:
        inputs = (e.inputs if isinstance(e.inputs, str) else
                  " ".join("x".join(map(str, s.shape)) + f":{s.dtype}" for s in e.inputs or ()))
        rows.append({
            "name": e.name, "family": e.family, "modes": ",".join(e.modes), "device": e.device,
            "inputs": inputs or "(from entrypoint)",
            "dynamic": (e.dynamic_shapes if isinstance(e.dynamic_shapes, str) else
                        ",".join(f"{i}.{j}" for i, d in (e.dynamic_shapes or {}).items()
                                 for j in d) or "-"),
            "expect": "; ".join(f"{m}: {x.describe()}" for m, x in e.expect.items()) or "-",
            "tags": ",".join(e.tags) or "-",
        })
    return rows

