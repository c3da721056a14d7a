"""Facts about an exported graph worth a column: node counts, op histogram, signature kinds."""

from __future__ import annotations

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
