"""Facts about an exported graph worth a column: node counts, op histogram, signature kinds."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import torch

from exporter.record import Record

# Ops that the core-ATen opset allows although they carry no ``core`` tag.
_ALWAYS_ALLOWED_PREFIXES = ("sym_", "_assert", "_local_scalar_dense", "_make_dep_token")


def describe(ep: Any, record: Record) -> None:
    nodes = list(ep.graph.nodes)
    record.node_count = len(nodes)
    record.op_histogram = dict(Counter(
        _op_name(n.target) for n in nodes if n.op == "call_function").most_common())
    sig = ep.graph_signature
    record.graph_inputs = dict(Counter(spec.kind.name for spec in sig.input_specs))
    record.graph_outputs = dict(Counter(spec.kind.name for spec in sig.output_specs))


def describe_decomposed(ep: Any, record: Record) -> None:
    record.decomposed_node_count = len(ep.graph.nodes)
    non_core = set()
    for node in ep.graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload) and not (
                torch.Tag.core in target.tags or _allowed(target)):
            non_core.add(_op_name(target))
    record.non_core_ops = sorted(non_core)
    # Mutations show up as BUFFER_MUTATION / USER_INPUT_MUTATION outputs only once the
    # training IR is functionalized, so the decomposed program's signature is the one to keep.
    record.graph_outputs = dict(Counter(spec.kind.name for spec in ep.graph_signature.output_specs))


def _allowed(op: Any) -> bool:
    name = op._schema.name.split("::", 1)[-1]
    return op.namespace == "aten" and name.startswith(_ALWAYS_ALLOWED_PREFIXES)


def _op_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::', 1)[-1]}.{target._overloadname}"
    return getattr(target, "__name__", str(target))


# -- the same program, up to cosmetics -----------------------------------------------------------

_SYMBOL = re.compile(r"\b(?:s|u)\d+\b")


def placeholder_count(ep: Any) -> int:
    return sum(1 for n in ep.graph.nodes if n.op == "placeholder")


def unused_lifted(ep: Any) -> set[str]:
    """Placeholders of parameters, buffers and constants that no node reads and no output
    writes (non-strict export lifts BatchNorm's num_batches_tracked in eval mode; strict
    export drops it)."""
    sig = ep.graph_signature
    written = {s.target for s in sig.output_specs if s.target}
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    return {s.arg.name for s in sig.input_specs
            if s.kind.name != "USER_INPUT" and getattr(s.arg, "name", None) in nodes
            and not nodes[s.arg.name].users and s.target not in written}


def program_key(ep: Any) -> tuple[Any, ...] | None:
    """What a decomposition of ``ep`` depends on, without what differs between two exports of
    one graph: the order of lifted inputs, node names, the numbering of shape symbols (s27 /
    s43) and unused lifted inputs.  Two programs with the same key decompose to the same graph.
    None where the program has parts this does not describe (subgraphs of control-flow
    operators, opaque objects...): such programs are always decomposed."""
    try:
        return _program_key(ep)
    except Exception:  # noqa: BLE001 - a key is an optimisation, never a failure
        return None


def _program_key(ep: Any) -> tuple[Any, ...] | None:
    sig = ep.graph_signature
    symbols: dict[str, str] = {}

    def norm(text: str) -> str:
        return _SYMBOL.sub(lambda m: symbols.setdefault(m.group(0), f"S{len(symbols)}"), text)

    def meta(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            stride = tuple(value.stride()) if value.layout == torch.strided else None
            return norm(repr((tuple(value.shape), value.dtype, stride, value.device,
                              value.requires_grad, value.layout)))
        if isinstance(value, (list, tuple)):
            return tuple(meta(v) for v in value)
        if value is None or isinstance(value, (bool, int, float, str, torch.SymInt,
                                               torch.SymFloat, torch.SymBool)):
            return norm(repr(value))
        raise TypeError(type(value).__name__)     # no key: an opaque value

    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    ref: dict[str, Any] = {}
    user = []
    for i, spec in enumerate(s for s in sig.input_specs if s.kind.name == "USER_INPUT"):
        ref[spec.arg.name] = ("input", i)      # user inputs first: they number the symbols
        user.append(meta(placeholders[spec.arg.name].meta.get("val")))
    unused = unused_lifted(ep)
    lifted = []
    for spec in sorted((s for s in sig.input_specs if s.kind.name != "USER_INPUT"),
                       key=lambda s: (s.kind.name, str(s.target))):
        ref[spec.arg.name] = (spec.kind.name, str(spec.target))
        if spec.arg.name not in unused:
            lifted.append((spec.kind.name, str(spec.target), spec.persistent,
                           meta(placeholders[spec.arg.name].meta.get("val"))))
    if set(ref) != set(placeholders):
        return None

    def arg(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return ref[a.name]
        if isinstance(a, (list, tuple)):
            return type(a).__name__, tuple(arg(x) for x in a)
        if isinstance(a, dict):
            return tuple(sorted((str(k), arg(v)) for k, v in a.items()))
        if isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return norm(repr(a))
        return type(a).__name__, repr(a)       # literals as they are: only symbols renumbered

    body = []
    for i, node in enumerate(n for n in ep.graph.nodes if n.op != "placeholder"):
        if node.op not in ("call_function", "output"):
            return None                        # get_attr / call_module: subgraphs
        ref[node.name] = ("node", i)
        body.append((node.op, str(node.target), arg(node.args), arg(node.kwargs),
                     meta(node.meta.get("val")), norm(repr(node.meta.get("unbacked_bindings")))))
    outputs = tuple((s.kind.name, ref.get(getattr(s.arg, "name", None), norm(repr(s.arg))),
                     str(s.target)) for s in sig.output_specs)
    ranges = tuple(sorted(norm(f"{k}: {v}") for k, v in ep.range_constraints.items()))
    return (tuple(user), tuple(lifted), tuple(body), outputs, ranges, str(ep.call_spec.in_spec),
            str(ep.call_spec.out_spec), tuple(v.__name__ for v in ep.verifiers))


def same_state(a: Any, b: Any) -> bool:
    """Both programs compute with the same tensors: the same parameter and buffer objects,
    equal constants, for every lifted input that either uses."""
    try:
        return _same_state(a, b)
    except Exception:  # noqa: BLE001 - as program_key: no answer is "not the same"
        return False


def _same_state(a: Any, b: Any) -> bool:
    def used(ep: Any) -> set[str]:
        skip = unused_lifted(ep)
        return {str(s.target) for s in ep.graph_signature.input_specs
                if s.kind.name != "USER_INPUT" and s.arg.name not in skip}

    targets = used(a)
    if targets != used(b):
        return False
    for target in targets:
        if target in a.state_dict or target in b.state_dict:
            if a.state_dict.get(target) is not b.state_dict.get(target):
                return False
            continue
        x, y = a.constants.get(target), b.constants.get(target)
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                return False
        elif x is not y:
            return False
    return True
