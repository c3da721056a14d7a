"""The failure taxonomy: one documented table of categories and one ordered table of rules.

Classification happens in the process where the exception lives (many torch
exceptions do not pickle), and only plain strings leave it.  Rules look at
exception *classes* (by fully qualified name, so no private torch module has
to import), their attributes (``UserError.error_type``, ``Unsupported.gb_type``,
``GuardOnDataDependentSymNode.cond``, ``.func``) and the ``__cause__`` /
``__context__`` chain, strict and non-strict forms alike; message text is
matched only where torch offers nothing better, and each such rule says so.
"""

from __future__ import annotations

import errno
import re
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator

from exporter import signature as sig

STAGES: tuple[str, ...] = (
    "build", "eager", "export", "verify", "numerics", "dynamic", "decompose", "serialize", "aoti",
)
STAGE_ORDINAL = {name: i + 1 for i, name in enumerate(STAGES)}


@dataclass(frozen=True)
class Category:
    name: str
    stage: str | None      # where it is normally raised (None: anywhere)
    infra: bool            # True: the orchestrator's fault, not the model's (status ERROR)
    meaning: str
    retried: bool = False  # the supervisor retries the entry on a fresh worker (--max-attempts)


# The infrastructure categories the orchestrator itself assigns (the model's categories come
# from the rules below).
TIMEOUT, WORKER_CRASH, OOM, INFRA_ERROR = "TIMEOUT", "WORKER_CRASH", "OOM", "INFRA_ERROR"


CATEGORIES: tuple[Category, ...] = (
    Category("MODEL_BUILD_ERROR", "build", False,
             "importing the entrypoint or constructing the model raised"),
    Category("EAGER_ERROR", "eager", False, "the eager model raised on its example inputs"),
    Category("EAGER_NONDETERMINISTIC", "eager", False,
             "two eager runs with the same seed disagree, so numerics cannot be judged"),
    Category("INVALID_INPUT", "export", False,
             "torch.export rejected the example inputs or dynamic_shapes spec "
             "(UserError INVALID_INPUT)"),
    Category("CONSTRAINT_VIOLATION", "export", False,
             "a dimension declared dynamic was specialized, or the example lies outside its range"),
    Category("DATA_DEPENDENT_GUARD", "export", False,
             "control flow depends on tensor values (guard on an unbacked symbol such as u0)"),
    Category("DATA_DEPENDENT_OP", "export", False,
             "an operator's output depends on data that fake tensors cannot know (equal, allclose)"),
    Category("GRAPH_BREAK", "export", False,
             "strict mode: Dynamo cannot trace some Python (grouped by Dynamo's gb_type)"),
    Category("MISSING_FAKE_KERNEL", "export", False,
             "a custom operator has no fake (meta) implementation"),
    Category("UNSUPPORTED_TYPE", "export", False,
             "an input or output is of a type torch.export cannot flatten (unregistered pytree)"),
    Category("USER_CHECK_FAILED", "export", False,
             "a torch._check in the model is contradicted by the example inputs"),
    Category("EXPORT_ERROR", "export", False, "any other failure inside torch.export.export"),
    Category("SPEC_VIOLATION", "verify", False, "the ExportedProgram verifier rejected the graph"),
    Category("EXPORTED_RUN_ERROR", "numerics", False,
             "the exported program raised when run on the very inputs it was exported with"),
    Category("OUTPUT_STRUCTURE_MISMATCH", "numerics", False,
             "exported outputs differ from eager in pytree structure, shape or dtype"),
    Category("NUMERIC_MISMATCH", "numerics", False,
             "exported outputs differ from eager beyond the entry's tolerance"),
    Category("DYNAMIC_SHAPE_FAILURE", "dynamic", False,
             "at another size inside the declared range, the program raised or disagreed with eager"),
    Category("DECOMPOSITION_ERROR", "decompose", False,
             "run_decompositions() to core ATen raised, or the decomposed program disagreed"),
    Category("SERIALIZE_ERROR", "serialize", False, "torch.export.save raised"),
    Category("DESERIALIZE_ERROR", "serialize", False,
             "torch.export.load raised in a fresh process (the hidden SerializeError is dug out)"),
    Category("ROUNDTRIP_MISMATCH", "serialize", False,
             "the reloaded program's outputs differ from eager"),
    Category("AOTI_COMPILE_ERROR", "aoti", False,
             "AOTInductor compilation, packaging or loading raised"),
    Category("AOTI_MISMATCH", "aoti", False, "the AOTInductor module's outputs differ from eager"),
    Category(TIMEOUT, None, True, "the entry ran past its deadline"),
    Category(WORKER_CRASH, None, True, "the worker process died (segfault, abort, os._exit, kill)",
             retried=True),
    Category(OOM, None, True, "memory ran out (MemoryError, CUDA OOM, or the memory monitor)",
             retried=True),
    Category(INFRA_ERROR, None, True, "exportsweep itself failed around the entry"),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}

