"""Compare outputs of two programs, and derive other input sizes from an ExportedProgram.

Comparison is structural first (pytree spec, then per-leaf type, shape, dtype)
and numerical second, recording the worst absolute and relative error so that
a dashboard can show drift before it becomes a failure.

An element-wise ``atol + rtol*|eager|`` test is the wrong judge of an ill-conditioned network
(random weights amplify a one-ulp difference, e.g. a decomposed SiLU, to whole units in the
logits; docs/findings.md).  So a float leaf that fails it is judged once more, like PyTorch's
benchmark runner does, against eager run in float64: it passes when the program is no further
from float64 than eager float32 itself is (RMSE, times 2, or 3 for half types, plus atol/10).
The float64 run is only paid for by comparisons that failed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from exporter.signature import FLOAT64_TRAILER

try:  # public since torch 2.5-ish; the private module has the same API on older builds
    import torch.utils.pytree as pytree
    pytree.tree_flatten  # noqa: B018
except (ImportError, AttributeError):  # pragma: no cover - depends on the torch build
    import torch.utils._pytree as pytree  # type: ignore[no-redef]

REL_FLOOR = 1e-8   # |expected| below this is treated as this, so zeros do not divide

# Leaves of eager run in float64 on the same inputs, or a reason it cannot run; computed lazily.
Reference64 = Callable[[], "list[Any] | str"]


@dataclass
class Comparison:
    structure_ok: bool = True
    values_ok: bool = True
    detail: str = ""
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    failed_leaves: list[int] = field(default_factory=list)   # float leaves outside atol/rtol
    float64: str = ""     # set when the float64 reference overturned a float32 failure

    @property
    def ok(self) -> bool:
        return self.structure_ok and self.values_ok


def flatten(value: Any) -> tuple[list[Any], str]:
    leaves, spec = pytree.tree_flatten(value)
    return leaves, str(spec)


def compare(expected: Any, actual: Any, atol: float, rtol: float,
            reference64: Reference64 | None = None) -> Comparison:
    exp_leaves, exp_spec = flatten(expected)
    act_leaves, act_spec = flatten(actual)
    if exp_spec != act_spec:
        return Comparison(False, False, f"output structure differs: eager {_short(exp_spec)} "
                                        f"vs exported {_short(act_spec)}")
    return compare_leaves(exp_leaves, act_leaves, atol, rtol, reference64)


def compare_leaves(expected: list[Any], actual: list[Any], atol: float, rtol: float,
                   reference64: Reference64 | None = None) -> Comparison:
    result = Comparison()
    if len(expected) != len(actual):
        return Comparison(False, False, f"{len(actual)} outputs where eager gave {len(expected)}")
    rejudgeable = True
    for i, (e, a) in enumerate(zip(expected, actual)):
        problem = _compare_leaf(e, a, atol, rtol, result)
        if problem and result.detail == "":
            result.detail = f"output[{i}]: {problem}"
        if problem:
            if result.structure_ok and _is_low_float(e) and _is_low_float(a):
                result.failed_leaves.append(i)
            else:
                rejudgeable = False
    if result.structure_ok and not result.values_ok and rejudgeable and reference64 is not None:
        _judge_float64(result, expected, actual, atol, reference64)
    return result


def _is_low_float(x: Any) -> bool:
    """A tensor of a float type below float64: one a float64 reference is more precise than."""
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64


def _judge_float64(result: Comparison, expected: list[Any], actual: list[Any], atol: float,
                   reference64: Reference64) -> None:
    """Overturn a float32 failure when every failing leaf is a float leaf no further from eager
    in float64 than eager in float32 is (NaN/inf where float64 is finite never passes)."""
    failed = result.failed_leaves
    try:
        ref = reference64()
    except Exception as exc:  # noqa: BLE001 - any failure of the extra eager run
        ref = f"{type(exc).__name__}: {_short(str(exc), 80)}"
    if isinstance(ref, str):
        result.detail += f"\n{FLOAT64_TRAILER} no reference ({ref})"
        return
    worst: tuple[float, float, float] | None = None     # (ratio, program rmse, eager rmse)
    for i in failed:
        r = ref[i] if i < len(ref) else None
        e, a = expected[i].detach().cpu(), actual[i].detach().cpu()
        if not isinstance(r, torch.Tensor) or tuple(r.shape) != tuple(e.shape):
            result.detail += f"\n{FLOAT64_TRAILER} another output structure"
            return
        r64, e64, a64 = r.detach().cpu().double(), e.double(), a.double()
        finite = torch.isfinite(r64)
        if bool((finite & ~torch.isfinite(a64)).any()):
            result.detail += f"\n{FLOAT64_TRAILER} non-finite values where it is finite"
            return
        program = _rmse(a64[finite], r64[finite])
        eager = _rmse(e64[finite], r64[finite])
        allowed = (3.0 if e.dtype in (torch.float16, torch.bfloat16) else 2.0) * eager + atol / 10
        ratio = program / allowed if allowed > 0 else (0.0 if program == 0 else math.inf)
        if worst is None or ratio > worst[0]:
            worst = (ratio, program, eager)
    assert worst is not None
    judged = f"program rmse {worst[1]:.3g}, eager float32's {worst[2]:.3g}"
    if worst[0] <= 1.0:
        result.values_ok, result.detail, result.float64 = True, "", judged
    else:
        result.detail += f"\n{FLOAT64_TRAILER} {judged}"


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float(((a - b) ** 2).mean().sqrt())


def _compare_leaf(e: Any, a: Any, atol: float, rtol: float, acc: Comparison) -> str | None:
    if isinstance(e, torch.Tensor) or isinstance(a, torch.Tensor):
        if not (isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor)):
            acc.structure_ok = False
            return f"type {type(a).__name__}, eager gave {type(e).__name__}"
        if e.shape != a.shape or e.dtype != a.dtype:
            acc.structure_ok = False
            return f"shape/dtype {tuple(a.shape)}/{a.dtype}, eager {tuple(e.shape)}/{e.dtype}"
        return _compare_numbers(e.detach().cpu(), a.detach().cpu(), atol, rtol, acc)
    if isinstance(e, (int, float)) and isinstance(a, (int, float)) and not (
            isinstance(e, bool) or isinstance(a, bool)):
        return _compare_numbers(torch.tensor(float(e)), torch.tensor(float(a)), atol, rtol, acc)
    if type(e) is not type(a):
        acc.structure_ok = False
        return f"type {type(a).__name__}, eager gave {type(e).__name__}"
    if type(e).__eq__ is object.__eq__:
        return None     # identity is all such objects compare by: nothing to judge
    if e != a:
        acc.values_ok = False
        return f"value {a!r} != eager {e!r}"
    return None


def _compare_numbers(e: torch.Tensor, a: torch.Tensor, atol: float, rtol: float,
                     acc: Comparison) -> str | None:
    if e.numel() == 0:
        return None
    if not (e.is_floating_point() or e.is_complex()):
        if torch.equal(e, a):
            return None
        acc.values_ok = False
        wrong = int((e != a).sum())
        acc.max_abs_err = max(acc.max_abs_err, float((e.double() - a.double()).abs().max()))
        return f"{wrong} of {e.numel()} integer values differ"
    e64, a64 = e.double(), a.double()
    both_nan = torch.isnan(e64) & torch.isnan(a64)
    diff = torch.where(both_nan, torch.zeros_like(e64), (e64 - a64).abs())
    diff = torch.nan_to_num(diff, nan=math.inf)
    rel = diff / e64.abs().clamp_min(REL_FLOOR)
    acc.max_abs_err = max(acc.max_abs_err, float(diff.max()))
    acc.max_rel_err = max(acc.max_rel_err, float(rel.max()))
    if torch.allclose(a64, e64, atol=atol, rtol=rtol, equal_nan=True):
        return None
    acc.values_ok = False
    return (f"values differ: max abs err {float(diff.max()):.3g}, max rel err "
            f"{float(rel.max()):.3g} (atol {atol:g}, rtol {rtol:g})")


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# -- other sizes for the dynamic stage --------------------------------------------------------

@dataclass
class SizePlan:
    """Which symbols are dynamic, their ranges, and the input variants to try."""

    ranges: dict[str, tuple[int, float]] = field(default_factory=dict)
    variants: list[dict[str, int]] = field(default_factory=list)
    reason: str = ""


Declared = dict[int, dict[int, tuple[str, int, float]]]   # id(tensor) -> dim -> (name, lo, hi)


def declared_ranges(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                    dynamic_shapes: Any) -> Declared:
    """The dims the case *asked* to be dynamic, with their ranges, keyed by input tensor.

    Named Dims and range-carrying hints (``Dim.AUTO(min=2, max=64)``) count; a bare
    ``Dim.AUTO`` means "torch decides" and promises nothing.
    """
    out: Declared = {}
    for key, dims in spec_dims(model, args, kwargs, dynamic_shapes).items():
        for d, dim in dims.items():
            lo, hi = getattr(dim, "min", None), getattr(dim, "max", None)
            name = getattr(dim, "__name__", None)
            if name is None and lo is None and hi is None:
                continue
            hi_f = math.inf if hi is None or hi >= 2**62 else float(hi)
            out.setdefault(key, {})[d] = (name or f"dim{d}", int(lo or 0), hi_f)
    return out


def spec_dims(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
              dynamic_shapes: Any) -> dict[int, dict[int, Any]]:
    """id(input tensor) -> dim -> what a torch.export dynamic_shapes spec says of it (a Dim,
    a hint, an int, None), the spec aligned with the inputs as torch does: by position, or by
    forward's parameter names, through nested tuples, lists and dicts."""
    if dynamic_shapes is None:
        return {}
    import inspect
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
    except TypeError:
        return {}
    out: dict[int, dict[int, Any]] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        if isinstance(dynamic_shapes, dict):
            spec = dynamic_shapes.get(name)
        elif isinstance(dynamic_shapes, (tuple, list)) and i < len(dynamic_shapes):
            spec = dynamic_shapes[i]
        else:
            spec = None
        _walk_spec(value, spec, out)
    return out


