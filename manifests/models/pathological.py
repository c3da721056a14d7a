"""Purpose-built tiny models, one or more per exportsweep failure category.

Each ``make_*`` factory returns a bare ``nn.Module`` (example inputs come from the
manifest) or a case dict ``{"model", "args", "kwargs", "dynamic_shapes"}``.
Shapes are tiny and deterministic.  Custom ops live in the ``exportsweep_patho``
namespace and are registered lazily, at most once per process, so this file can
be imported (or exec'd under another module name) any number of times.

Expected outcomes per mode are in ``manifests/pathological.yaml``; the evidence
(exception classes, messages, attributes) is in ``docs/exception-survey.md``.

No ``from __future__ import annotations`` here: ``torch.library.custom_op``
infers the op schema from real (non-string) annotations.
"""

import dataclasses
import math
import os
import random

import torch
import torch.utils._pytree as pytree
from torch.fx.experimental import symbolic_shapes as _symbolic_shapes
from torch import nn
from torch.export import Dim

_NS = "exportsweep_patho"


def _custom_op(name, impl, fake=None):
    """Define ``exportsweep_patho::<name>`` once per process; return the op packet."""
    ns = getattr(torch.ops, _NS)
    if not hasattr(ns, name):
        op = torch.library.custom_op(f"{_NS}::{name}", impl, mutates_args=())
        if fake is not None:
            op.register_fake(fake)
    return getattr(getattr(torch.ops, _NS), name)


def _x(*shape):
    """Deterministic example tensor (does not touch the global RNG)."""
    g = torch.Generator().manual_seed(1234)
    return torch.randn(*shape, generator=g)


# --------------------------------------------------------------------------- build / eager

class _BuildFails(nn.Module):
    def __init__(self):
        super().__init__()
        raise ValueError("exportsweep_patho: constructor fails on purpose")


def make_model_build_error():
    """MODEL_BUILD_ERROR: the constructor raises ValueError."""
    return _BuildFails()


class _EagerFails(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(5, 2))

    def forward(self, x):
        return x @ self.w  # (2,3) @ (5,2): shape mismatch


def make_eager_error():
    """EAGER_ERROR: forward does an impossible matmul, eager raises RuntimeError."""
    return _EagerFails()


class _PyRandom(nn.Module):
    def forward(self, x):
        return x * random.random()  # Python RNG is not reseeded by torch.manual_seed


def make_eager_nondeterministic():
    """EAGER_NONDETERMINISTIC: Python `random` noise, so two same-seed eager runs differ."""
    return _PyRandom()


# --------------------------------------------------------------------------- input validation

class _Identityish(nn.Module):
    def forward(self, x):
        return x * 2


def make_invalid_input_rank():
    """INVALID_INPUT: dynamic_shapes spec has rank 1 for a rank-2 input (UserError INVALID_INPUT)."""
    return {"model": _Identityish(), "args": (_x(4, 3),), "kwargs": {},
            "dynamic_shapes": {"x": (Dim("batch", min=2, max=64),)}}


def make_invalid_input_key():
    """INVALID_INPUT: dynamic_shapes dict keyed by a name forward() does not have."""
    return {"model": _Identityish(), "args": (_x(4, 3),), "kwargs": {},
            "dynamic_shapes": {"inp": {0: Dim("batch", min=2, max=64)}}}


# --------------------------------------------------------------------------- shapes / guards

class _ViewFour(nn.Module):
    def forward(self, x):
        return x.view(4, -1)  # specializes the batch dim to 4


def make_constraint_violation():
    """CONSTRAINT_VIOLATION: batch declared dynamic (manifest) but x.view(4, -1) specializes it."""
    return _ViewFour()


