"""Which input dims an exported program really keeps dynamic, and why the others are not.

``torch.export`` with ``Dim.AUTO`` never fails for a dim the model specializes: it quietly
exports a program fixed to the example size. A user who asked for dynamism needs to read back
what they got. This module does that from two sources torch provides:

- the program itself: each user input placeholder's fake tensor has a symbolic size (``s17``,
  ``2*s17``) or a plain int per dim, and ``ep.range_constraints`` gives each symbol's range;
- torch's shape-environment log (``torch.fx.experimental.symbolic_shapes`` at INFO), captured
  during export: which symbol was created for which input dim (``create_symbol``), which guard
  was added where (``[guard added]``, with the model's source line in strict mode and torch's
  innermost frame otherwise), and which symbol was replaced by a constant
  (``set_replacement ... range_refined_to_singleton``).

Dims are named after the model's inputs (``input_ids.shape[1]``), guards are rewritten with
those names, and everything is rendered as plain strings for the row.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from exporter.numerics import pytree, spec_dims
from exporter.signature import model_frame

SHAPES_LOGGER = "torch.fx.experimental.symbolic_shapes"
_SOURCE = re.compile(r"^L\['(?P<base>[^']+)'\](?P<rest>.*?)\.size\(\)\[(?P<dim>\d+)\]$")
_FLAT = re.compile(r"^\[(\d+)\]")
_SYMBOL = re.compile(r"\b[su]\d+\b")


# -- what the case asked for ------------------------------------------------------------------

@dataclass(frozen=True)
class InputDim:
    leaf: int             # index among the case's tensor leaves (= the program's user inputs)
    dim: int
    label: str            # "input_ids.shape[1]"
    example: int          # the example input's size
    asked: str            # "auto" (torch decides) or the Dim's name


def _leaf_labels(model: torch.nn.Module, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> list[tuple[str, list[str], torch.Tensor]]:
    """(label, source keys, tensor) per tensor leaf of (args, kwargs), in flattening order.
    The source keys are how torch's log names the leaf: ``L['x']`` (non-strict, by parameter
    name) or ``L['flat_args'][k]`` (strict, by flat position)."""
    try:
        names = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        names = []
    flatten = getattr(pytree, "tree_flatten_with_path", None)
    if flatten is None:  # pragma: no cover - every supported torch has it
        return []
    out = []
    for flat, (path, leaf) in enumerate(flatten((args, kwargs))[0]):
        if not isinstance(leaf, torch.Tensor):
            continue
        top, inner = path[1], path[2:]
        if path[0].idx == 0:
            name = names[top.idx] if top.idx < len(names) else f"args[{top.idx}]"
        else:
            name = str(top.key)
        rest = "".join(str(k) for k in inner)
        out.append((f"{name}{rest}", [f"{name}{rest}", f"kwargs['{name}']{rest}",
                                      f"flat_args[{flat}]"], leaf))
    return out


def requested(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
              dynamic_shapes: Any) -> list[InputDim]:
    """Every input dim the case's ``dynamic_shapes`` asks to be dynamic (Dims, AUTO and
    DYNAMIC hints; STATIC and None are not asks)."""
    dynamic_shapes = plain_spec(dynamic_shapes, model, args, kwargs)
    if dynamic_shapes is None:
        return []
    asks = {key: {d: a for d, dim in dims.items() if (a := _asked(dim)) is not None}
            for key, dims in spec_dims(model, args, kwargs, dynamic_shapes).items()}
    out = []
    for leaf, (label, _keys, tensor) in enumerate(_leaf_labels(model, args, kwargs)):
        for d, asked in sorted(asks.get(id(tensor), {}).items()):
            if d < tensor.dim():
                out.append(InputDim(leaf, d, f"{label}.shape[{d}]", int(tensor.shape[d]), asked))
    return out


def plain_spec(spec: Any, model: torch.nn.Module, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    """A spec as torch.export's pytree of dims: AdditionalInputs and ShapesCollection say
    theirs through ``dynamic_shapes(model, args, kwargs)``."""
    if spec is not None and callable(getattr(spec, "dynamic_shapes", None)):
        try:
            return spec.dynamic_shapes(model, args, kwargs)
        except Exception:  # noqa: BLE001 - export itself will say what is wrong with it
            return None
    return spec


def _asked(dim: Any) -> str | None:
    """How a spec asks for a dim: "auto" / "dynamic" (hints), the Dim's name, or None (not
    dynamic: None, an int, STATIC)."""
    kind = getattr(getattr(dim, "type", None), "name", None)
    if dim is None or isinstance(dim, int) or kind == "STATIC":
        return None
    return kind.lower() if kind in ("AUTO", "DYNAMIC") else str(getattr(dim, "__name__", dim))


# -- what torch said while exporting --------------------------------------------------------

@dataclass
class ShapeLog:
    """The shape environment's decisions during one export, in order."""

    symbols: dict[str, str] = field(default_factory=dict)        # symbol -> source
    guards: list[tuple[int, str, str]] = field(default_factory=list)   # (seq, expr, where)
    replacements: list[tuple[int, str, str, str]] = field(default_factory=list)
    # (seq, symbol, replaced by, torch's reason)

    def add(self, record: logging.LogRecord) -> None:
        msg, args = str(record.msg), tuple(record.args or ())
        seq = len(self.guards) + len(self.replacements)
        try:
            if msg.startswith("create_symbol") and len(args) >= 3:
                self.symbols.setdefault(str(args[0]), str(args[2]))
            elif "[guard added]" in msg and len(args) >= 3:
                self.guards.append((seq, str(args[1]),
                                    model_frame(_user_stack()) or _where(str(args[2]))))
            elif msg.startswith("set_replacement") and len(args) >= 3:
                self.replacements.append((seq, str(args[0]), str(args[1]), str(args[2])))
        except Exception:  # noqa: BLE001 - a log line we cannot read is one fact fewer
            pass