def _walk_spec(value: Any, spec: Any, out: dict[int, dict[int, Any]]) -> None:
    if spec is None:
        return
    if isinstance(value, torch.Tensor):
        dims = spec.items() if isinstance(spec, dict) else enumerate(spec) \
            if isinstance(spec, (tuple, list)) else ()
        for d, dim in dims:
            out.setdefault(id(value), {})[int(d)] = dim
    elif isinstance(value, (tuple, list)) and isinstance(spec, (tuple, list)):
        for v, s in zip(value, spec):
            _walk_spec(v, s, out)
    elif isinstance(value, dict) and isinstance(spec, dict):
        for k, v in value.items():
            _walk_spec(v, spec.get(k), out)


def plan_sizes(ep: torch.export.ExportedProgram, leaves: list[Any], count: int,
               declared: Declared | None = None, edges: bool = False,
               seed: int = 0) -> SizePlan:
    """Pick ``count`` assignments of the program's size symbols, inside their ranges.

    A dim the case declared dynamic (with a range) but that the program made static is
    planned too, under its declared name: running the program at another size inside the
    declared range is exactly what a user of that range will do.

    With ``edges`` (dynamic-shape discovery), every symbol first takes the smallest size of
    its range, then the largest (an unbounded range is tried up to ``EDGE_CAP`` times the
    example), then ``count`` sizes drawn at random inside it (seeded).
    """
    import sympy

    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    metas = _input_metas(ep)
    if len(metas) != len(tensors):
        return SizePlan(reason="cannot match program inputs to example tensors")
    example: dict[str, int] = {}
    ranges: dict[str, tuple[int, float]] = {}
    for meta, real in zip(metas, tensors):
        asked = (declared or {}).get(id(real), {})
        for d, (size, actual) in enumerate(zip(meta.shape, real.shape)):
            expr = size.node.expr if isinstance(size, torch.SymInt) else None
            if isinstance(expr, sympy.Symbol):
                vr = ep.range_constraints.get(expr)
                lo = int(vr.lower) if vr is not None and vr.lower.is_finite else 0
                hi = float(vr.upper) if vr is not None and vr.upper.is_finite else math.inf
                example[str(expr)], ranges[str(expr)] = int(actual), (lo, hi)
            elif (expr is None or not expr.free_symbols) and d in asked:
                name, lo, hi = asked[d]
                label = f"{name} (declared; exported static)"
                example[label], ranges[label] = int(actual), (lo, hi)
    if not example:
        return SizePlan(reason="no dynamic dimensions in the exported program")
    plan = SizePlan(ranges=ranges)
    # Symbols whose example sizes are equal (a batch shared by ids and mask that torch left
    # independent) take equal sizes: the model's inputs stay consistent with each other.
    rng, drawn = random.Random(seed), {}
    choices = {}
    for s, v in example.items():
        lo, hi = ranges[s]
        if not edges:
            choices[s] = _other_sizes(v, lo, hi, count)
            continue
        if (v, lo, hi) not in drawn:
            drawn[(v, lo, hi)] = _edge_sizes(v, lo, hi, count, rng)
        choices[s] = drawn[(v, lo, hi)]
    n = max(len(c) for c in choices.values())
    if n == 0:
        plan.reason = "the declared ranges admit only the example sizes"
        return plan
    for k in range(n):
        plan.variants.append({s: (c[k] if k < len(c) else example[s]) for s, c in choices.items()})
    return plan


