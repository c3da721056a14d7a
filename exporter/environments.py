"""The environments a run compares: named Python installations (another torch, another
transformers) that each get their own worker pools.

An environment is either a local interpreter of another virtualenv (``python: PATH``, run by
Ray as the workers' ``py_executable``) or any Ray runtime environment (``runtime_env: {...}``:
``uv``/``pip`` package lists, a container image) for clusters.  ``current`` is always one of a
run's environments: the driver's own interpreter (on a cluster, the job's runtime
environment), unless a declaration of that name replaces it.

This module only parses and validates declarations (manifest and ``--env``); probing what an
environment really holds needs Ray and lives in ``orchestrator.execute.environments``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from exporter.text import quote
from exporter.yamlfile import YamlProblem, load_yaml

CURRENT = "current"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
# Ray's RuntimeEnv.known_fields without the private ones: a key outside this list is a typo
# here, not something Ray would take.
RUNTIME_ENV_KEYS = ("pip", "uv", "conda", "container", "image_uri", "py_executable", "env_vars",
                    "working_dir", "py_modules", "excludes", "config", "nsight", "java_jars")
ENV_KEYS = ("python", "runtime_env")
RUNTIME_ENV_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Environment:
    """One declared environment; exactly one of ``python`` and ``runtime_env`` is set, except
    for the implicit ``current`` (neither: the driver's own)."""

    name: str
    python: str | None = None                             # absolute path of an interpreter
    runtime_env: Mapping[str, Any] | None = None          # a Ray runtime environment
    source: str = ""                                      # manifest file or "--env"

    @property
    def is_current(self) -> bool:
        return self.python is None and self.runtime_env is None

    def describe(self) -> str:
        if self.python:
            return f"{self.name} (python {self.python})"
        if self.runtime_env:
            return f"{self.name} (runtime_env {json.dumps(dict(self.runtime_env), sort_keys=True)})"
        return f"{self.name} (the driver's own)"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.python:
            out["python"] = self.python
        if self.runtime_env:
            out["runtime_env"] = dict(self.runtime_env)
        return out


def parse_declarations(value: Any, base_dir: str, source: str,
                       error: Callable[[str, str], None]) -> dict[str, Environment]:
    """A manifest's ``environments:`` mapping; ``error(message, field)`` for each mistake."""
    if not isinstance(value, dict) or not value:
        error("must be a mapping of environment names to {python: PATH} or "
              "{runtime_env: {...}}", "environments")
        return {}
    out: dict[str, Environment] = {}
    for name, spec in value.items():
        where = f"environments.{name}"
        problem = name_problem(name)
        if problem:
            error(problem, "environments")
            continue
        env = _parse_one(name, spec, base_dir, source, lambda m, w=where: error(m, w))
        if env is not None:
            out[name] = env
    return out


def name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not NAME.match(name):
        return (f"an environment name is 1-63 letters, digits, '_', '.' or '-' starting with a "
                f"letter or digit, got {quote(name)}")
    return None


def _parse_one(name: str, spec: Any, base_dir: str, source: str,
               error: Callable[[str], None]) -> Environment | None:
    if not isinstance(spec, dict):
        error(f"must be {{python: PATH}} or {{runtime_env: {{...}}}}, got {quote(spec)}")
        return None
    unknown = [k for k in spec if k not in ENV_KEYS]
    if unknown:
        error(f"unknown key {quote(unknown[0])} (an environment has python or runtime_env)")
        return None
    if len(spec) != 1:
        error("give exactly one of python and runtime_env")
        return None
    if "python" in spec:
        python = spec["python"]
        if not isinstance(python, str) or not python.strip() or "\0" in python:
            error(f"python must be the path of an interpreter, got {quote(python)}")
            return None
        path = os.path.expanduser(python)
        return Environment(name, python=os.path.normpath(os.path.join(base_dir, path)),
                           source=source)
    runtime_env = check_runtime_env(spec["runtime_env"], error)
    return None if runtime_env is None else Environment(name, runtime_env=runtime_env,
                                                        source=source)


def check_runtime_env(value: Any, error: Callable[[str], None]) -> dict[str, Any] | None:
    """A Ray runtime environment as data: known keys, and the shapes Ray would reject."""
    if not isinstance(value, dict) or not value:
        error(f"runtime_env must be a non-empty mapping (Ray's runtime environment), got "
              f"{quote(value)}")
        return None
    for key, item in value.items():
        if key not in RUNTIME_ENV_KEYS:
            error(f"runtime_env: unknown key {quote(key)} (Ray takes "
                  f"{', '.join(RUNTIME_ENV_KEYS)})")
            return None
        if key in ("pip", "uv", "py_modules", "excludes", "java_jars") and not (
                isinstance(item, list) and all(isinstance(x, str) for x in item)
                or key in ("pip", "uv") and isinstance(item, dict)):
            error(f"runtime_env.{key} must be a list of strings, got {quote(item)}")
            return None
        if key == "env_vars" and not (isinstance(item, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in item.items())):
            error(f"runtime_env.env_vars must map names to strings, got {quote(item)}")
            return None
        if key in ("py_executable", "image_uri", "working_dir") and not (
                isinstance(item, str) and item.strip()):
            error(f"runtime_env.{key} must be a non-empty string, got {quote(item)}")
            return None
    return dict(value)


def parse_option(value: str) -> Environment:
    """``--env NAME=PATH_TO_PYTHON`` or ``--env NAME=runtime_env.yaml`` (a file holding a
    runtime environment, or ``{runtime_env: {...}}``); ValueError with one line otherwise."""
    name, sep, target = value.partition("=")
    if not sep or not target.strip():
        raise ValueError(f"expected NAME=PATH_TO_PYTHON or NAME=RUNTIME_ENV.yaml, got "
                         f"{quote(value)}")
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    path = os.path.abspath(os.path.expanduser(target))
    if not target.endswith(RUNTIME_ENV_SUFFIXES):
        return Environment(name, python=path, source="--env")
    try:
        doc = load_yaml(path)
    except YamlProblem as exc:
        raise ValueError(f"{name}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{name}: {path} cannot be read: "
                         f"{exc.strerror or type(exc).__name__}") from None
    if isinstance(doc, dict) and set(doc) == {"runtime_env"}:
        doc = doc["runtime_env"]
    problems: list[str] = []
    runtime_env = check_runtime_env(doc, problems.append)
    if runtime_env is None:
        raise ValueError(f"{name}: {path}: {problems[0]}")
    return Environment(name, runtime_env=runtime_env, source="--env")


def resolve(declared: Mapping[str, Environment], overrides: list[Environment]
            ) -> dict[str, Environment]:
    """The run's environments: ``current``, the manifest's, then ``--env`` (a name given again
    replaces the earlier declaration, ``current`` included). Order: as declared."""
    out: dict[str, Environment] = {CURRENT: Environment(CURRENT, source="driver")}
    out.update(declared)
    for env in overrides:
        out[env.name] = env
    return out