def _user_stack() -> list[tuple[str, int]]:
    """The model's stack at this point of the export, outermost first: Dynamo's traced user
    stack in strict mode, else this thread's Python stack (non-strict runs the model's code)."""
    try:
        from torch._guards import TracingContext
        traced = TracingContext.extract_stack()
    except Exception:  # noqa: BLE001 - a private API: without it, the Python stack
        traced = None
    if traced:
        return [(f.filename, f.lineno or 0) for f in traced]
    return [(f.f_code.co_filename, lineno) for f, lineno in traceback.walk_stack(None)][::-1]


def _where(text: str) -> str:
    """The model's line when torch's log gives it (strict: ``code  # file:line in fn``),
    else torch's own frame ``file:line in fn``."""
    text = text.strip()
    if "  # " in text:
        code, _, where = text.rpartition("  # ")
        where = where.split(" (", 1)[0]
        return f"{where}: {code.strip()}"
    return text.strip("()")


class _Capture(logging.Handler):
    def __init__(self, log: ShapeLog, shown: int, parent: logging.Logger | None) -> None:
        super().__init__(logging.INFO)
        self.log, self.shown, self.parent = log, shown, parent

    def emit(self, record: logging.LogRecord) -> None:
        self.log.add(record)
        if self.parent is not None and record.levelno >= self.shown:
            self.parent.handle(record)      # what propagation would have shown


@contextlib.contextmanager
def captured() -> Iterator[ShapeLog]:
    """Record the shape environment's log during the block. torch's own handlers keep
    showing only what they showed before (the logger is lowered to INFO for us alone)."""
    log = ShapeLog()
    logger = logging.getLogger(SHAPES_LOGGER)
    shown = logger.getEffectiveLevel()

    def as_before(record: logging.LogRecord) -> bool:
        return record.levelno >= shown

    level, propagate, others = logger.level, logger.propagate, list(logger.handlers)
    handler = _Capture(log, shown, logger.parent if propagate else None)
    for other in others:
        other.addFilter(as_before)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield log
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        for other in others:
            other.removeFilter(as_before)


# -- what the program kept ------------------------------------------------------------------