def _other_sizes(value: int, lo: int, hi: float, count: int) -> list[int]:
    """Sizes other than ``value``: the smallest sensible one, then larger ones, within range."""
    lo = max(lo, 1)       # size-0 tensors are a different question from dynamic batch
    candidates = [lo, value + 1, 2 * value + 1, value - 1, lo + 1]
    out: list[int] = []
    for c in candidates:
        if lo <= c <= hi and c != value and c not in out:
            out.append(c)
    return out[:count]


EDGE_CAP = 2   # an unbounded range is tried up to this many times the example size (memory)


def _edge_sizes(value: int, lo: int, hi: float, count: int, rng: random.Random) -> list[int]:
    """The range's edges, then ``count`` random sizes inside it, none equal to ``value``."""
    lo = max(lo, 1)
    top = int(min(hi, max(EDGE_CAP * value, value + 2)))
    out = [c for c in dict.fromkeys((lo, top)) if lo <= c <= hi and c != value]
    pool = [c for c in range(lo, top + 1) if c != value and c not in out]
    out += rng.sample(pool, min(count, len(pool)))
    return out


def _input_metas(ep: torch.export.ExportedProgram) -> list[torch.Tensor]:
    """The fake tensors of the program's user inputs, in input order (symbolic sizes)."""
    user_inputs = set(ep.graph_signature.user_inputs)
    vals = (n.meta.get("val") for n in ep.graph.nodes
            if n.op == "placeholder" and n.name in user_inputs)
    return [v for v in vals if isinstance(v, torch.Tensor)]