class _SumBranch(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # branch on tensor data
            return x + 1
        return x - 1


def make_data_dependent_guard():
    """DATA_DEPENDENT_GUARD: `if x.sum() > 0` branches on tensor data."""
    return _SumBranch()


class _NonzeroBranch(nn.Module):
    def forward(self, x):
        n = x.nonzero().shape[0]  # unbacked size
        if n > 2:
            return x * 2
        return x


def make_data_dependent_guard_nonzero():
    """DATA_DEPENDENT_GUARD: Python branch on nonzero().shape[0] (an unbacked SymInt)."""
    return _NonzeroBranch()


class _ItemBranch(nn.Module):
    def forward(self, x):
        if (x > 0).sum().item() > 2:  # .item() in Python control flow
            return x * 2
        return x


def make_data_dependent_guard_item():
    """DATA_DEPENDENT_GUARD: `if (x > 0).sum().item() > 2` branches on an unbacked int."""
    return _ItemBranch()


class _InterpolateToData(nn.Module):
    """Resizes a parameter to a size read from the input, as ViLT's position embeddings do."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 4, 3, 3))

    def forward(self, x, mask):
        h = mask.sum(dim=1)[0, 0]          # an unbacked size: u0
        grid = nn.functional.interpolate(self.pos, size=(h, h), mode="bilinear",
                                         align_corners=True)
        return x + grid.sum()


def make_guard_inside_interpolate():
    """DATA_DEPENDENT_GUARD in both modes: interpolate guards on the unbacked size (u0 > 1);
    strict mode wraps that guard in UserError(CONSTRAINT_VIOLATION), which is not the cause."""
    return _InterpolateToData()


class _TorchEqual(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("ref", torch.zeros(2, 3))

    def forward(self, x):
        if torch.equal(x, self.ref):  # aten.equal has data-dependent output
            return x
        return x + 1


def make_data_dependent_op():
    """DATA_DEPENDENT_OP: torch.equal on tensors (DataDependentOutputException on fake tensors)."""
    return _TorchEqual()


class _GraphBreak(nn.Module):
    def forward(self, x):
        y = x + 1
        torch._dynamo.graph_break()
        return y * 2


def make_graph_break():
    """GRAPH_BREAK (strict only): explicit torch._dynamo.graph_break(); non-strict passes."""
    return _GraphBreak()


class _OpenFile(nn.Module):
    def forward(self, x):
        with open(os.devnull, "w") as f:  # builtin Dynamo cannot trace
            f.write("hello")
        return x + 1


def make_graph_break_builtin():
    """GRAPH_BREAK (strict only): calls the builtin open(); non-strict just runs it."""
    return _OpenFile()


def _nofake_impl(x: torch.Tensor) -> torch.Tensor:
    return x * 3


class _NoFake(nn.Module):
    def forward(self, x):
        return _custom_op("nofake", _nofake_impl)(x)


def make_missing_fake_kernel():
    """MISSING_FAKE_KERNEL: torch.library.custom_op without register_fake."""
    _custom_op("nofake", _nofake_impl)
    return _NoFake()


def _unwritten_fake(x: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("exportsweep_patho: fake kernel not written yet")


class _UnusableFake(nn.Module):
    def forward(self, x):
        return _custom_op("unwrittenfake", _nofake_impl, _unwritten_fake)(x) + 1


def make_unusable_fake_kernel():
    """MISSING_FAKE_KERNEL: register_fake is there but raises (strict: Dynamo wraps it in a graph break)."""
    _custom_op("unwrittenfake", _nofake_impl, _unwritten_fake)
    return _UnusableFake()


class PathoBox:
    """A plain class that is not a registered pytree node."""

    def __init__(self, t):
        self.t = t

    def __eq__(self, other):  # value equality, so eager determinism checks can compare it
        return isinstance(other, PathoBox) and torch.equal(self.t, other.t)

    __hash__ = None

    def __repr__(self):
        return f"PathoBox(shape={tuple(self.t.shape)})"


class _ReturnsObject(nn.Module):
    def forward(self, x):
        return PathoBox(x + 1)


def make_unsupported_type_output():
    """UNSUPPORTED_TYPE: forward returns an instance of an unregistered class."""
    return _ReturnsObject()


class _TakesObject(nn.Module):
    def forward(self, box):
        return box.t + 1


def make_unsupported_type_input():
    """UNSUPPORTED_TYPE: forward takes an instance of an unregistered class (strict: UserError INVALID_INPUT)."""
    return {"model": _TakesObject(), "args": (PathoBox(_x(2, 3)),), "kwargs": {},
            "dynamic_shapes": None}


class _CheckWhenExporting(nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():
            torch._check(x.shape[0] > 100)  # contradicted by the (2, 3) example
        return x + 1


def make_user_check_failed():
    """USER_CHECK_FAILED: torch._check(x.shape[0] > 100) runs only while exporting, so eager passes."""
    return _CheckWhenExporting()


class _CheckWithMessage(nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():
            torch._check(x.shape[0] > 100, lambda: "exportsweep_patho: needs more than 100 rows")
        return x + 1


def make_user_check_custom_message():
    """USER_CHECK_FAILED: a torch._check with the model's own message (strict: an Observed exception)."""
    return _CheckWithMessage()


class _ReassignsParamData(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        self.w.data = self.w.data * 2  # swaps the parameter's data during tracing
        return x * self.w


def make_export_error():
    """EXPORT_ERROR (non-strict): `param.data = ...` in forward leaves a FakeTensor among the constants."""
    return _ReassignsParamData()


class _ReadsDataPtr(nn.Module):
    def forward(self, x):
        return x + (x.data_ptr() % 2)


def make_export_error_data_ptr():
    """EXPORT_ERROR: forward reads Tensor.data_ptr(), which fake tensors refuse (strict: Unsupported "Observed exception")."""
    return _ReadsDataPtr()


class _MutatesConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.zeros(3)  # plain tensor attribute, not a buffer

    def forward(self, x):
        self.c.add_(1)
        return x + self.c


def make_constant_mutation():
    """DECOMPOSITION_ERROR in both modes: in-place add_ on a plain tensor attribute; run_decompositions
    says "Constant c is mutated in the forward method". (Non-strict export really mutates the
    constant while tracing; exportsweep puts the model back after each export, so that side
    effect no longer leaks into the program as a NUMERIC_MISMATCH in one mode only.)"""
    return _MutatesConstant()


class _Log2OfDim(nn.Module):
    def forward(self, x):
        return x * math.log2(x.shape[0])


def make_spec_violation():
    """SPEC_VIOLATION (strict): math.log2 on a dynamic dim leaves a non-ATen call in the graph."""
    return {"model": _Log2OfDim(), "args": (_x(4, 3),), "kwargs": {},
            "dynamic_shapes": {"x": {0: Dim("batch", min=2, max=64)}}}


# --------------------------------------------------------------------------- silent / post-export

class _ExportOnlyOffset(nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():
            return x + 1
        return x


def make_numeric_mismatch():
    """NUMERIC_MISMATCH: is_exporting() branch adds 1 only in the exported graph."""
    return _ExportOnlyOffset()


class _ExportOnlyTuple(nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():
            return (x + 1,)
        return x + 1


def make_output_structure_mismatch():
    """OUTPUT_STRUCTURE_MISMATCH: eager returns a tensor, the exported graph a 1-tuple."""
    return _ExportOnlyTuple()


class _SpecializedByAuto(nn.Module):
    def forward(self, x):
        if x.shape[0] == 4:  # guard on the size: Dim.AUTO silently specializes batch to 4
            return x * 2
        return x * 3


def make_dynamic_shape_failure_guard():
    """DYNAMIC_SHAPE_FAILURE: `if x.shape[0] == 4` makes Dim.AUTO(2..64) specialize to 4; batch 6 is rejected at run time."""
    return {"model": _SpecializedByAuto(), "args": (_x(4, 3),), "kwargs": {},
            "dynamic_shapes": {"x": {0: Dim.AUTO(min=2, max=64)}}}


def _read_hint(n):
    """The example value behind a symbolic int, without adding a guard (last resort)."""
    return n.node.hint if isinstance(n, torch.SymInt) else n


# A private helper, feature-detected (torch 2.11 has no `optimization_hint`): its name was
# `hint_int`, then `size_hint` (early 2026), then `optimization_hint`.
optimization_hint = next((f for f in (getattr(_symbolic_shapes, name, None) for name in (
    "optimization_hint", "size_hint", "hint_int")) if callable(f)), _read_hint)


class _BakesHint(nn.Module):
    def forward(self, x):
        return x * optimization_hint(x.shape[0])  # example size read without a guard


def make_dynamic_shape_failure_hint():
    """DYNAMIC_SHAPE_FAILURE: optimization_hint() bakes the example batch (4) with no guard; batch 6 gives wrong numbers."""
    return {"model": _BakesHint(), "args": (_x(4, 3),), "kwargs": {},
            "dynamic_shapes": {"x": {0: Dim("batch", min=2, max=64)}}}


def _badfake_impl(x: torch.Tensor) -> torch.Tensor:
    return x.sum(0)


def _badfake_fake(x):
    return x.new_empty(x.shape[0] + 3)  # wrong: real output has x.shape[1] elements


class _BadFake(nn.Module):
    def forward(self, x):
        return _custom_op("badfake", _badfake_impl, _badfake_fake)(x)


def make_bad_fake_kernel():
    """Custom op whose register_fake returns the wrong shape: export/decompose pass silently in 2.14.1 (draft_export: MISMATCHED_FAKE_KERNEL); fresh-process load fails (op not registered)."""
    _custom_op("badfake", _badfake_impl, _badfake_fake)
    return _BadFake()


class _AliasedBufferMutation(nn.Module):
    def __init__(self):
        super().__init__()
        storage = torch.zeros(6)
        self.register_buffer("a", storage)
        self.register_buffer("b", storage[3:])  # b is a view of a

    def forward(self, x):
        self.a.add_(1)
        return x + self.b


def make_decomposition_error():
    """DECOMPOSITION_ERROR: two buffers share storage and one is mutated; run_decompositions asserts."""
    return _AliasedBufferMutation()


# --------------------------------------------------------------------------- serialization

class PathoOut:
    """Output container registered as a pytree node WITHOUT serialized_type_name."""

    def __init__(self, a, b):
        self.a, self.b = a, b


try:
    pytree.register_pytree_node(
        PathoOut,
        lambda o: ([o.a, o.b], None),
        lambda leaves, _ctx: PathoOut(*leaves),
    )
except ValueError:  # already registered in this process
    pass


class _ReturnsRegisteredObject(nn.Module):
    def forward(self, x):
        return PathoOut(x + 1, x * 2)


def make_serialize_error():
    """SERIALIZE_ERROR: output pytree class lacks serialized_type_name, torch.export.save raises."""
    return _ReturnsRegisteredObject()


class _SparseBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("s", torch.eye(3).to_sparse())

    def forward(self, x):
        return x @ self.s.to_dense()


def make_serialize_error_sparse():
    """SERIALIZE_ERROR: a sparse COO buffer; save raises NotImplementedError (no storage)."""
    return _SparseBuffer()


class _ReturnsString(nn.Module):
    def forward(self, x):
        return x + 1, "hello"


def make_deserialize_error_string():
    """DESERIALIZE_ERROR: a str in the output saves fine but cannot be deserialized."""
    return _ReturnsString()


def _scaled_impl(x: torch.Tensor) -> torch.Tensor:
    return x * 5


def _scaled_fake(x):
    return torch.empty_like(x)


class _UsesCustomOp(nn.Module):
    def forward(self, x):
        return _custom_op("scaled", _scaled_impl, _scaled_fake)(x) + 1


def make_deserialize_error_custom_op():
    """DESERIALIZE_ERROR: custom op (with fake) is not registered in the fresh loading process."""
    _custom_op("scaled", _scaled_impl, _scaled_fake)
    return _UsesCustomOp()


class _DenormalSensitive(nn.Module):
    def forward(self, x):
        return x * 1e-39 * 1e38  # passes through float32 denormals


def make_roundtrip_mismatch():
    """ROUNDTRIP_MISMATCH: factory turns on flush-denormal (PROCESS-GLOBAL); a fresh loader does not, outputs differ."""
    torch.set_flush_denormal(True)
    return _DenormalSensitive()


# --------------------------------------------------------------------------- controls (must PASS)

class _CounterAndBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("count", torch.zeros(1))

    def forward(self, x):
        self.count.add_(1)
        return self.bn(x) + self.count


def make_control_buffer_mutation():
    """Control (PASS): counter buffer incremented in forward plus BatchNorm in train mode."""
    return _CounterAndBN().train()


class _MutatesInput(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


def make_control_input_mutation():
    """Control (PASS): mutates its input in place (x.add_(1))."""
    return _MutatesInput()


class _DictOut(nn.Module):
    def forward(self, x):
        return {"double": x * 2, "neg": -x}


def make_control_dict_output():
    """Control (PASS): returns a dict of tensors."""
    return _DictOut()


class _TupleOut(nn.Module):
    def forward(self, x):
        return x + 1, (x * 2, x.sum())


def make_control_tuple_output():
    """Control (PASS): returns a nested tuple of tensors."""
    return _TupleOut()


class _ScalarOut(nn.Module):
    def forward(self, x):
        return x * 2, 3, 0.5


def make_control_scalar_output():
    """Control (PASS): returns Python int and float constants alongside a tensor."""
    return _ScalarOut()


__all__ = [n for n in dir() if n.startswith("make_")] + ["PathoBox", "PathoOut"]


class _Noisy(nn.Module):
    """Draws random numbers in forward, as ViT-MAE's random masking does."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        noise = torch.rand(x.shape[0], x.shape[1])
        keep = torch.argsort(noise, dim=1)[:, :4]
        return self.proj(x).gather(1, keep) + noise[:, :1]


def make_control_random_in_forward():
    """PASS: every comparison (numerics, sizes, decompose, the fresh-process reload) runs
    under the eager reference's seed, so the same noise is drawn everywhere."""
    return _Noisy()


def make_control_dropout_in_train_mode():
    """PASS: train-mode dropout is random too, and seeded alike."""
    return nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 4))


class _ConjugateBuffer(nn.Module):
    """A buffer that is a lazy conjugate view: torch.export.save drops the conjugate bit."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(4, dtype=torch.complex64).conj())

    def forward(self, x):
        return (x * self.w).imag       # the conjugate flips its sign


def make_conjugate_view_buffer():
    """ROUNDTRIP_MISMATCH in both modes, as its user sees it: the program exported from the
    model as built reloads with w's conjugate bit lost (a deep copy of the model would have
    materialised the view and hidden it). docs/findings.md has the minimal repro."""
    return _ConjugateBuffer()