@dataclass
class Dynamism:
    requested: list[str] = field(default_factory=list)    # "x.shape[0] (auto)"
    achieved: list[str] = field(default_factory=list)     # "x.shape[0] in [2, inf]"
    specialized: list[str] = field(default_factory=list)  # "x.shape[1] = 6: <why>"
    relations: list[str] = field(default_factory=list)    # "y.shape[0] == x.shape[0]"


def describe(ep: Any, model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
             asked: list[InputDim], log: ShapeLog | None) -> Dynamism:
    out = Dynamism(requested=[f"{a.label} ({a.asked})" for a in asked])
    metas = _input_metas(ep)
    leaves = _leaf_labels(model, args, kwargs)
    if len(metas) != len(leaves):
        out.specialized = [f"{a.label}: cannot match the program's inputs to the example's"
                           for a in asked]
        return out
    names = symbol_names(ep, model, args, kwargs)
    exprs: dict[tuple[int, int], Any] = {}
    for i, meta in enumerate(metas):
        for d, size in enumerate(meta.shape):
            if isinstance(size, torch.SymInt) and size.node.expr.free_symbols:
                exprs[(i, d)] = size.node.expr
    created = _created_by_dim(log, leaves) if log else {}
    for a in asked:
        expr = exprs.get((a.leaf, a.dim))
        if expr is None:
            size = int(metas[a.leaf].shape[a.dim])
            out.specialized.append(f"{a.label} = {size}: "
                                   f"{_why_static(a, created, log, names, leaves)}")
            continue
        if expr.is_Symbol:
            out.achieved.append(f"{a.label} in {_range(ep, expr)}")
            if names[str(expr)] != a.label:
                out.relations.append(f"{a.label} == {names[str(expr)]}")
        else:                                  # derived: its range follows from the relation
            out.achieved.append(f"{a.label} = {_named(str(expr), names)}")
            out.relations.append(f"{a.label} == {_named(str(expr), names)}")
    return out


def shapes_label(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``x=[4, 16], mask=[4, 16]``: an input set's tensor shapes, by input name."""
    return ", ".join(f"{label}={list(t.shape)}" for label, _keys, t in
                     _leaf_labels(model, args, kwargs))


def symbol_names(ep: Any, model: torch.nn.Module, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> dict[str, str]:
    """The program's size symbols named after the first input dim that is exactly that
    symbol: {"s17": "x.shape[0]"}."""
    metas, leaves = _input_metas(ep), _leaf_labels(model, args, kwargs)
    if len(metas) != len(leaves):
        return {}
    names: dict[str, str] = {}
    for meta, (label, _keys, _t) in zip(metas, leaves):
        for d, size in enumerate(meta.shape):
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                names.setdefault(str(size.node.expr), f"{label}.shape[{d}]")
    return names


def _input_metas(ep: Any) -> list[Any]:
    user = set(ep.graph_signature.user_inputs)
    vals = (n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user)
    return [v for v in vals if isinstance(v, torch.Tensor)]


def _range(ep: Any, symbol: Any) -> str:
    vr = ep.range_constraints.get(symbol)
    if vr is None:
        return "[?, ?]"
    return f"[{_bound(vr.lower, '-inf')}, {_bound(vr.upper, 'inf')}]"


def _bound(value: Any, infinite: str) -> str:
    try:
        return str(int(value))
    except (TypeError, ValueError, OverflowError, AttributeError):  # int_oo, sympy oo
        return infinite


def _named(text: str, names: dict[str, str]) -> str:
    return _SYMBOL.sub(lambda m: names.get(m.group(0), m.group(0)), text)


def _created_by_dim(log: ShapeLog, leaves: list[tuple[str, list[str], Any]]) -> dict[
        tuple[int, int], str]:
    """(leaf, dim) -> the symbol torch created for it, read from create_symbol's source."""
    keys = {key: i for i, (_label, options, _t) in enumerate(leaves) for key in options}
    out = {}
    for symbol, source in log.symbols.items():
        m = _SOURCE.match(source)
        if not m:
            continue
        base, rest = m.group("base"), m.group("rest")
        key = f"flat_args{rest}" if base == "flat_args" else f"{base}{rest}"
        if base == "kwargs":
            key = f"kwargs{rest}"
        leaf = keys.get(key)
        if leaf is not None:
            out.setdefault((leaf, int(m.group("dim"))), symbol)
    return out


def _why_static(a: InputDim, created: dict[tuple[int, int], str], log: ShapeLog | None,
                names: dict[str, str], leaves: list[Any]) -> str:
    if a.example in (0, 1):
        return (f"the example size is {a.example}, which torch.export always specializes "
                "(give an example of size 2 or more)")
    symbol = created.get((a.leaf, a.dim))
    if log is None or symbol is None:
        return "specialized by torch (no record of why)"
    local = dict(names)
    for (leaf, dim), sym in created.items():
        local.setdefault(sym, f"{leaves[leaf][0]}.shape[{dim}]")
    chain, seq = [symbol], None
    for s, sym, value, _reason in log.replacements:     # follow s77 -> s17 -> 4
        if sym == chain[-1]:
            if _SYMBOL.fullmatch(value):
                chain.append(value)
            else:
                seq = s
                break
    if seq is None:
        return "specialized by torch (no record of why)"
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, chain)) + r")\b")
    guards = [g for g in log.guards if g[0] < seq and pattern.search(g[1])]
    if not guards:
        return "specialized by torch (no guard recorded)"
    _s, expr, where = guards[-1]
    return f"{_named(expr, local)} at {where}"