# The category an exception falls back to when no rule matches, by the stage (or step)
# that raised it.  Serialize has two steps so that save and load failures stay apart.
STAGE_FALLBACK = {
    "build": "MODEL_BUILD_ERROR", "eager": "EAGER_ERROR", "export": "EXPORT_ERROR",
    "verify": "SPEC_VIOLATION", "numerics": "EXPORTED_RUN_ERROR",
    "dynamic": "DYNAMIC_SHAPE_FAILURE", "decompose": "DECOMPOSITION_ERROR",
    "serialize": "SERIALIZE_ERROR", "serialize.load": "DESERIALIZE_ERROR",
    "aoti": "AOTI_COMPILE_ERROR",
}


@dataclass(frozen=True)
class Failure:
    """A classified failure: plain strings only, safe to pickle and to write to Parquet."""

    category: str
    stage: str | None                 # None: a worker died or hung as a whole
    exception_type: str | None
    error_code: str | None
    message: str
    signature: str
    user_frame: str | None = None
    traceback: str | None = None      # full text for logs and ``repro``; not a table column

    @classmethod
    def make(cls, category: str, stage: str | None, message: str, *, exception_type: str | None = None,
             error_code: str | None = None, user_frame: str | None = None,
             traceback: str | None = None) -> "Failure":
        return cls(category, stage, exception_type, error_code, sig.bounded_message(message),
                   sig.signature(category, exception_type or "", error_code, message), user_frame,
                   traceback)


# -- reading an exception chain --------------------------------------------------------------

