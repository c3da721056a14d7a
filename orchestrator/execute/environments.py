"""Probe each environment of a run before any work: what torch, Ray and exportsweep it holds.

A worker pool in an environment that cannot work (no interpreter there, no exportsweep, another
Ray or Python than the driver's, which Ray refuses) would fail minutes later, one actor start
at a time; a probe fails in seconds with one line per environment (exit 2).  A local
interpreter is probed in a subprocess (no Ray needed, so a Ray mismatch is named as such); a
Ray runtime environment can only be probed by Ray itself, with a task that runs in it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from exporter import __version__ as EXPORTSWEEP_VERSION
from exporter import families
from exporter.environments import Environment
from exporter.errors import UsageError
from exporter.spec import Entry
from orchestrator.execute.scheduling import WorkItem

PROBE_TIMEOUT_S = 180.0          # importing torch on a cold disk takes a while
# Runs the probe script inside a runtime environment: its stdout, or one line saying why not.
RemoteProbe = Callable[[Environment, str], str]
PACKAGES = ("torch", "ray", "exportsweep", "transformers", "timm", "torchvision", "numpy")
NOT_INSTALLED = "not installed"  # the probe's reason for a library that is simply absent

# Runs in the environment's interpreter: versions as JSON on stdout, never an exception.
# LIBRARIES: the model libraries the run's families need, each imported to tell whether it
# works there (an installed torchvision built for another torch does not import).
PROBE = r"""
import json, platform, sys
from importlib import metadata
LIBRARIES, NOT_INSTALLED = %r, %r
out = {"python": platform.python_version(), "executable": sys.executable, "packages": {},
       "problems": [], "unavailable": {}}
for name in %r:
    try:
        out["packages"][name] = metadata.version(name)
    except Exception:
        pass
for module in ("torch", "ray", "exporter", "orchestrator"):
    try:
        __import__(module)
    except Exception as exc:
        out["problems"].append(f"import {module}: {type(exc).__name__}: {exc}"[:300])
try:
    import torch
    out["torch"] = str(torch.__version__)
    out["cuda"] = torch.version.cuda
except Exception:
    pass
try:
    import exporter
    out["exportsweep_version"] = exporter.__version__
except Exception:
    pass
for name in LIBRARIES:
    try:
        __import__(name)
    except Exception as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == name
        lines = str(exc).strip().splitlines()
        out["unavailable"][name] = NOT_INSTALLED if missing else \
            f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
print("EXPORTSWEEP-PROBE " + json.dumps(out))
"""


def probe_script(libraries: Iterable[str] = ()) -> str:
    """The probe, importing ``libraries`` as well (sorted, so the script is stable)."""
    return PROBE % (sorted(set(libraries)), NOT_INSTALLED, PACKAGES)


@dataclass
class EnvironmentFacts:
    """What an environment holds, as recorded in ``_run.json`` and on its rows."""

    name: str
    python: str = ""                        # Python version
    executable: str = ""
    torch: str = ""
    cuda: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    declaration: dict[str, Any] = field(default_factory=dict)
    # model libraries the run needs that do not import there: library -> why
    unavailable: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def probe_all(envs: dict[str, Environment], ray_version: str,
              remote: RemoteProbe | None = None, libraries: Iterable[str] = ()
              ) -> dict[str, EnvironmentFacts]:
    """Every environment's facts; UsageError (exit 2) naming each one that cannot work.
    ``remote`` runs the probe inside a Ray runtime environment (Ray must be up);
    ``libraries``: model libraries to try importing there (a family's entries are skipped
    where its library does not import: :func:`split_unavailable`)."""
    script = probe_script(libraries)
    with ThreadPoolExecutor(max_workers=max(1, len(envs))) as pool:
        results = dict(zip(envs, pool.map(lambda e: _probe(e, ray_version, script, remote),
                                          envs.values())))
    problems = [p for _, p in results.values() if p]
    if problems:
        raise UsageError("\n".join(problems))
    return {name: facts for name, (facts, _) in results.items() if facts is not None}


def _probe(env: Environment, ray_version: str, script: str, remote: RemoteProbe | None
           ) -> tuple[EnvironmentFacts | None, str | None]:
    if env.runtime_env is not None:
        return _probe_runtime_env(env, ray_version, script, remote)
    python = env.python or sys.executable
    where = f"environment {env.name!r} ({env.source})"
    if not os.path.exists(python):
        return None, f"{where}: {python} does not exist"
    if os.path.isdir(python) or not os.access(python, os.X_OK):
        return None, f"{where}: {python} is not an executable interpreter"
    try:
        # From a neutral folder: `python -c` puts its working folder first on sys.path, and a
        # checkout there would pass for an installed exportsweep.
        proc = subprocess.run([python, "-c", script], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL,
                              cwd=os.path.abspath(os.sep),
                              env={**os.environ, "PYTHONNOUSERSITE": "1"})
    except subprocess.TimeoutExpired:
        return None, f"{where}: {python} did not answer within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return None, f"{where}: {python} cannot run: {exc.strerror or type(exc).__name__}"
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("EXPORTSWEEP-PROBE ")),
                None)
    if line is None:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return None, f"{where}: {python} is not a Python that can run the probe ({last})"
    return _judge(env, json.loads(line.split(" ", 1)[1]), ray_version, where)


def _judge(env: Environment, found: dict[str, Any], ray_version: str, where: str
           ) -> tuple[EnvironmentFacts | None, str | None]:
    """The facts, or the one reason this environment cannot hold exportsweep's workers."""
    packages = found.get("packages", {})
    driver_python = ".".join(platform.python_version_tuple()[:2])
    env_python = ".".join(str(found.get("python", "")).split(".")[:2])
    if "exportsweep_version" not in found:
        return None, (f"{where}: exportsweep is not installed there (pip install it into that "
                      f"environment: {_first(found, 'exporter')})")
    if "ray" not in packages:
        return None, f"{where}: Ray is not installed there (the driver runs Ray {ray_version})"
    if packages["ray"] != ray_version:
        return None, (f"{where}: Ray {packages['ray']} there, Ray {ray_version} in the driver: "
                      f"Ray's workers must run the driver's Ray version")
    if env_python != driver_python:
        return None, (f"{where}: Python {found.get('python')} there, {platform.python_version()} "
                      f"in the driver: Ray's workers must run the driver's Python version")
    if found["exportsweep_version"] != EXPORTSWEEP_VERSION:
        return None, (f"{where}: exportsweep {found['exportsweep_version']} there, "
                      f"{EXPORTSWEEP_VERSION} in the driver: install this one there")
    if "torch" not in found:
        return None, f"{where}: torch cannot be imported there ({_first(found, 'torch')})"
    return EnvironmentFacts(env.name, python=str(found.get("python")),
                            executable=str(found.get("executable", "")), torch=found["torch"],
                            cuda=found.get("cuda"), packages=dict(packages),
                            declaration=env.as_json(),
                            unavailable=dict(found.get("unavailable") or {})), None


