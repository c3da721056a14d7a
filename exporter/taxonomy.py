"""The failure taxonomy: one documented table of categories and one ordered table of rules.

Classification happens in the process where the exception lives (many torch
exceptions do not pickle), and only plain strings leave it.  Each rule names the
evidence it reads (:mod:`exporter.evidence` reads it); the first rule that matches
gives the category, torch's own error code, and the mode-independent cause that the
signature hashes, so that one root cause is one category and one cluster in strict
and non-strict export alike.  Whatever no rule matches falls back to its stage's
category, with the innermost exception of the chain as its cause.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from exporter import evidence as ev
from exporter import signature as sig

STAGES: tuple[str, ...] = (
    "build", "eager", "export", "verify", "numerics", "dynamic", "decompose", "serialize", "aoti",
)
STAGE_ORDINAL = {name: i + 1 for i, name in enumerate(STAGES)}
# Not a stage of one (entry, mode): after serialize, a program saved in one environment is
# loaded and run in each other environment of the run (its rows are a table of their own).
CROSSLOAD = "crossload"


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
# The cross-version stage's categories, and the fresh process's categories that mean "it
# loads and runs, and disagrees" there (any other failure means another version cannot use it).
CROSS_VERSION_LOAD_ERROR, CROSS_VERSION_MISMATCH = "CROSS_VERSION_LOAD_ERROR", "CROSS_VERSION_MISMATCH"
RELOAD_MISMATCHES = frozenset({"ROUNDTRIP_MISMATCH", "AOTI_MISMATCH"})


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
             "a custom operator has no usable fake (meta) implementation: none is "
             "registered, or it raises where the real kernel does not"),
    Category("UNSUPPORTED_TYPE", "export", False,
             "an input or output is of a type torch.export cannot flatten (unregistered pytree)"),
    Category("USER_CHECK_FAILED", "export", False,
             "a torch._check* in the model (torch's message or its own) is contradicted by "
             "the example inputs"),
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
    Category(CROSS_VERSION_LOAD_ERROR, CROSSLOAD, False,
             "a program saved in one environment (another torch) raised loading or running "
             "in another"),
    Category(CROSS_VERSION_MISMATCH, CROSSLOAD, False,
             "a program saved in one environment loads and runs in another, and its outputs "
             "differ from eager"),
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
             traceback: str | None = None, cause: str | None = None) -> "Failure":
        """``cause`` is the mode-independent evidence the signature hashes; without it, the
        exception type, error code and message stand for it (failures exportsweep finds
        itself, such as a numeric mismatch, have no torch evidence to read)."""
        if cause is None:
            cause = "\n".join(p for p in (exception_type, error_code, sig.message_head(message)) if p)
        return cls(category, stage, exception_type, error_code, sig.bounded_message(message),
                   sig.signature(category, cause), user_frame, traceback)


@dataclass(frozen=True)
class Rule:
    category: str
    stages: tuple[str, ...]
    match: ev.Matcher
    evidence: str


# Ordered: the first rule that matches wins.  More specific causes come before the
# catch-all Dynamo graph break, because Dynamo wraps many of them in Unsupported.
RULES: tuple[Rule, ...] = (
    Rule(INFRA_ERROR, STAGES, ev.disk_fault,
         "an OSError with errno ENOSPC, EDQUOT, EROFS, EIO, EMFILE or ENFILE anywhere in the "
         "chain: the machine, not the model (error_code is the errno's name)"),
    Rule(INFRA_ERROR, ("serialize", "aoti"), ev.file_fault,
         "in the stages where exportsweep writes files: also EACCES, EPERM, ENOENT, ENOTDIR, "
         "EFBIG (a temporary folder gone, an unwritable artifacts folder); torch's own writer "
         "reports a full disk without an errno, so the pipeline then probes the folder itself"),
    Rule("UNSUPPORTED_TYPE", ("export",), ev.unsupported_type,
         "text 'Unsupported input type' (ValueError) / 'not supported or pytree-flattenable' "
         "(strict UserError INVALID_INPUT) / 'which is not a known type' (RuntimeError) / "
         "'Encountered unrecognized type' (strict AssertionError); UserError(INVALID_OUTPUT); "
         "torch 2.11 non-strict outputs: TypeError 'unhashable type'"),
    Rule("INVALID_INPUT", ("export",), ev.user_error("INVALID_INPUT"),
         "UserError(error_type=INVALID_INPUT), both modes"),
    Rule("SPEC_VIOLATION", ("export", "verify"), ev.spec_violation,
         "SpecViolationError, raised by ep.validate() or by export's own verifier (strict)"),
    Rule("CONSTRAINT_VIOLATION", ("export",), ev.constraint,
         "UserError(CONSTRAINT_VIOLATION | DYNAMIC_DIM); bare ConstraintViolationError or "
         "ValueRangeError (non-strict, example outside range); not when the chain holds a "
         "GuardOnDataDependentSymNode: strict wraps data-dependent guards in this UserError"),
    Rule("DATA_DEPENDENT_GUARD", ("export",), ev.data_dependent_guard,
         "GuardOnDataDependentSymNode anywhere in the chain, also inside strict's "
         "UserError(CONSTRAINT_VIOLATION) (cause: the guard expression cond); a guard raised "
         "under a torch-function call of Tensor.__bool__ (traceback frame locals) and strict's "
         "Unsupported gb_type 'Data-dependent branching' are both `if <tensor>:` (cause: a "
         "branch on a tensor's truth value); strict UserError(ANTI_PATTERN)"),
    Rule("DATA_DEPENDENT_OP", ("export",), ev.data_dependent_op,
         "DataDependentOutputException / DynamicOutputShapeException (cause: its operator, "
         "also when strict wraps it); strict: Unsupported gb_type 'Data dependent operator'"),
    Rule("MISSING_FAKE_KERNEL", ("export",), ev.missing_fake,
         "UnsupportedOperatorException of a non-aten operator; text 'no fake impl registered' "
         "(custom_op); an error raised beneath fake-tensor dispatch of a non-aten operator, "
         "i.e. by its fake kernel (traceback frame locals; strict wraps it in a graph break); "
         "Unsupported gb_type 'Operator does not support running with fake tensors' (cause: "
         "the operator as ns::name in every form)"),
    Rule("USER_CHECK_FAILED", ("export",), ev.user_check,
         "an error raised by torch's _check_with (innermost traceback frame): torch._check* "
         "with the default or the model's own message; strict's Observed exception at a "
         "model line whose source calls torch._check (source text); text 'Expected cond to "
         "be True' (cause: the check's message)"),
    Rule("GRAPH_BREAK", ("export",), ev.graph_break,
         "any other torch._dynamo.exc.Unsupported (strict): error_code is its gb_type (cause: "
         "gb_type and Dynamo's explanation), except 'Observed exception' (the model's own "
         "code raised), which falls to EXPORT_ERROR"),
)


def classify_exception(exc: BaseException, stage: str, *,
                       model_line: str | None = None) -> Failure:
    """Classify an exception raised in ``stage`` (``serialize.load`` for the load step).

    ``model_line`` is the user frame to report when the chain shows no model frame (torch
    rejected inputs or outputs without running a model line)."""
    chain = ev.Chain(ev.exception_chain(exc))
    base_stage = stage.split(".")[0]
    category, found = None, None
    memory = chain.first("builtins.MemoryError", "torch.OutOfMemoryError")
    if memory is not None:
        category, found = OOM, ev.Found("", ev.qualname(memory))
    else:
        for rule in RULES:
            if base_stage in rule.stages:
                found = rule.match(chain)
                if found:
                    category = rule.category
                    break
    if category is None:
        category = STAGE_FALLBACK.get(stage, STAGE_FALLBACK.get(base_stage, INFRA_ERROR))
        found = ev.Found(ev.error_code(chain) or "")
    assert found is not None     # every path above sets it; for type checkers
    return Failure.make(category, base_stage, _describe(exc), exception_type=ev.qualname(exc),
                        error_code=found.code or None,
                        user_frame=sig.user_frame(chain.excs) or model_line,
                        traceback=_format_traceback(exc),
                        cause=found.cause if found.cause is not None else chain.root_cause())


def _format_traceback(exc: BaseException) -> str | None:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001 - same: never let reporting fail the row
        return None


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception as inner:  # noqa: BLE001 - a model's exception may not even print
        return f"<{ev.qualname(exc)} whose message cannot be read: {ev.qualname(inner)}>"
    if not text and getattr(exc, "cond", None) is not None:
        text = f"Could not guard on data-dependent expression {exc.cond}"  # type: ignore
    return text or ev.qualname(exc)
