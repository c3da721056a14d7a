"""Family catalogs kept on disk between commands.

Listing a family's models means importing its library (torchvision, timm and transformers all
import torch): seconds on every ``exportsweep run`` and ``validate``, and half a gigabyte in a
Ray driver that never runs a model. A catalog depends only on the libraries' versions, on
exportsweep's family code and on the spec's extra keys (torchvision's ``tasks``), so it is
stored under a hash of exactly those and read back while they hold.

A cache can only ever cost a recomputation, never a wrong or failed listing: a file that is
missing, unreadable, torn or of another shape is ignored (and rewritten), and a cache folder
that cannot be written is left alone. ``EXPORTSWEEP_CACHE_DIR`` moves the cache (empty: off);
by default it lives under ``$XDG_CACHE_HOME`` (``~/.cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from typing import Any, Callable, Mapping, Sequence

from exporter import __version__

CACHE_ENV = "EXPORTSWEEP_CACHE_DIR"
FORMAT = 1                              # bump when the stored shape changes
MODEL_FIELDS = ("name", "entrypoint", "kwargs", "tags", "device")


def cache_dir() -> str | None:
    """Where catalogs are kept, or None when caching is off."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit is not None:
        return explicit or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "exportsweep", "catalogs")


def catalog_key(source: str, code_file: str, extra: Mapping[str, Any],
                distributions: Sequence[str]) -> str | None:
    """The key a catalog is stored under; None when it cannot be told (a library that is not
    installed: listing it will say so, uncached)."""
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = metadata.version(dist)
        except (metadata.PackageNotFoundError, ValueError):
            return None
    try:
        with open(code_file, "rb") as f:
            code = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None
    blob = json.dumps({"format": FORMAT, "source": source, "extra": extra, "versions": versions,
                       "code": code, "exportsweep": __version__}, sort_keys=True, default=repr)
    return f"{source}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"


def cached_catalog(source: str, code_file: str, extra: Mapping[str, Any],
                   distributions: Sequence[str], build: Callable[[], dict[str, Any]],
                   model: Callable[..., Any]) -> dict[str, Any]:
    """The catalog ``build()`` returns, from the cache when a valid copy is there; ``model``
    makes one catalog record (``FamilyModel``) from its stored fields."""
    folder = cache_dir()
    key = catalog_key(source, code_file, extra, distributions) if folder else None
    if folder is None or key is None:
        return build()
    path = os.path.join(folder, f"{key}.json")
    found = _read(path, key, model)
    if found is not None:
        return found
    catalog = build()
    _write(folder, path, key, catalog)
    return catalog


def _digest(models: Any) -> str:
    return hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()


def _read(path: str, key: str, model: Callable[..., Any]) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        # The file must be the one written for this key, whole: its own digest says so (a
        # truncated, edited or copied-over file is recomputed, never trusted).
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key:
            return None
        models = doc["models"]
        if not isinstance(models, dict) or doc.get("sha256") != _digest(models):
            return None
        out = {}
        for bare, fields in models.items():
            if not isinstance(fields, dict) or set(fields) != set(MODEL_FIELDS):
                return None
            if not all(isinstance(fields[k], str) for k in ("name", "entrypoint", "device")) \
                    or not isinstance(fields["kwargs"], dict) \
                    or not isinstance(fields["tags"], list) \
                    or not all(isinstance(t, str) for t in fields["tags"]):
                return None
            out[bare] = model(name=fields["name"], entrypoint=fields["entrypoint"],
                              kwargs=fields["kwargs"], tags=tuple(fields["tags"]),
                              device=fields["device"])
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def _write(folder: str, path: str, key: str, catalog: Mapping[str, Any]) -> None:
    models = {bare: {"name": m.name, "entrypoint": m.entrypoint, "kwargs": m.kwargs,
                     "tags": list(m.tags), "device": m.device} for bare, m in catalog.items()}
    try:
        text = json.dumps({"format": FORMAT, "key": key, "sha256": _digest(models),
                           "models": models}, sort_keys=True)
    except (TypeError, ValueError):
        return                          # kwargs that JSON cannot hold: not cached
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".catalog-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)           # whole or not at all, even with two writers
        tmp = None
    except OSError:
        pass                            # an unwritable cache only costs the next listing
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
