"""Where an export fails: the smallest submodules that fail to export on their own.

A failing model is bisected over its module tree, top down: each child of a failing module
is exported alone (same mode) with the inputs it really received in an eager run of the
model (captured with forward pre-hooks, first call, one level at a time); a failing child is
searched further, a passing one is a *largest passing* submodule. A failing module whose
called children all pass is a *smallest failing* one: the failure sits in its own forward
(or between its children). The search stops at the deadline and says so.

Submodules are exported with static shapes: a failure that only a dynamic dim causes may not
reproduce in a part, and then the whole model is named (its children all pass).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from exporter.taxonomy import classify_exception

MAX_EXPORTS = 200       # submodule exports per (entry, mode), whatever the deadline


@dataclass
class Part:
    path: str            # "" is the whole model
    cls: str
    category: str | None = None     # None: it exports


@dataclass
class Localized:
    failing: list[Part] = field(default_factory=list)     # smallest failing submodules
    passing: list[Part] = field(default_factory=list)     # largest passing ones
    exports: int = 0
    complete: bool = True          # False: the deadline or MAX_EXPORTS cut the search short
    note: str | None = None


def localize(model: torch.nn.Module, inputs: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]],
             strict: bool, category: str | None, deadline: float, seed: int = 0) -> Localized:
    """Bisect ``model``, whose export failed in this mode with ``category``, down to its
    smallest failing submodules. ``inputs`` makes fresh example inputs; ``deadline`` is a
    time.monotonic() after which the search stops with what it knows."""
    out = Localized()
    frontier: list[tuple[str, str | None]] = [("", category)]
    while frontier:
        calls = _captured_calls(model, inputs, _children_of(model, [p for p, _ in frontier]),
                                seed)
        later: list[tuple[str, str | None]] = []
        for i, (path, why) in enumerate(frontier):
            failing: list[tuple[str, str | None]] = []
            for child in (c for c in _children_of(model, [path]) if c in calls):
                if time.monotonic() > deadline or out.exports >= MAX_EXPORTS:
                    out.complete = False
                    out.note = ("the deadline" if time.monotonic() > deadline
                                else f"{MAX_EXPORTS} submodule exports") + " cut the search short"
                    for rest, rest_why in [(path, why), *frontier[i + 1:], *later]:
                        out.failing.append(_part(model, rest, rest_why))
                    return out
                found = _export_category(model.get_submodule(child), *calls[child], strict)
                out.exports += 1
                if found is None:
                    out.passing.append(_part(model, child, None))
                else:
                    failing.append((child, found))
            if failing:
                later.extend(failing)
            else:                        # every child it called exports: its own code fails
                out.failing.append(_part(model, path, why))
        frontier = later
    # The parts failing for the whole model's reason first; others (often a part whose
    # inputs or outputs are types export cannot take alone, e.g. a detection model's
    # ImageList) after them.
    out.failing.sort(key=lambda p: p.category != category)
    return out


def export_part(model: torch.nn.Module,
                inputs: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]], path: str,
                strict: bool, seed: int = 0) -> tuple[str | None, BaseException | None]:
    """Export one submodule alone with the inputs it receives in the model (``repro
    --submodule``): (category, exception), both None when it exports."""
    module = model.get_submodule(path)        # AttributeError: no such submodule
    calls = _captured_calls(model, inputs, [path], seed) if path else {path: inputs()}
    if path not in calls:
        raise LookupError(f"{path} is never called when the model runs on its example inputs")
    try:
        torch.export.export(copy.deepcopy(module), *copy.deepcopy(calls[path]), strict=strict)
    except Exception as exc:  # noqa: BLE001 - the failure is what the user asked to see
        return classify_exception(exc, "export").category, exc
    return None, None


def _part(model: torch.nn.Module, path: str, category: str | None) -> Part:
    return Part(path, type(model.get_submodule(path)).__name__, category)


def _children_of(model: torch.nn.Module, paths: list[str]) -> list[str]:
    out = []
    for path in paths:
        module = model.get_submodule(path)
        out += [f"{path}.{name}" if path else name for name, _ in module.named_children()]
    return out


def _captured_calls(model: torch.nn.Module,
                    inputs: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]],
                    wanted: list[str], seed: int) -> dict[str, tuple[tuple[Any, ...],
                                                                    dict[str, Any]]]:
    """The (args, kwargs) each wanted submodule first received in an eager run of a copy."""
    twin = copy.deepcopy(model)
    calls: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    handles = []
    for path in wanted:
        def hook(_module: Any, args: Any, kwargs: Any, path: str = path) -> None:
            if path not in calls:
                calls[path] = copy.deepcopy((tuple(args), dict(kwargs)))
        handles.append(twin.get_submodule(path).register_forward_pre_hook(hook, with_kwargs=True))
    args, kwargs = inputs()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            twin(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the calls made before it raised are still inputs
        pass
    finally:
        for h in handles:
            h.remove()
    return calls


def _export_category(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                     strict: bool) -> str | None:
    """None when ``module`` exports alone, else the category of its failure."""
    try:
        torch.export.export(copy.deepcopy(module), copy.deepcopy(args), copy.deepcopy(kwargs),
                            strict=strict)
    except Exception as exc:  # noqa: BLE001 - every failure is a finding
        return classify_exception(exc, "export").category
    return None