def qualname(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _class_names(exc: BaseException) -> set[str]:
    return {f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__}


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, then its causes and contexts, depth first, without repeats."""
    out: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop(0)
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        stack.extend([e.__cause__, e.__context__])
    return out


@dataclass(frozen=True)
class _Chain:
    excs: list[BaseException]

    def first(self, *classes: str) -> BaseException | None:
        for e in self.excs:
            if _class_names(e) & set(classes):
                return e
        return None

    def user_errors(self, *error_types: str) -> Iterator[BaseException]:
        for e in self.excs:
            kind = getattr(getattr(e, "error_type", None), "name", None)
            if "torch._dynamo.exc.UserError" in _class_names(e) and kind in error_types:
                yield e

    def gb_types(self) -> Iterator[tuple[BaseException, str]]:
        for e in self.excs:
            gb = getattr(e, "gb_type", None)
            if isinstance(gb, str) and "torch._dynamo.exc.Unsupported" in _class_names(e):
                yield e, gb

    def text_has(self, *needles: str) -> BaseException | None:
        for e in self.excs:
            text = str(e)
            if any(n in text for n in needles):
                return e
        return None


USER_ERROR = "torch._dynamo.exc.UserError"
GUARD_ON_DATA = "torch.fx.experimental.symbolic_shapes.GuardOnDataDependentSymNode"
CONSTRAINT_ERRORS = ("torch.fx.experimental.symbolic_shapes.ConstraintViolationError",
                     "torch.utils._sympy.value_ranges.ValueRangeError")
DATA_DEP_OUTPUT = ("torch._subclasses.fake_tensor.DataDependentOutputException",
                   "torch._subclasses.fake_tensor.DynamicOutputShapeException")
NO_FAKE_OP = "torch._subclasses.fake_tensor.UnsupportedOperatorException"


def _user_error(*kinds: str) -> Callable[[_Chain], str | None]:
    def match(chain: _Chain) -> str | None:
        for e in chain.user_errors(*kinds):
            return f"UserErrorType.{e.error_type.name}"   # type: ignore[attr-defined]
        return None
    return match


def _gb(*gb_types: str) -> Callable[[_Chain], str | None]:
    def match(chain: _Chain) -> str | None:
        for _, gb in chain.gb_types():
            if gb in gb_types:
                return gb
        return None
    return match


def _data_dependent_guard(chain: _Chain) -> str | None:
    e = chain.first(GUARD_ON_DATA)
    if e is not None:
        return str(getattr(e, "cond", "")) or "GuardOnDataDependentSymNode"
    return _user_error("ANTI_PATTERN")(chain) or _gb("Data-dependent branching")(chain)


def _data_dependent_op(chain: _Chain) -> str | None:
    e = chain.first(*DATA_DEP_OUTPUT)
    if e is not None:
        return str(getattr(e, "func", "")) or qualname(e)
    return _gb("Data dependent operator", "Dynamic shape operator")(chain)


def _missing_fake(chain: _Chain) -> str | None:
    e = chain.first(NO_FAKE_OP)
    # aten ops raise this too (e.g. nested tensors): only a custom namespace means "no fake".
    if e is not None and getattr(getattr(e, "func", None), "namespace", "aten") != "aten":
        return str(getattr(e, "func", ""))
    found = _gb("Operator does not support running with fake tensors")(chain)
    if found:
        return found
    # torch raises a bare RuntimeError for custom_op without register_fake: text is all we have.
    e = chain.text_has("no fake impl registered", "There was no fake impl registered")
    if e is not None:
        m = re.search(r"CustomOpDef\(([\w.:]+)\)|for (\S+::\S+)", str(e))
        return (m.group(1) or m.group(2)) if m else "no fake impl"
    return None


def _constraint(chain: _Chain) -> str | None:
    # Strict mode wraps a guard on a data-dependent value in UserError(CONSTRAINT_VIOLATION):
    # the guard is the cause (the same root cause is DATA_DEPENDENT_GUARD in non-strict).
    if chain.first(GUARD_ON_DATA) is not None:
        return None
    found = _user_error("CONSTRAINT_VIOLATION", "DYNAMIC_DIM")(chain)
    if found:
        return found
    e = chain.first(*CONSTRAINT_ERRORS)
    return qualname(e).rsplit(".", 1)[-1] if e is not None else None


def _user_check(chain: _Chain) -> str | None:
    # torch._check raises a plain RuntimeError whose only mark is its text.
    return "torch._check" if chain.text_has("Expected cond to be True") else None


_TYPE_IN_MESSAGE = re.compile(r"<class '([\w.]+)'>|UserDefinedObjectVariable\((\w+)\)|"
                              r"unhashable type: '([\w.]+)'")


def _unsupported_type(chain: _Chain) -> str | None:
    # pytree flattening of an unknown class fails with text only, and differently per mode:
    # non-strict ValueError (inputs) / RuntimeError (outputs); strict UserError(INVALID_INPUT)
    # (inputs, hence this rule runs before INVALID_INPUT) / a bare AssertionError (outputs).
    # torch 2.11's non-strict export hashes an unknown output's type as a constant first:
    # TypeError "unhashable type: 'X'" (seen on the H100 machine, torch 2.11.0).
    e = chain.text_has("pytree-flattenable", "Unsupported input type", "which is not a known type",
                       "Encountered unrecognized type", "unhashable type: '")
    if e is None:
        return _user_error("INVALID_OUTPUT")(chain)
    m = _TYPE_IN_MESSAGE.search(str(e))
    return next(g for g in m.groups() if g).rsplit(".", 1)[-1] if m else "unsupported type"


def _spec_violation(chain: _Chain) -> str | None:
    e = chain.first("torch._export.verifier.SpecViolationError")
    return "SpecViolationError" if e is not None else None


_OBSERVED = re.compile(r"raised exception (\w+\(.*?\))\s*$", re.M)


def _observed(chain: _Chain) -> str | None:
    """Strict mode's 'Observed exception' means the traced Python itself raised; name what."""
    for e, gb in chain.gb_types():
        if gb == "Observed exception":
            m = _OBSERVED.search(str(e))
            return f"Observed exception: {m.group(1)[:160]}" if m else gb
    return None


def _graph_break(chain: _Chain) -> str | None:
    for _, gb in chain.gb_types():
        if gb != "Observed exception":      # an error in the model, not untraceable Python
            return gb
    return None


# The operating system failing around a model is never the model's fault.  A full or
# read-only disk, or no file handles left, can strike any stage; permissions and a missing
# file only count where exportsweep itself writes files (a model's own code may well open a
# missing file).
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE}
_FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EFBIG}


def _os_errno(chain: _Chain, errnos: set[int]) -> str | None:
    for e in chain.excs:
        if isinstance(e, OSError) and e.errno in errnos:
            return errno.errorcode.get(e.errno, str(e.errno))
    return None


def _disk_fault(chain: _Chain) -> str | None:
    return _os_errno(chain, _DISK_ERRNOS)


def _file_fault(chain: _Chain) -> str | None:
    return _os_errno(chain, _DISK_ERRNOS | _FILE_ERRNOS)


@dataclass(frozen=True)
class Rule:
    category: str
    stages: tuple[str, ...]
    match: Callable[[_Chain], str | None]
    evidence: str


