"""Reading evidence out of a torch exception chain, for the taxonomy's rules.

Each matcher answers one question ("is there a guard on a data-dependent value in this
chain?") and returns :class:`Found` or None.  ``Found.code`` is what torch says the error
is (the ``error_code`` column); ``Found.cause`` is the *mode-independent* form of that
evidence, which the signature hashes so that one root cause gives one cluster in strict
and non-strict export alike: strict mode wraps the same cause in Dynamo's exceptions and
other wording, so wrappers and messages of the outer exception never reach it.

Matchers read exception classes by fully qualified name (no private torch module has to
import), their attributes, the ``__cause__`` / ``__context__`` chain, and where torch
offers nothing better, tracebacks (which frames ran) or text; each says which.
"""

from __future__ import annotations

import ast
import errno
import linecache
import os
import re
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from exporter import signature as sig

USER_ERROR = "torch._dynamo.exc.UserError"
UNSUPPORTED = "torch._dynamo.exc.Unsupported"
GUARD_ON_DATA = "torch.fx.experimental.symbolic_shapes.GuardOnDataDependentSymNode"
CONSTRAINT_ERRORS = ("torch.fx.experimental.symbolic_shapes.ConstraintViolationError",
                     "torch.utils._sympy.value_ranges.ValueRangeError")
DATA_DEP_OUTPUT = ("torch._subclasses.fake_tensor.DataDependentOutputException",
                   "torch._subclasses.fake_tensor.DynamicOutputShapeException")
NO_FAKE_OP = "torch._subclasses.fake_tensor.UnsupportedOperatorException"
SPEC_VIOLATION = "torch._export.verifier.SpecViolationError"

# The cause shared by strict's "Data-dependent branching" and non-strict's guard raised
# from a tensor's truth value: both are `if <tensor>:` in the model.
TENSOR_BRANCH = "branch on a tensor's truth value"


@dataclass(frozen=True)
class Found:
    code: str                   # what torch says the error is (error_code)
    cause: str | None = None    # mode-independent evidence; None: the innermost exception's


Matcher = Callable[["Chain"], "Found | None"]