def resize_leaves(ep: torch.export.ExportedProgram, leaves: list[Any],
                  assignment: dict[str, int], declared: Declared | None = None) -> list[Any]:
    """New input leaves whose dynamic dims take the assigned sizes (tiling real data)."""
    metas = iter(_input_metas(ep))
    out = []
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            out.append(leaf)
            continue
        meta = next(metas)
        asked = (declared or {}).get(id(leaf), {})
        shape = []
        for d, (size, actual) in enumerate(zip(meta.shape, leaf.shape)):
            expr = size.node.expr if isinstance(size, torch.SymInt) else None
            if expr is not None and expr.free_symbols:
                subs = {s: assignment[str(s)] for s in expr.free_symbols if str(s) in assignment}
                shape.append(int(expr.subs(subs)) if subs else int(actual))
            elif d in asked:
                label = f"{asked[d][0]} (declared; exported static)"
                shape.append(assignment.get(label, int(actual)))
            else:
                shape.append(int(actual))
        out.append(tile_to(leaf, shape))
    return out


def tile_to(t: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """Repeat or cut ``t`` along each dim to reach ``shape``, keeping values valid
    (token ids stay in the vocabulary, masks stay masks)."""
    for dim, target in enumerate(shape):
        current = t.shape[dim]
        if target == current:
            continue
        if current == 0:
            t = t.new_zeros(*t.shape[:dim], target, *t.shape[dim + 1:])
            continue
        reps = -(-target // current)
        if reps > 1:
            t = torch.cat([t] * reps, dim=dim)
        t = t.narrow(dim, 0, target)
    return t.contiguous()