# Ordered: the first rule that matches wins.  More specific causes come before the
# catch-all Dynamo graph break, because Dynamo wraps many of them in Unsupported.
RULES: tuple[Rule, ...] = (
    Rule(INFRA_ERROR, STAGES, _disk_fault,
         "an OSError with errno ENOSPC, EDQUOT, EROFS, EIO, EMFILE or ENFILE anywhere in the "
         "chain: the machine, not the model (error_code is the errno's name)"),
    Rule(INFRA_ERROR, ("serialize", "aoti"), _file_fault,
         "in the stages where exportsweep writes files: also EACCES, EPERM, ENOENT, ENOTDIR, "
         "EFBIG (a temporary folder gone, an unwritable artifacts folder); torch's own writer "
         "reports a full disk without an errno, so the pipeline then probes the folder itself"),
    Rule("UNSUPPORTED_TYPE", ("export",), _unsupported_type,
         "text 'Unsupported input type' (ValueError) / 'not supported or pytree-flattenable' "
         "(strict UserError INVALID_INPUT) / 'which is not a known type' (RuntimeError) / "
         "'Encountered unrecognized type' (strict AssertionError); UserError(INVALID_OUTPUT); "
         "torch 2.11 non-strict outputs: TypeError 'unhashable type'"),
    Rule("INVALID_INPUT", ("export",), _user_error("INVALID_INPUT"),
         "UserError(error_type=INVALID_INPUT), both modes"),
    Rule("SPEC_VIOLATION", ("export", "verify"), _spec_violation,
         "SpecViolationError, raised by ep.validate() or by export's own verifier (strict)"),
    Rule("CONSTRAINT_VIOLATION", ("export",), _constraint,
         "UserError(CONSTRAINT_VIOLATION | DYNAMIC_DIM); bare ConstraintViolationError or "
         "ValueRangeError (non-strict, example outside range); not when the chain holds a "
         "GuardOnDataDependentSymNode: strict wraps data-dependent guards in this UserError"),
    Rule("DATA_DEPENDENT_GUARD", ("export",), _data_dependent_guard,
         "GuardOnDataDependentSymNode (cond); strict: UserError(ANTI_PATTERN) or "
         "Unsupported gb_type 'Data-dependent branching'"),
    Rule("DATA_DEPENDENT_OP", ("export",), _data_dependent_op,
         "DataDependentOutputException / DynamicOutputShapeException (func); strict: "
         "Unsupported gb_type 'Data dependent operator'"),
    Rule("MISSING_FAKE_KERNEL", ("export",), _missing_fake,
         "UnsupportedOperatorException (func); Unsupported gb_type 'Operator does not support "
         "running with fake tensors'; text 'no fake impl registered' (custom_op)"),
    Rule("USER_CHECK_FAILED", ("export",), _user_check,
         "text 'Expected cond to be True' anywhere in the chain (torch._check)"),
    Rule("GRAPH_BREAK", ("export",), _graph_break,
         "any other torch._dynamo.exc.Unsupported (strict): error_code is its gb_type, except "
         "'Observed exception' (the model's own code raised), which falls to EXPORT_ERROR"),
)


def error_code_of(chain: _Chain) -> str | None:
    """What torch itself says the error is, for rows that fell back to their stage's category."""
    for match in (_user_error(*_ALL_USER_ERROR_TYPES), _observed, _graph_break):
        found = match(chain)
        if found:
            return found
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


_ALL_USER_ERROR_TYPES = ("DYNAMIC_CONTROL_FLOW", "ANTI_PATTERN", "STANDARD_LIBRARY",
                         "CONSTRAINT_VIOLATION", "DYNAMIC_DIM", "INVALID_INPUT", "INVALID_OUTPUT",
                         "UNSUPPORTED_ALIASED_MUTATED_DYNAMIC_INPUTS")


def classify_exception(exc: BaseException, stage: str) -> Failure:
    """Classify an exception raised in ``stage`` (``serialize.load`` for the load step)."""
    chain = _Chain(exception_chain(exc))
    base_stage = stage.split(".")[0]
    category, code = None, None
    if chain.first("builtins.MemoryError", "torch.OutOfMemoryError"):
        category = OOM
    else:
        for rule in RULES:
            if base_stage in rule.stages:
                code = rule.match(chain)
                if code:
                    category = rule.category
                    break
    if category is None:
        category = STAGE_FALLBACK.get(stage, STAGE_FALLBACK.get(base_stage, INFRA_ERROR))
        code = error_code_of(chain)
    return Failure.make(category, base_stage, _describe(exc), exception_type=qualname(exc),
                        error_code=code, user_frame=sig.user_frame(chain.excs),
                        traceback=_format_traceback(exc))


def _format_traceback(exc: BaseException) -> str | None:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001 - same: never let reporting fail the row
        return None


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception as inner:  # noqa: BLE001 - a model's exception may not even print
        return f"<{qualname(exc)} whose message cannot be read: {qualname(inner)}>"
    if not text and getattr(exc, "cond", None) is not None:
        text = f"Could not guard on data-dependent expression {exc.cond}"  # type: ignore
    return text or qualname(exc)