def qualname(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _class_names(exc: BaseException) -> set[str]:
    return {f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__}


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, then its causes and contexts, breadth first, without repeats."""
    out: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop(0)
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        stack.extend([e.__cause__, e.__context__])
    return out


def text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a model's exception may not even print
        return ""


@dataclass(frozen=True)
class Chain:
    excs: list[BaseException]

    def first(self, *classes: str) -> BaseException | None:
        for e in self.excs:
            if _class_names(e) & set(classes):
                return e
        return None

    def user_errors(self, *error_types: str) -> Iterator[BaseException]:
        for e in self.excs:
            kind = getattr(getattr(e, "error_type", None), "name", None)
            if USER_ERROR in _class_names(e) and kind in error_types:
                yield e

    def gb_types(self) -> Iterator[tuple[BaseException, str]]:
        for e in self.excs:
            gb = getattr(e, "gb_type", None)
            if isinstance(gb, str) and UNSUPPORTED in _class_names(e):
                yield e, gb

    def text_has(self, *needles: str) -> BaseException | None:
        for e in self.excs:
            text = text_of(e)
            if any(n in text for n in needles):
                return e
        return None

    def observed(self) -> tuple[str, str] | None:
        """(type, message) of the first exception in the chain Dynamo saw the model raise."""
        return next(filter(None, map(observed_exception, self.excs)), None)

    def root_cause(self) -> str:
        """The innermost exception of the explicit ``raise ... from`` chain, as 'Type: text'.

        Dynamo reports an exception the traced model raised as an Observed* exception
        whose text is ``raised exception T(args)``; it is read back as ``T: args`` so that
        it matches the same exception raised for real in non-strict mode."""
        e = self.excs[0]
        seen = [e]
        while e.__cause__ is not None and not any(e.__cause__ is s for s in seen):
            e = e.__cause__
            seen.append(e)
        observed = observed_exception(e)
        if observed is not None:
            return f"{observed[0]}: {sig.message_head(observed[1])}"
        return f"{type(e).__name__}: {sig.message_head(text_of(e))}"


_RAISED = re.compile(r"^raised exception (\w+)\((.*)\)\s*$", re.S)


def observed_exception(exc: BaseException) -> tuple[str, str] | None:
    """(type name, message) of an exception Dynamo saw the traced code raise."""
    if not type(exc).__name__.startswith("Observed"):
        return None
    m = _RAISED.match(text_of(exc).strip())
    if m is None:
        return None
    try:
        args = ast.literal_eval(f"({m.group(2)},)") if m.group(2) else ()
        text = str(args[0]) if len(args) == 1 else ", ".join(map(str, args))
    except (ValueError, SyntaxError, RecursionError):
        text = m.group(2)
    return m.group(1), text


def _op_name(func: Any) -> str:
    """``ns::name`` (``ns::name.overload`` for a non-default overload) of an operator."""
    ns, name = getattr(func, "namespace", None), getattr(func, "_opname", None)
    if isinstance(ns, str) and isinstance(name, str):
        overload = getattr(func, "_overloadname", "default")
        return f"{ns}::{name}" + ("" if overload in ("default", "", None) else f".{overload}")
    text = str(func)
    m = re.search(r"(\w+)::(\w+)", text) or re.fullmatch(r"(\w+)\.(\w+)(?:\.default)?", text)
    return f"{m.group(1)}::{m.group(2)}" if m else text[:200]


# -- matchers ---------------------------------------------------------------------------------

def user_error(*kinds: str) -> Matcher:
    def match(chain: Chain) -> Found | None:
        for e in chain.user_errors(*kinds):
            return Found(f"UserErrorType.{e.error_type.name}")   # type: ignore[attr-defined]
        return None
    return match


def _gb(*gb_types: str) -> Matcher:
    def match(chain: Chain) -> Found | None:
        for _, gb in chain.gb_types():
            if gb in gb_types:
                return Found(gb)
        return None
    return match


def _tb_locals(exc: BaseException) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(file, function, locals) of each frame the exception unwound, outermost first."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        try:
            local = dict(frame.f_locals)
        except Exception:  # noqa: BLE001 - a frame whose locals cannot be read
            local = {}
        yield frame.f_code.co_filename, frame.f_code.co_name, local
        tb = tb.tb_next


def _from_tensor_truth(chain: Chain) -> bool:
    """Non-strict export turns ``if tensor:`` into a torch-function call of Tensor.__bool__
    whose guard then fails: that call is on the traceback (frame locals)."""
    for e in chain.excs:
        for _, _, local in _tb_locals(e):
            func = local.get("func")
            if getattr(func, "__name__", None) == "__bool__" and "Tensor" in repr(func):
                return True
    return False


def data_dependent_guard(chain: Chain) -> Found | None:
    e = chain.first(GUARD_ON_DATA)
    if e is not None:
        cond = str(getattr(e, "cond", "")) or "GuardOnDataDependentSymNode"
        return Found(cond, TENSOR_BRANCH if _from_tensor_truth(chain) else f"guard {cond}")
    for _, gb in chain.gb_types():
        if gb == "Data-dependent branching":
            return Found(gb, TENSOR_BRANCH)
    return user_error("ANTI_PATTERN")(chain)


def data_dependent_op(chain: Chain) -> Found | None:
    e = chain.first(*DATA_DEP_OUTPUT)
    if e is not None:
        func = getattr(e, "func", None)
        return Found(str(func) if func is not None else qualname(e),
                     _op_name(func) if func is not None else None)
    return _gb("Data dependent operator", "Dynamic shape operator")(chain)


_FAKE_DISPATCH = os.path.join("_subclasses", "fake_tensor.py")
_CORE_NAMESPACES = ("aten", "prim", "prims")
_FX_NODE_OP = re.compile(
    r"failed to run FX node with fake tensors: call_function (\w+)\.(\w+)(?:\.\w+)?\(")


def _fake_kernel_raised(chain: Chain) -> str | None:
    """The operator whose fake kernel raised: the traceback passes through fake-tensor
    dispatch of a non-aten operator (its ``func`` local) and the error comes from below."""
    for e in reversed(chain.excs):
        op = None
        for filename, _, local in _tb_locals(e):
            func = local.get("func")
            if filename.endswith(_FAKE_DISPATCH) and \
                    getattr(func, "namespace", "aten") not in _CORE_NAMESPACES:
                op = func
        if op is not None:
            return _op_name(op)
    return None


def missing_fake(chain: Chain) -> Found | None:
    e = chain.first(NO_FAKE_OP)
    # aten ops raise this too (e.g. nested tensors): only a custom namespace means "no fake".
    func = getattr(e, "func", None)
    if e is not None and getattr(func, "namespace", "aten") != "aten":
        return Found(_op_name(func), _op_name(func))
    # torch raises a bare RuntimeError for custom_op without register_fake: text is all we have.
    e = chain.text_has("no fake impl registered", "There was no fake impl registered")
    if e is not None:
        m = re.search(r"CustomOpDef\(([\w.:]+)\)|for (\w+::\w+)", text_of(e))
        op = (m.group(1) or m.group(2)) if m else "no fake impl"
        return Found(op, op)
    op = _fake_kernel_raised(chain)
    if op is not None:
        return Found(op, op)
    # Strict mode: Dynamo ran the node on fake tensors and keeps only the text of what the
    # fake kernel raised (the inner exception has lost its traceback).
    for e in chain.excs:
        m = _FX_NODE_OP.search(text_of(e))
        if m and m.group(1) not in _CORE_NAMESPACES:
            op = f"{m.group(1)}::{m.group(2)}"
            return Found(op, op)
    for e, gb in chain.gb_types():
        if gb == "Operator does not support running with fake tensors":
            m = re.search(r"(\w+)\.(\w+)\.\w+|(\w+)::(\w+)", text_of(e))
            op = f"{m.group(1) or m.group(3)}::{m.group(2) or m.group(4)}" if m else gb
            return Found(op, op)
    return None


def constraint(chain: Chain) -> Found | None:
    # Strict mode wraps a guard on a data-dependent value in UserError(CONSTRAINT_VIOLATION):
    # the guard is the cause (the same root cause is DATA_DEPENDENT_GUARD in non-strict).
    if chain.first(GUARD_ON_DATA) is not None:
        return None
    found = user_error("CONSTRAINT_VIOLATION", "DYNAMIC_DIM")(chain)
    e = chain.first(*CONSTRAINT_ERRORS)
    if found is None and e is not None:
        found = Found(qualname(e).rsplit(".", 1)[-1])
    if found is None:
        return None
    return Found(found.code, _violation_reasons(text_of(e if e is not None else chain.excs[0])))


_VIOLATED = re.compile(r"Constraints violated \((.*?)\)!")


def _violation_reasons(text: str) -> str | None:
    """torch's reasons ("- You marked DIM as dynamic but your code specialized it to be a
    constant"), with the entry's own dim names taken out; None when it gives none."""
    reasons = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("- ")]
    if not reasons:
        return None
    m = _VIOLATED.search(text)
    names = [n.strip() for n in m.group(1).split(",")] if m else []
    out = "\n".join(reasons)
    for name in sorted(filter(None, names), key=len, reverse=True):
        out = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w])", "DIM", out)
    return out