def _first(found: dict[str, Any], module: str) -> str:
    for problem in found.get("problems", []):
        if problem.startswith(f"import {module}:"):
            return problem.split(": ", 1)[1]
    return "not importable"


def _probe_runtime_env(env: Environment, ray_version: str, script: str,
                       remote: RemoteProbe | None) -> tuple[EnvironmentFacts | None, str | None]:
    """The probe's output from inside the runtime environment (``remote``: a Ray task, see
    ``execute.ray.cluster``), judged like a local one."""
    where = f"environment {env.name!r} ({env.source})"
    if remote is None:
        return None, f"{where}: a runtime_env is probed by Ray, which is not running"
    stdout = remote(env, script)
    if not stdout.startswith("EXPORTSWEEP-PROBE ") and "\nEXPORTSWEEP-PROBE " not in stdout:
        return None, f"{where}: {stdout.strip() or 'the probe printed nothing'}"
    line = next(ln for ln in stdout.splitlines() if ln.startswith("EXPORTSWEEP-PROBE "))
    return _judge(env, json.loads(line.split(" ", 1)[1]), ray_version, where)


def libraries_of(entries: Iterable[Entry]) -> set[str]:
    """The model libraries these entries' families need."""
    return {families.LIBRARIES[e.family] for e in entries if e.family in families.LIBRARIES}


def split_unavailable(items: list[WorkItem], facts: dict[str, dict[str, Any]]
                      ) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
    """The work an environment can run, and the rest with why not: an entry of a family whose
    library does not import there (``facts``: each environment's as recorded in _run.json).
    Its programs from other environments are still loaded there by the cross-version stage:
    a saved program needs torch, not the library that built the model."""
    kept, skipped = [], []
    for item in items:
        library = families.LIBRARIES.get(item.entry.family)
        # Facts read back from a resumed run's _run.json may be damaged: only a mapping of
        # reasons counts, anything else says nothing is unavailable.
        env_facts = facts.get(item.env)
        gaps = env_facts.get("unavailable") if isinstance(env_facts, dict) else None
        why = gaps.get(library) if library and isinstance(gaps, dict) else None
        if not isinstance(why, str):
            kept.append(item)
        else:
            how = "is not installed there" if why == NOT_INSTALLED else \
                f"does not import there ({why})"
            skipped.append((item, f"the {item.entry.family} family cannot run in environment "
                                  f"{item.env!r}: {library} {how}"))
    return kept, skipped