# -- torch's suggested fix for a violated spec ----------------------------------------------

def suggested_spec(exc: BaseException, dynamic_shapes: Any) -> Any | None:
    """torch's refinement of ``dynamic_shapes`` from the fixes a constraint violation suggests
    (``refine_dynamic_shapes_from_suggested_fixes``, where this torch has it); None when torch
    suggests nothing usable."""
    try:
        from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes
    except ImportError:  # pragma: no cover - older torch
        return None
    for link in _chain(exc):
        message = getattr(link, "msg", None) or str(link)
        try:
            return refine_dynamic_shapes_from_suggested_fixes(message, dynamic_shapes)
        except Exception:  # noqa: BLE001 - no fix in this link's text; try the cause's
            continue
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def render_spec(spec: Any, model: torch.nn.Module, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> str:
    """A dynamic_shapes spec as a manifest snippet (input index -> dim -> {name, min, max}),
    with the dims it fixes said in a comment. Specs of keyword or nested inputs, which a
    manifest cannot state, come out as the Python a case dict would return."""
    try:
        names = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        names = []
    per_input = (list(spec) if isinstance(spec, (tuple, list))
                 else [spec.get(n) for n in names[:len(args)]] if isinstance(spec, dict) else [])
    positional_only = not kwargs and (not isinstance(spec, dict)
                                      or set(spec) <= set(names[:len(args)]))
    if not positional_only or any(s is not None and not isinstance(s, dict) for s in per_input):
        return f"dynamic_shapes={spec!r}"
    dims, notes = [], []
    for i, per_dim in enumerate(per_input):
        parts = []
        for d, dim in sorted((per_dim or {}).items()):
            label = f"{names[i] if i < len(names) else f'args[{i}]'}.shape[{d}]"
            if isinstance(dim, int):
                notes.append(f"{label} = {dim} (fixed by the model)")
            elif type(dim).__name__ == "_DerivedDim":
                parts.append(f"{d}: '{dim.__name__}'")
            elif isinstance(dim, torch.export.Dim):
                bounds = [f"name: {dim.__name__}"]
                bounds += [f"{k}: {int(v)}" for k, v in (("min", dim.min), ("max", dim.max))
                           if _bound(v, "") and not (k == "min" and int(v) == 0)]
                parts.append(f"{d}: {{{', '.join(bounds)}}}")
            elif dim is not None:
                parts.append(f"{d}: auto")
        if parts:
            dims.append(f"{i}: {{{', '.join(parts)}}}")
    text = f"dynamic_shapes: {{{', '.join(dims)}}}"
    return text + (f"   # {'; '.join(notes)}" if notes else "")