_TORCH_INIT = os.path.join("torch", "__init__.py")
_CHECK_CALL = re.compile(r"\b_check\w*\s*\(")
_CHECK_ADVICE = re.compile(r"\s*\(Could this error message be improved\?.*", re.S)


def _check_message(text: str) -> str:
    return _CHECK_ADVICE.sub("", text).strip().splitlines()[0][:200] if text.strip() else ""


def user_check(chain: Chain) -> Found | None:
    """A torch._check* in the model failed; the cause is the check's own message.

    Where the check really ran (non-strict, and strict's fake run of a symbolic check) the
    error comes out of torch's ``_check_with`` (traceback).  Where Dynamo evaluated a
    static check it reports an Observed exception at the model line, whose source calls
    ``torch._check`` (the source text is the evidence)."""
    for e in reversed(chain.excs):     # the innermost: strict re-raises it with more text
        frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
        if frames and frames[-1].name == "_check_with" and frames[-1].filename.endswith(_TORCH_INIT):
            text = _check_message(text_of(e))
            return Found(f"torch._check: {text}", text)
    for e, gb in chain.gb_types():
        stack = getattr(e, "real_stack", None)
        if gb != "Observed exception" or not stack:
            continue
        line = linecache.getline(stack[-1].filename, stack[-1].lineno or 0)
        observed = chain.observed()
        if _CHECK_CALL.search(line) and observed is not None:
            text = _check_message(observed[1])
            return Found(f"torch._check: {text}", text)
    e = chain.text_has("Expected cond to be True")
    if e is not None:
        return Found("torch._check: Expected cond to be True", "Expected cond to be True")
    return None


