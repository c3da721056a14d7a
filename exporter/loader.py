"""Import entry points and build a model's *case*: the module, its example inputs and dims.

A model file is imported once per process however many entries use it, because
a second import would re-run custom-op registrations (which raise).  The module
cache is ``sys.modules`` itself, keyed by the file's real path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from exporter.spec import DimSpec, Entry, TensorSpec, target_path

_DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


class CaseError(Exception):
    """The entry point returned something that is not a model or a valid case."""


@dataclass
class Case:
    """Live objects for one entry: never pickled, never leave the worker."""

    model: torch.nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    dynamic_shapes: Any            # what torch.export.export takes, or None
    examples: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)


def import_target(target: str, base_dir: str) -> Any:
    """Import ``pkg.module`` or ``path/file.py`` (relative to ``base_dir``), once per process."""
    file = target_path(target, base_dir)
    if file is None:
        return importlib.import_module(target)
    path = os.path.realpath(file)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"exportsweep_models.{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)   # let a model file import its siblings
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def resolve(entrypoint: str, base_dir: str) -> Callable[..., Any]:
    target, attr = entrypoint.split(":")
    module = import_target(target, base_dir)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CaseError(f"{target} has no attribute {attr!r}") from None


def build_case(entry: Entry) -> Case:
    """Call the entry point and complete the case from the manifest's inputs and dims."""
    made = resolve(entry.entrypoint, entry.base_dir)(**entry.kwargs)
    if isinstance(made, torch.nn.Module):
        made = {"model": made}
    if not isinstance(made, dict) or not isinstance(made.get("model"), torch.nn.Module):
        raise CaseError(f"entrypoint {entry.entrypoint} must return an nn.Module or a dict "
                        f"{{model, args, kwargs?, dynamic_shapes?}}, got {type(made).__name__}")
    unknown = set(made) - {"model", "args", "kwargs", "dynamic_shapes", "examples"}
    if unknown:
        raise CaseError(f"case from {entry.entrypoint} has unknown keys {sorted(unknown)}")
    model = made["model"]
    if "args" in made or "kwargs" in made:
        args, kwargs = made.get("args", ()), dict(made.get("kwargs") or {})
        if isinstance(args, list):
            args = tuple(args)
    else:
        args, kwargs = example_inputs(entry)
    if not isinstance(args, tuple):
        raise CaseError(f"case args must be a tuple, got {type(args).__name__}")
    examples = _examples(made["examples"], "case") if "examples" in made else \
        example_sets(entry)
    if "dynamic_shapes" in made and entry.dynamic_shapes != "discover":
        dynamic = made["dynamic_shapes"]
    elif examples and entry.dynamic_shapes is None:
        # The dims that differ between the examples are the dynamic ones.
        dynamic = torch.export.AdditionalInputs()
        for more_args, more_kwargs in examples:
            dynamic.add(more_args, more_kwargs or None)
    else:
        dynamic = torch_dynamic_shapes(entry.dynamic_shapes, model, args, kwargs)
    return Case(model, args, kwargs, dynamic, examples)


def example_sets(entry: Entry) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The entry's ``examples`` as input sets (seeded like the main inputs)."""
    if entry.examples is None:
        return []
    if isinstance(entry.examples, str):
        return _examples(resolve(entry.examples, entry.base_dir)(), entry.examples)
    return [(tuple(make_tensor(spec) for spec in specs), {}) for specs in entry.examples]


def _examples(made: Any, where: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    if not isinstance(made, (list, tuple)) or not made:
        raise CaseError(f"examples from {where} must be a non-empty list of input sets, got "
                        f"{type(made).__name__}")
    out = []
    for one in made:
        if isinstance(one, dict):
            out.append((tuple(one.get("args", ())), dict(one.get("kwargs") or {})))
        elif isinstance(one, (tuple, list)):
            out.append((tuple(one), {}))
        else:
            raise CaseError(f"an input set from {where} must be a tuple of args or a dict "
                            f"{{args, kwargs}}, got {type(one).__name__}")
    return out


def example_inputs(entry: Entry) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if entry.inputs is None:
        raise CaseError("the entrypoint returned a bare module, so the entry needs 'inputs'")
    if isinstance(entry.inputs, str):
        made = resolve(entry.inputs, entry.base_dir)()
        if isinstance(made, dict):
            return tuple(made.get("args", ())), dict(made.get("kwargs") or {})
        return (tuple(made) if isinstance(made, (tuple, list)) else (made,)), {}
    return tuple(make_tensor(spec) for spec in entry.inputs), {}


def make_tensor(spec: TensorSpec) -> torch.Tensor:
    dtype = _DTYPES[spec.dtype]
    if dtype == torch.bool:
        return torch.rand(spec.shape) < 0.5
    if dtype.is_floating_point:
        return torch.randn(spec.shape, dtype=dtype)
    low = 0 if spec.low is None else spec.low
    high = (low + 10) if spec.high is None else spec.high
    return torch.randint(low, high, spec.shape, dtype=dtype)


def torch_dynamic_shapes(spec: Any, model: torch.nn.Module, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
    """Translate the manifest's dims into torch.export Dims (same name, same Dim object)."""
    if spec is None:
        return None
    dims: dict[str, Any] = {}
    if spec in ("auto", "discover"):
        per_input = [({i: torch.export.Dim.AUTO for i in range(a.dim())}
                      if isinstance(a, torch.Tensor) else None) for a in args]
    else:
        per_input = []
        for i, arg in enumerate(args):
            wanted: dict[int, DimSpec] = spec.get(i, {})
            per_input.append({j: _dim(d, f"d{i}_{j}", dims) for j, d in wanted.items()
                              if d.derived is None} or None)
        # Derived dims after every named one exists (they may refer to a later input's).
        for i, wanted in spec.items():
            for j, d in wanted.items():
                if d.derived is not None and i < len(per_input):
                    coeff, base, offset = d.derived
                    per_input[i] = {**(per_input[i] or {}), j: coeff * dims[base] + offset}
    if not kwargs:
        return tuple(per_input)
    # With keyword inputs torch.export wants a dict keyed by parameter name.
    names = list(inspect.signature(model.forward).parameters)
    by_name: dict[str, Any] = {names[i]: s for i, s in enumerate(per_input)}
    if spec in ("auto", "discover"):
        by_name.update({k: ({i: torch.export.Dim.AUTO for i in range(v.dim())}
                            if isinstance(v, torch.Tensor) else None) for k, v in kwargs.items()})
    return by_name


def _dim(spec: DimSpec, default_name: str, made: dict[str, Any]) -> Any:
    if spec.auto:
        return torch.export.Dim.AUTO
    name = spec.name or default_name
    if name not in made:
        bounds = {k: v for k, v in (("min", spec.min), ("max", spec.max)) if v is not None}
        made[name] = torch.export.Dim(name, **bounds)
    return made[name]


def dtype_of(name: str) -> torch.dtype:
    return _DTYPES[name]
