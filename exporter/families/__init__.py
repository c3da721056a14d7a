"""Model families: turn a library's model registry into manifest entries.

A manifest can say ``{source: timm, include: ["resnet*"], limit: 20}`` instead of
listing hundreds of entries by hand.  :func:`expand` resolves such a spec into
:class:`FamilyModel` records, each pointing at a builder (``"module:attr"``) in
one of the family modules plus JSON-able kwargs.  Calling the builder with those
kwargs returns a *case dict*::

    {"model": nn.Module, "args": tuple, "kwargs": dict, "dynamic_shapes": spec}

This package imports neither torch nor the model libraries: listing is done
lazily inside :func:`expand`, so validating a manifest stays cheap and a missing
optional dependency only hurts the manifests that use it.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable, Mapping, Protocol, Sequence

from exporter.errors import ExportsweepError
from exporter.families.cache import cached_catalog

__all__ = [
    "COMMON_KEYS", "SOURCES", "FamilyError", "FamilyModel", "FamilyUnavailable",
    "LIBRARIES", "UnknownModel", "expand", "family_keys", "import_library",
]

SOURCES: tuple[str, ...] = ("torchvision", "timm", "transformers", "noop")

#: Keys every family spec may carry; they are interpreted by the manifest parser
#: (overrides, defaults) or by :func:`expand` (include, exclude, limit).
COMMON_KEYS: frozenset[str] = frozenset(
    {"source", "include", "exclude", "limit", "overrides", "defaults"})

#: The library each family needs, by source: the module imported, the pip distribution and
#: the extra of pyproject's optional-dependencies that installs it (the same name for all).
LIBRARIES: dict[str, str] = {
    "torchvision": "torchvision", "timm": "timm", "transformers": "transformers"}
# The distributions whose versions decide a family's catalog (exporter.families.cache).
CATALOG_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torchvision": ("torch", "torchvision"), "timm": ("torch", "timm"),
    "transformers": ("torch", "transformers")}


class FamilyError(ExportsweepError, ValueError):
    """A family spec the user must fix (unknown source, bad key, bad limit...).

    Also a ValueError, so callers that treat bad values generically catch it.
    """


class FamilyUnavailable(FamilyError):
    """The library behind a family is not installed in this environment."""

    def __init__(self, source: str, hint: str | None = None) -> None:
        self.source = source
        self.hint = hint or (
            f"pip install 'exportsweep[{source}]'"
            if source in LIBRARIES else "")
        package = LIBRARIES.get(source, source)
        super().__init__(f"family {source!r} needs the {package} package: {self.hint}")


class UnknownModel(FamilyError):
    """An include entry without wildcards names a model the family does not have."""

    def __init__(self, source: str, name: str, suggestions: Sequence[str] = (),
                 hint: str | None = None) -> None:
        self.source = source
        self.name = name
        self.suggestions = tuple(suggestions)
        self.hint = hint
        message = f"family {source!r} has no model {name!r}"
        if hint:
            message += f" ({hint})"
        if self.suggestions:
            message += "; did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(message)


@dataclass(frozen=True)
class FamilyModel:
    """One generated entry: manifest name, builder entrypoint and its kwargs."""

    name: str                     # "<source>/<model>", e.g. "timm/resnet18"
    entrypoint: str               # "exporter.families.timm:build"
    kwargs: dict[str, Any] = field(hash=False)   # JSON-able builder arguments
    tags: tuple[str, ...] = ()    # (family, task or modality, ...)
    device: str = "cpu"


class _Family(Protocol):
    """What each family module provides (see torchvision.py for the reference one)."""

    EXTRA_KEYS: frozenset[str]
    __file__: str

    def catalog(self, extra: Mapping[str, Any]) -> dict[str, FamilyModel]: ...

    def explain_missing(self, name: str, extra: Mapping[str, Any]) -> str | None: ...


def _family(source: str) -> _Family:
    if source not in SOURCES:
        raise FamilyError(
            f"unknown family source {source!r}; expected one of {', '.join(SOURCES)}")
    module: ModuleType = importlib.import_module(f"{__name__}.{source}")
    return module  # type: ignore[return-value]


def import_library(source: str, module: str) -> ModuleType:
    """Import the library behind a family, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FamilyUnavailable(source) from exc


def family_keys(source: str) -> frozenset[str]:
    """Keys a spec of this family may carry beyond :data:`COMMON_KEYS`."""
    return _family(source).EXTRA_KEYS


def _has_wildcard(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _matches(name: str, patterns: Iterable[str]) -> bool:
    # fnmatchcase: fnmatch.fnmatch would fold case on some platforms.
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def expand(source: str, include: Sequence[str] | None, exclude: Sequence[str] | None,
           limit: int | None, extra: Mapping[str, Any] | None = None) -> list[FamilyModel]:
    """Resolve a family spec into sorted :class:`FamilyModel` records.

    ``include``/``exclude`` are fnmatch globs over the bare model name (the
    transformers ``model_type``); an empty or missing ``include`` means all.
    Exclusion wins over inclusion.  An include entry without wildcards must name
    a model of the (task-filtered) registry, else :class:`UnknownModel`.
    ``limit`` keeps the first N after filtering, so a spec is reproducible.
    """
    family = _family(source)
    extra = dict(extra or {})
    unknown = sorted(set(extra) - family.EXTRA_KEYS - COMMON_KEYS)
    if unknown:
        allowed = sorted(family.EXTRA_KEYS) or ["(none)"]
        raise FamilyError(f"family {source!r} does not understand key(s) {', '.join(unknown)}; "
                          f"extra keys allowed: {', '.join(allowed)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise FamilyError(f"family {source!r}: limit must be a non-negative integer, got {limit!r}")
    include = list(include or ["*"])
    exclude = list(exclude or [])
    for pattern in (*include, *exclude):
        if not isinstance(pattern, str) or not pattern:
            raise FamilyError(f"family {source!r}: include/exclude entries must be "
                              f"non-empty strings, got {pattern!r}")

    own = {k: v for k, v in extra.items() if k not in COMMON_KEYS}
    if source in LIBRARIES:
        # Listing imports the library (and torch): kept on disk between commands.
        catalog = cached_catalog(source, family.__file__, own, CATALOG_DISTRIBUTIONS[source],
                                 lambda: family.catalog(own), FamilyModel)
    else:
        catalog = family.catalog(own)
    for pattern in include:
        if not _has_wildcard(pattern) and pattern not in catalog:
            suggestions = difflib.get_close_matches(pattern, list(catalog), n=5, cutoff=0.6)
            raise UnknownModel(source, pattern, suggestions,
                               family.explain_missing(pattern, extra))

    chosen = [model for bare, model in sorted(catalog.items())
              if _matches(bare, include) and not _matches(bare, exclude)]
    return chosen if limit is None else chosen[:limit]