_TYPE_IN_MESSAGE = re.compile(r"<class '([\w.]+)'>|UserDefinedObjectVariable\((\w+)\)|"
                              r"unhashable type: '([\w.]+)'")


def unsupported_type(chain: Chain) -> Found | None:
    # pytree flattening of an unknown class fails with text only, and differently per mode:
    # non-strict ValueError (inputs) / RuntimeError (outputs); strict UserError(INVALID_INPUT)
    # (inputs, hence this rule runs before INVALID_INPUT) / a bare AssertionError (outputs).
    # torch 2.11's non-strict export hashes an unknown output's type as a constant first:
    # TypeError "unhashable type: 'X'" (seen on the H100 machine, torch 2.11.0).
    e = chain.text_has("pytree-flattenable", "Unsupported input type", "which is not a known type",
                       "Encountered unrecognized type", "unhashable type: '")
    if e is None:
        return user_error("INVALID_OUTPUT")(chain)
    m = _TYPE_IN_MESSAGE.search(text_of(e))
    name = next(g for g in m.groups() if g).rsplit(".", 1)[-1] if m else "unsupported type"
    return Found(name, f"type {name}")


def spec_violation(chain: Chain) -> Found | None:
    return Found("SpecViolationError") if chain.first(SPEC_VIOLATION) is not None else None


def observed(chain: Chain) -> Found | None:
    """Strict mode's 'Observed exception' means the traced Python itself raised; name what."""
    for e, gb in chain.gb_types():
        if gb == "Observed exception":
            seen = chain.observed()
            return Found(f"Observed exception: {seen[0]}({seen[1]!r})"[:200] if seen else gb)
    return None


def graph_break(chain: Chain) -> Found | None:
    for e, gb in chain.gb_types():
        if gb != "Observed exception":      # an error in the model, not untraceable Python
            explanation = next((ln.strip() for ln in text_of(e).splitlines()
                                if ln.strip().startswith("Explanation:")), "")
            return Found(gb, f"{gb}\n{explanation}")
    return None


# The operating system failing around a model is never the model's fault.  A full or
# read-only disk, or no file handles left, can strike any stage; permissions and a missing
# file only count where exportsweep itself writes files (a model's own code may well open a
# missing file).
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE}
_FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EFBIG}


def _os_errno(chain: Chain, errnos: set[int]) -> Found | None:
    for e in chain.excs:
        if isinstance(e, OSError) and e.errno in errnos:
            name = errno.errorcode.get(e.errno, str(e.errno))
            return Found(name, name)
    return None


def disk_fault(chain: Chain) -> Found | None:
    return _os_errno(chain, _DISK_ERRNOS)


def file_fault(chain: Chain) -> Found | None:
    return _os_errno(chain, _DISK_ERRNOS | _FILE_ERRNOS)


_ALL_USER_ERROR_TYPES = ("DYNAMIC_CONTROL_FLOW", "ANTI_PATTERN", "STANDARD_LIBRARY",
                         "CONSTRAINT_VIOLATION", "DYNAMIC_DIM", "INVALID_INPUT", "INVALID_OUTPUT",
                         "UNSUPPORTED_ALIASED_MUTATED_DYNAMIC_INPUTS")


def error_code(chain: Chain) -> str | None:
    """What torch itself says the error is, for rows that fell back to their stage's category."""
    for match in (user_error(*_ALL_USER_ERROR_TYPES), observed, graph_break):
        found = match(chain)
        if found:
            return found.code
    e = chain.first(GUARD_ON_DATA)
    if e is not None:
        return str(getattr(e, "cond", "")) or None
    for e in chain.excs:
        func = getattr(e, "func", None)          # fake-tensor errors name the operator
        if func is not None:
            return str(func)[:200]
        reason = getattr(e, "reason", None)      # MetadataMismatchError and friends
        if isinstance(reason, str) and reason:
            return reason.splitlines()[0][:200]
    return None
