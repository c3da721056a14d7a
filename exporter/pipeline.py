"""The export pipeline: small stage functions over one :class:`Record` per (entry, mode).

``run_entry`` is the whole public surface: a plain function that takes an
:class:`Entry` and returns plain records, one per mode.  Build and the eager
reference are shared by the modes (they are the slow, mode-independent part);
every mode then works on deep copies of the pristine model and inputs, so one
mode's side effects (mutated buffers, mutated inputs) cannot leak into another.
The first failing stage stops that mode; later stages stay ``not_reached``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import errno
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import structlog
import torch

from exporter import draft, dynamism, graphinfo, localize, numerics
from exporter.families import noop
from exporter.freshload import (FreshLoader, LoadRequest, LoadResult, check_in_process,
                                 pytree_owner_modules)
from exporter.loader import Case, build_case
from exporter.record import Record, new_record
from exporter.signature import definition_frame
from exporter.spec import Entry, PipelineOptions
from exporter.taxonomy import CATEGORY_BY_NAME, INFRA_ERROR, Failure, classify_exception

log = structlog.get_logger("exportsweep.pipeline")


class StageFailed(Exception):
    """A stage found a failure that is not an exception (e.g. a numeric mismatch)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class StageSkipped(Exception):
    """The stage does not apply to this entry (reason in the message)."""


class EntryTimeout(BaseException):
    """Raised by the in-process deadline; a BaseException so model code cannot swallow it."""


@dataclass
class Shared:
    """What the modes of one entry share: the pristine case and the eager reference."""

    entry: Entry
    options: PipelineOptions
    device: str
    case: Case | None = None
    eager_out: Any = None
    failure: Failure | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    param_count: int | None = None
    workdir: str = ""
    loader: FreshLoader | None = None    # None: reload in this process (repro)
    running: str | None = None           # the shared stage in progress, for timeouts
    model_line: str | None = None        # where the model's forward is defined
    eager_at_size: dict[Any, Any] = field(default_factory=dict)   # dynamic stage's references
    eager64: dict[Any, Any] = field(default_factory=dict)   # float64 references, when asked for
    decomposed: dict[Any, Decomposed] = field(default_factory=dict)  # program key -> its pass

    def fresh_inputs(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        assert self.case is not None
        return copy.deepcopy(self.case.args), copy.deepcopy(self.case.kwargs)

    def fresh_model(self) -> torch.nn.Module:
        assert self.case is not None
        return copy.deepcopy(self.case.model)


@dataclass
class Decomposed:
    """A decompose stage that passed, kept for the other mode: when that mode exported the same
    program (up to the order of its lifted inputs, node names and symbol numbering, see
    graphinfo.program_key) over the same tensors, its decomposition is this one."""

    program: Any                   # the exported program that was decomposed
    placeholders: int              # its placeholder count
    node_count: int                # the decomposed program's node count
    non_core_ops: list[str]
    graph_outputs: dict[str, int]
    float64_judged: list[str]      # the decompose check passed against eager in float64

    @classmethod
    def of(cls, ep: Any, record: Record) -> "Decomposed":
        return cls(ep, graphinfo.placeholder_count(ep), record.decomposed_node_count or 0,
                   list(record.non_core_ops), dict(record.graph_outputs),
                   [j for j in record.float64_judged if j.startswith("decompose:")])

    def describe(self, ep: Any, record: Record) -> None:
        # Unused lifted inputs (non-strict lifts BatchNorm's num_batches_tracked in eval mode,
        # strict does not) stay placeholders of the decomposed program, one node each.
        record.decomposed_node_count = (self.node_count - self.placeholders
                                        + graphinfo.placeholder_count(ep))
        record.non_core_ops = list(self.non_core_ops)
        record.graph_outputs = dict(self.graph_outputs)
        record.float64_judged.extend(self.float64_judged)


@dataclass
class ModeRun:
    shared: Shared
    record: Record
    strict: bool
    ep: Any = None                 # torch.export.ExportedProgram once exported
    deadline: float | None = None  # time.monotonic() deadline, for child processes
    module: Any = None             # ep.module(), made once for numerics and dynamic

    def remaining(self) -> float:
        return max(1.0, (self.deadline or time.monotonic() + 3600) - time.monotonic())


def run_entry(entry: Entry, options: PipelineOptions = PipelineOptions(), *,
              loader: FreshLoader | None = None, repro: Callable[[str], str] | None = None,
              modes: tuple[str, ...] | None = None, logger: Any = None) -> list[Record]:
    """Run the whole pipeline for every mode of ``entry``; never raises for model failures.

    ``loader`` is the pristine process that reloads artifacts; pass one that lives as long
    as the sweep (without it, one is started and closed for this entry when the options
    ask for a fresh-process load).
    """
    if loader is None and options.load_in_fresh_process:
        with FreshLoader() as own:
            return run_entry(entry, options, loader=own, repro=repro, modes=modes, logger=logger)
    logger = (logger or log).bind(entry=entry.name)
    modes = modes or entry.modes
    if options.discover_dynamic and entry.family != noop.SOURCE:
        entry = replace(entry, dynamic_shapes="discover")
    device = _device(entry, options) if entry.family != noop.SOURCE else "cpu"
    records = [new_record(entry, m, device or "cuda") for m in modes]
    started = time.time()
    for r in records:
        r.started_at = started
        r.repro = repro(r.mode) if repro else None
    if entry.family == noop.SOURCE:
        return _noop(entry, records)
    if device is None:
        for r in records:
            r.skip("entry needs CUDA and none is available")
            r.finished_at = time.time()
        return records
    shared = Shared(entry, options, device, loader=loader if options.load_in_fresh_process
                    else None)
    deadline = time.monotonic() + entry.timeout_s
    with tempfile.TemporaryDirectory(prefix="exportsweep-") as workdir, \
            _rss_sampler() as peak_rss, \
            _deadline(entry.timeout_s if options.in_process_deadline else None) as armed:
        shared.workdir = workdir
        pending = list(records)
        try:
            _run_shared(shared, logger)
            for record in records:
                run = ModeRun(shared, record, strict=record.mode == "strict",
                              deadline=deadline if armed else None)
                _run_mode(run, logger.bind(mode=record.mode))
                record.peak_rss_mb = peak_rss()
                record.finished_at = time.time()
                pending.remove(record)
        except EntryTimeout:
            elapsed = time.monotonic() - (deadline - entry.timeout_s)
            for record in pending:
                stage = shared.running or _current_stage(record)
                record.seconds.update(shared.seconds)
                record.fail(Failure.make("TIMEOUT", stage, f"entry ran past its deadline of "
                                         f"{entry.timeout_s:g} s ({elapsed:.1f} s elapsed)",
                                         exception_type="TimeoutError"))
                record.peak_rss_mb = peak_rss()
                record.finished_at = time.time()
    for record in records:
        record.apply_expectation(entry.expectation(record.mode))
        # "serialize.load" is a part of "serialize", not a stage of its own
        record.total_s = round(sum(v for k, v in record.seconds.items() if "." not in k), 4)
    return records


def _noop(entry: Entry, records: list[Record]) -> list[Record]:
    """The noop family measures the orchestrator: no torch work, a passing row per mode."""
    time.sleep(float(entry.kwargs.get("sleep_s", 0.0)))
    for record in records:
        record.stage_status = dict.fromkeys(record.stage_status, "skipped")
        record.finished_at = time.time()
        record.apply_expectation(entry.expectation(record.mode))
    return records


# -- shared stages ----------------------------------------------------------------------------

def _run_shared(shared: Shared, logger: Any) -> None:
    for name, stage in (("build", stage_build), ("eager", stage_eager)):
        t0 = time.perf_counter()
        shared.running = name
        try:
            stage(shared)
        except StageFailed as exc:
            shared.failure = exc.failure
        except Exception as exc:  # noqa: BLE001 - every model failure becomes a row
            shared.failure = classify_exception(exc, name)
        finally:
            shared.seconds[name] = round(time.perf_counter() - t0, 4)
        shared.running = None       # not in finally: a timeout must still see the stage
        logger.debug("stage", stage=name, seconds=shared.seconds[name],
                     failed=shared.failure is not None)
        if shared.failure is not None:
            return


def stage_build(shared: Shared) -> None:
    torch.manual_seed(shared.entry.seed)
    case = build_case(shared.entry)
    case.model.train(shared.entry.train)
    if shared.device != "cpu":
        case.model.to(shared.device)
        case.args, case.kwargs = _to_device((case.args, case.kwargs), shared.device)
    shared.case = case
    shared.param_count = sum(p.numel() for p in case.model.parameters())
    shared.model_line = definition_frame(case.model)


def stage_eager(shared: Shared) -> None:
    first = _run_eager(shared, *shared.fresh_inputs())
    second = _run_eager(shared, *shared.fresh_inputs())
    tol = shared.entry.tolerance
    cmp = numerics.compare(first, second, tol.atol, tol.rtol)
    if not cmp.ok:
        raise StageFailed(Failure.make(
            "EAGER_NONDETERMINISTIC", "eager",
            f"two eager runs with seed {shared.entry.seed} disagree: {cmp.detail}"))
    shared.eager_out = first


def _eager_at(shared: Shared, args: tuple[Any, ...], kwargs: dict[str, Any],
              example: int | None = None) -> Any:
    """Eager outputs for other inputs (the example's tiled to other sizes, or the entry's
    ``example``-th other input set), computed once per entry and shared by the modes."""
    key = _inputs_key(args, kwargs, example)
    if key not in shared.eager_at_size:
        shared.eager_at_size[key] = _run_eager(shared, *copy.deepcopy((args, kwargs)))
    return shared.eager_at_size[key]


def _inputs_key(args: tuple[Any, ...], kwargs: dict[str, Any], example: int | None) -> Any:
    leaves, _ = numerics.pytree.tree_flatten((args, kwargs))
    return (example, tuple(tuple(x.shape) if isinstance(x, torch.Tensor) else repr(x)
                           for x in leaves))


def _reference64(shared: Shared, args: tuple[Any, ...], kwargs: dict[str, Any],
                 example: int | None = None) -> numerics.Reference64:
    """Eager in float64 on these inputs, for comparisons that fail in float32 (see
    exporter.numerics): run at most once per entry and inputs, only when first asked for."""
    key = _inputs_key(args, kwargs, example)

    def reference() -> list[Any] | str:
        if key not in shared.eager64:
            shared.eager64[key] = _run_eager64(shared, args, kwargs)
        return shared.eager64[key]
    return reference


def _run_eager64(shared: Shared, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | str:
    def widen(x: Any) -> Any:
        return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
    try:
        model = shared.fresh_model().double()      # floating parameters and buffers only
        args64, kwargs64 = numerics.pytree.tree_map(widen, copy.deepcopy((args, kwargs)))
        torch.manual_seed(shared.entry.seed)
        with torch.no_grad():
            out = model(*args64, **kwargs64)
        del model
    except Exception as exc:  # noqa: BLE001 - a model that cannot run in float64 keeps float32's verdict
        return f"eager fails in float64: {type(exc).__name__}"
    return numerics.flatten(out)[0]


def _run_eager(shared: Shared, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    torch.manual_seed(shared.entry.seed)
    with torch.no_grad():
        return shared.fresh_model()(*args, **kwargs)


# -- per-mode stages --------------------------------------------------------------------------

def _run_mode(run: ModeRun, logger: Any) -> None:
    record, shared = run.record, run.shared
    record.param_count = shared.param_count
    for name in ("build", "eager"):
        if name in shared.seconds:
            record.seconds[name] = shared.seconds[name]
            record.passed(name)
    if shared.failure is not None:
        record.fail(shared.failure)
        return
    for name, stage in MODE_STAGES:
        t0 = time.perf_counter()
        record.stage_status[name] = "running"
        try:
            stage(run)
            record.passed(name)
        except StageSkipped as exc:
            record.skipped(name)
            logger.debug("stage skipped", stage=name, reason=str(exc))
        except StageFailed as exc:
            record.fail(exc.failure)
        except Exception as exc:  # noqa: BLE001 - every model failure becomes a row
            model_line = shared.model_line if name == "export" else None
            record.fail(_blame_the_disk(classify_exception(exc, name, model_line=model_line),
                                        shared))
            if name == "export" and shared.options.draft_export and shared.case is not None:
                draft.enrich(record, lambda: (shared.fresh_model(), *shared.fresh_inputs()),
                             shared.case.dynamic_shapes, run.strict)
            if name == "export" and (shared.options.localize or shared.entry.localize):
                _localize(run)
        finally:
            record.seconds[name] = round(time.perf_counter() - t0, 4)
        logger.debug("stage", stage=name, seconds=record.seconds[name],
                     status=record.stage_status[name])
        if record.failed_stage is not None:
            break
    for name, state in record.stage_status.items():
        if state == "running":
            record.stage_status[name] = "not_reached"


def _localize(run: ModeRun) -> None:
    """Find the smallest submodules whose export fails on their own, within the deadline
    (most of what is left of it: the row must still be written)."""
    shared, record = run.shared, run.record
    category = CATEGORY_BY_NAME.get(record.category or "")
    if shared.case is None or category is None or category.infra:
        return
    t0 = time.monotonic()
    found = localize.localize(shared.case.model, shared.fresh_inputs, run.strict,
                              record.category, deadline=t0 + 0.8 * run.remaining(),
                              seed=shared.entry.seed)
    record.localized_paths = [p.path for p in found.failing]
    record.localized_classes = [p.cls for p in found.failing]
    record.localized_categories = [p.category or "" for p in found.failing]
    record.localized_passing = [p.path for p in found.passing]
    record.localize_s = round(time.monotonic() - t0, 3)
    record.localize_complete = found.complete


def stage_export(run: ModeRun) -> None:
    """Export the very object the entrypoint built, as its user would: a deep copy is not
    the same model (it materialises lazy views such as a conjugate buffer, whose loss in
    serialization the user would then hit and we would not). Its state is put back after
    each mode, so the modes export the same model; eager references run on copies."""
    shared = run.shared
    assert shared.case is not None
    args, kwargs = shared.fresh_inputs()
    model = shared.case.model
    asked = dynamism.requested(model, args, kwargs, shared.case.dynamic_shapes)
    run.record.dynamic_requested = [f"{a.label} ({a.asked})" for a in asked]
    # torch decides AUTO dims silently: its shape log says which it fixed, and why.
    listen = any(a.asked == "auto" for a in asked)
    try:
        with _module_restored(model), \
                (dynamism.captured() if listen else contextlib.nullcontext()) as log:
            run.ep = torch.export.export(model, args, kwargs,
                                         dynamic_shapes=shared.case.dynamic_shapes,
                                         strict=run.strict)
    except Exception as exc:
        _try_suggested_fix(run, exc, asked)
        raise
    if asked:
        found = dynamism.describe(run.ep, model, args, kwargs, asked, log)
        run.record.dynamic_achieved = found.achieved
        run.record.dynamic_specialized = found.specialized
        run.record.dynamic_relations = found.relations


def _try_suggested_fix(run: ModeRun, exc: Exception, asked: list[Any]) -> None:
    """A violated dynamic-shapes spec: export once more with torch's suggested fix and, when
    that exports, record it as a manifest snippet with what it achieves. The row keeps the
    original failure: the spec the user wrote does not hold."""
    shared = run.shared
    assert shared.case is not None
    if not asked or classify_exception(exc, "export").category != "CONSTRAINT_VIOLATION":
        return
    args, kwargs = shared.fresh_inputs()
    model = shared.case.model
    refined = dynamism.suggested_spec(exc, dynamism.plain_spec(shared.case.dynamic_shapes,
                                                               model, args, kwargs))
    if refined is None:
        return
    try:
        with _module_restored(model):
            ep = torch.export.export(model, args, kwargs, dynamic_shapes=refined,
                                     strict=run.strict)
    except Exception:  # noqa: BLE001 - the suggestion does not export either: nothing to offer
        return
    run.record.dynamic_suggested = dynamism.render_spec(refined, model, args, kwargs)
    again = dynamism.requested(model, args, kwargs, refined)
    found = dynamism.describe(ep, model, args, kwargs, again, None)
    run.record.dynamic_achieved = found.achieved
    run.record.dynamic_relations = found.relations


def stage_verify(run: ModeRun) -> None:
    run.ep.validate()
    graphinfo.describe(run.ep, run.record)


def stage_numerics(run: ModeRun) -> None:
    out = _run_program(run, run.ep, *run.shared.fresh_inputs())
    cmp = _compare(run, out, "numerics")
    run.record.max_abs_err, run.record.max_rel_err = cmp.max_abs_err, cmp.max_rel_err
    if not cmp.structure_ok:
        raise StageFailed(Failure.make("OUTPUT_STRUCTURE_MISMATCH", "numerics", cmp.detail))
    if not cmp.values_ok:
        raise StageFailed(Failure.make("NUMERIC_MISMATCH", "numerics", cmp.detail))


def stage_dynamic(run: ModeRun) -> None:
    """The program against eager on the entry's other example sets, then at other sizes of
    its dynamic dims (with discovery: each range's edges and random sizes inside it)."""
    shared, record = run.shared, run.record
    assert shared.case is not None
    case = shared.case
    for k, (more_args, more_kwargs) in enumerate(case.examples, 1):
        label = f"example {k}: {dynamism.shapes_label(case.model, more_args, more_kwargs)}"
        _check_at(run, label, more_args, more_kwargs, example=k)
    leaves, in_spec = numerics.pytree.tree_flatten((case.args, case.kwargs))
    declared = numerics.declared_ranges(case.model, case.args, case.kwargs,
                                        dynamism.plain_spec(case.dynamic_shapes, case.model,
                                                            case.args, case.kwargs))
    plan = numerics.plan_sizes(run.ep, leaves, shared.options.dynamic_sizes, declared,
                               edges=shared.entry.dynamic_shapes == "discover",
                               seed=shared.entry.seed)
    record.dynamic_dims = [f"{s} in [{lo}, {'inf' if hi == float('inf') else int(hi)}]"
                           for s, (lo, hi) in plan.ranges.items()]
    if not plan.variants and not case.examples:
        raise StageSkipped(plan.reason)
    names = dynamism.symbol_names(run.ep, case.model, case.args, case.kwargs)
    for sizes in plan.variants:
        label = ",".join(f"{names.get(s, s)}={v}" for s, v in sizes.items())
        new_args, new_kwargs = numerics.pytree.tree_unflatten(
            numerics.resize_leaves(run.ep, leaves, sizes, declared), in_spec)
        _check_at(run, label, new_args, new_kwargs)


def _check_at(run: ModeRun, label: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              example: int | None = None) -> None:
    """The program vs eager on other inputs: a DYNAMIC_SHAPE_FAILURE when either raises or
    they disagree."""
    run.record.dynamic_sizes_tested.append(label)
    try:
        expected = _eager_at(run.shared, args, kwargs, example)
    except Exception as exc:  # noqa: BLE001
        # The model itself cannot run on these inputs: the declared range is wrong.
        raise _dynamic_failure(exc, "eager fails", label) from None
    try:
        actual = _run_program(run, run.ep, *copy.deepcopy((args, kwargs)))
    except Exception as exc:  # noqa: BLE001
        raise _dynamic_failure(exc, "the program fails", label) from None
    tol = run.shared.entry.tolerance
    cmp = numerics.compare(expected, actual, tol.atol, tol.rtol,
                           _reference64(run.shared, args, kwargs, example))
    _note_float64(run, f"dynamic at {label}", cmp.float64)
    if not cmp.ok:
        raise StageFailed(Failure.make(
            "DYNAMIC_SHAPE_FAILURE", "dynamic", f"at {label}: {cmp.detail}",
            cause="differs from eager at another size: " + cmp.detail.split(":", 1)[0]))


def _dynamic_failure(exc: Exception, what: str, label: str) -> StageFailed:
    """An exception at another size is a DYNAMIC_SHAPE_FAILURE, keeping torch's details; the
    sizes stay out of the signature (one cause, one cluster, whatever the sizes tried)."""
    f = classify_exception(exc, "dynamic")
    return StageFailed(Failure.make("DYNAMIC_SHAPE_FAILURE", "dynamic",
                                    f"{what} at {label}: {f.message}",
                                    exception_type=f.exception_type, error_code=f.error_code,
                                    user_frame=f.user_frame, traceback=f.traceback,
                                    cause=f"{what}: {f.category} {f.signature}"))


def stage_decompose(run: ModeRun) -> None:
    """Decompose to core ATen and compare with eager.  The two modes often export the same
    program (vision models: the same graph with its lifted inputs in another order); its
    decomposition then passed already, and is not traced a second time."""
    share = run.shared.options.share_between_modes
    key = graphinfo.program_key(run.ep) if share else None
    done = run.shared.decomposed.get(key) if key is not None else None
    if done is not None and graphinfo.same_state(done.program, run.ep):
        done.describe(run.ep, run.record)
        return
    table = _decomposition_table() if share else None
    decomposed = run.ep.run_decompositions(table)  # a new program; run.ep is kept
    graphinfo.describe_decomposed(decomposed, run.record)
    out = _run_program(run, decomposed, *run.shared.fresh_inputs())
    cmp = _compare(run, out, "decompose")
    if not cmp.ok:
        raise StageFailed(Failure.make("DECOMPOSITION_ERROR", "decompose",
                                       f"decomposed program disagrees with eager: {cmp.detail}"))
    if key is not None:
        run.shared.decomposed.setdefault(key, Decomposed.of(run.ep, run.record))


def _decomposition_table() -> dict[Any, Any]:
    """torch.export.default_decompositions(), materialized once per process instead of once per
    run_decompositions call (which copies it).  The table lists every op with a
    CompositeImplicitAutograd kernel, so a model file that registers a custom op gets a new one."""
    names = torch._C._dispatch_get_registrations_for_dispatch_key("CompositeImplicitAutograd")
    return _materialized_table((len(names), hash(tuple(sorted(names))),
                                tuple(getattr(torch.ops, "_dir", ()))))


@functools.lru_cache(maxsize=1)
def _materialized_table(_registered: tuple[Any, ...]) -> dict[Any, Any]:
    table = torch.export.default_decompositions()
    return table.materialize() if hasattr(table, "materialize") else dict(table)


def stage_serialize(run: ModeRun) -> None:
    path = os.path.join(run.shared.workdir, f"{run.record.mode}.pt2")
    _ensure_space(run.shared.workdir, _program_bytes(run.ep) + (4 << 20))
    torch.export.save(run.ep, path)
    _publish_artifact(run, path)
    own_module = run.shared.entry.entrypoint.split(":")[0]
    imports = pytree_owner_modules(path, exclude=(own_module,) if not own_module.endswith(".py")
                                   else ())
    request = LoadRequest("export", path, _data_file(run), *_tol(run), device=run.shared.device,
                          imports=imports, seed=run.shared.entry.seed)
    _check_fresh(run, request)
    _hand_over(run, request)


def stage_aoti(run: ModeRun) -> None:
    if not run.shared.options.aoti:
        raise StageSkipped("AOTInductor is opt-in (--aoti)")
    path = os.path.join(run.shared.workdir, f"{run.record.mode}-aoti.pt2")
    _ensure_space(run.shared.workdir, _program_bytes(run.ep) + (64 << 20))
    torch._inductor.aoti_compile_and_package(copy.deepcopy(run.ep), package_path=path)
    request = LoadRequest("aoti", path, _data_file(run), *_tol(run), device=run.shared.device,
                          seed=run.shared.entry.seed)
    _check_fresh(run, request)
    _hand_over(run, request)


def _hand_over(run: ModeRun, request: LoadRequest) -> None:
    """A program that reloaded fine here, with its inputs and eager outputs, copied where the
    worker hands it to the other environments of the run (the cross-version stage)."""
    target = run.shared.options.handoff_dir
    if not target:
        return
    import json
    import shutil
    stem = os.path.join(target, f"{run.record.mode}.{request.kind}")
    shutil.copyfile(request.artifact, stem + ".pt2")
    shutil.copyfile(request.data, stem + ".io.pt")
    with open(stem + ".json", "w") as f:
        json.dump({"mode": run.record.mode, "kind": request.kind, "atol": request.atol,
                   "rtol": request.rtol, "device": request.device,
                   "imports": list(request.imports), "seed": request.seed}, f)


MODE_STAGES: tuple[tuple[str, Callable[[ModeRun], None]], ...] = (
    ("export", stage_export), ("verify", stage_verify), ("numerics", stage_numerics),
    ("dynamic", stage_dynamic), ("decompose", stage_decompose), ("serialize", stage_serialize),
    ("aoti", stage_aoti),
)


# -- helpers ----------------------------------------------------------------------------------

def _run_program(run: ModeRun, ep: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    torch.manual_seed(run.shared.entry.seed)
    with torch.no_grad(), _state_restored(ep):
        return _module_of(run, ep)(*args, **kwargs)


def _module_of(run: ModeRun, ep: Any) -> torch.nn.Module:
    """ep.module() (unlifting copies and recompiles the graph: often dearer than a run of a
    small model), made once per mode for the exported program: numerics and each size of the
    dynamic stage run the same module.  It holds the program's own parameters, buffers and
    constants, which _state_restored puts back after every run, and no other state."""
    if ep is not run.ep or not run.shared.options.share_between_modes:
        return ep.module()
    if run.module is None:
        run.module = ep.module()
    return run.module


@contextlib.contextmanager
def _state_restored(ep: Any) -> Iterator[None]:
    """ep.module() shares the program's buffers and constants and mutates them in place
    (a counter saved as 2 after two checks).  Snapshot what a run can mutate and put it
    back afterwards: cheaper than deep-copying the program, weights included, per run."""
    buffers = set(ep.graph_signature.buffers)
    saved = [(t, t.clone()) for k, t in ep.state_dict.items() if k in buffers]
    saved += [(t, t.clone()) for t in ep.constants.values() if isinstance(t, torch.Tensor)]
    try:
        yield
    finally:
        with torch.no_grad():
            for live, snapshot in saved:
                live.copy_(snapshot)


@contextlib.contextmanager
def _module_restored(model: torch.nn.Module) -> Iterator[None]:
    """Whatever an export does to the module, undone after: train flags, and the values of
    parameters, buffers and plain tensor attributes (non-strict export runs the model's
    Python for real, so a model that mutates a tensor constant mutates it here)."""
    flags = [(m, m.training) for m in model.modules()]
    tensors: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for value in (*module._parameters.values(), *module._buffers.values(),
                      *vars(module).values()):
            if isinstance(value, torch.Tensor) and value.layout == torch.strided:
                tensors.setdefault(id(value), value)
    with torch.no_grad():
        saved = [(t, t.detach().clone()) for t in tensors.values()]
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
        with torch.no_grad():
            for live, snapshot in saved:
                if not torch.equal(live, snapshot):
                    live.copy_(snapshot)


def _compare(run: ModeRun, out: Any, stage: str) -> numerics.Comparison:
    """The program's outputs on the example inputs against eager's."""
    tol, shared = run.shared.entry.tolerance, run.shared
    cmp = numerics.compare(shared.eager_out, out, tol.atol, tol.rtol,
                           _reference64(shared, *shared.fresh_inputs()))
    _note_float64(run, stage, cmp.float64)
    return cmp


def _note_float64(run: ModeRun, stage: str, judged: str) -> None:
    if judged:
        run.record.float64_judged.append(f"{stage}: {judged}")


def _tol(run: ModeRun) -> tuple[float, float]:
    tol = run.shared.entry.tolerance
    return tol.atol, tol.rtol


def _data_file(run: ModeRun) -> str:
    """Inputs and expected outputs as weights-only-loadable leaves, for the fresh process."""
    args, kwargs = run.shared.fresh_inputs()
    reference64 = run.shared.eager64.get(_inputs_key(args, kwargs, None))
    if isinstance(reference64, str):
        reference64 = None
    # With a float64 reference (a comparison needed it), the fresh process judges like this one.
    path = os.path.join(run.shared.workdir, "io64.pt" if reference64 is not None else "io.pt")
    if not os.path.exists(path):
        inputs, _ = numerics.pytree.tree_flatten((args, kwargs))
        expected, _ = numerics.flatten(run.shared.eager_out)
        data = {"inputs": [_plain(x) for x in inputs], "expected": [_plain(x) for x in expected]}
        if reference64 is not None:
            data["reference64"] = [_plain(x) for x in reference64]
        torch.save(data, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _check_fresh(run: ModeRun, request: LoadRequest) -> None:
    loader = run.shared.loader
    if loader is not None:
        result_path = os.path.join(run.shared.workdir, f"{run.record.mode}-{request.kind}.json")
        result = loader.check(request, run.remaining(), result_path)
    else:
        result = check_in_process(request)
    if request.kind == "export":
        run.record.seconds["serialize.load"] = round(result.load_s, 4)
    _note_float64(run, "serialize" if request.kind == "export" else "aoti", result.float64)
    _raise_if_failed(result)


def _raise_if_failed(result: LoadResult) -> None:
    if not result.ok and result.failure is not None:
        raise StageFailed(Failure(**result.failure))


def _publish_artifact(run: ModeRun, path: str) -> None:
    import hashlib
    import shutil
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    run.record.artifact_sha256 = sha
    run.record.artifact_bytes = os.path.getsize(path)
    target_dir = run.shared.options.artifacts_dir
    if target_dir:
        target = os.path.join(target_dir, sha[:2], f"{sha}.pt2")
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target + ".tmp")
            os.replace(target + ".tmp", target)
        run.record.artifact_path = os.path.abspath(target)


# Stages that write files exportsweep chose the place of (the entry's working folder, the
# artifacts folder).
FILE_STAGES = ("serialize", "aoti")
PROBE_BYTES = 256 << 10


def _blame_the_disk(failure: Failure, shared: Shared) -> Failure:
    """A file stage that failed for the model's category gets a second look at the disk:
    torch's archive writer reports a full disk as 'unexpected pos' without an errno, and a
    deleted temporary folder as whatever it tripped on next.  If the folders cannot take a
    small file now, the machine is at fault, not the model."""
    if failure.stage not in FILE_STAGES or CATEGORY_BY_NAME[failure.category].infra:
        return failure
    for folder in (shared.workdir, shared.options.artifacts_dir):
        trouble = _cannot_write(folder) if folder else None
        if trouble:
            return Failure.make(INFRA_ERROR, failure.stage, f"{trouble} (the {failure.stage} "
                                f"stage failed with: {failure.message[:500]})",
                                exception_type=failure.exception_type, error_code=trouble.split(
                                    ":", 1)[0], traceback=failure.traceback)
    return failure


def _program_bytes(ep: Any) -> int:
    """What a program's weights take on disk, about: its state dict and constants."""
    tensors = [*ep.state_dict.values(), *getattr(ep, "constants", {}).values()]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _ensure_space(folder: str, need: int) -> None:
    """Refuse to write a program where it cannot fit: torch's archive writer does not report
    a full disk, it aborts the whole process (a C++ exception thrown while unwinding)."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < need:
        raise OSError(errno.ENOSPC, f"{folder} has {free:,} bytes free; the program needs about "
                                    f"{need:,}", folder)


def _cannot_write(folder: str) -> str | None:
    """Why ``folder`` cannot take a small file now (None: it can)."""
    if not os.path.isdir(folder):
        return f"ENOENT: the folder {folder} is gone"
    probe = os.path.join(folder, f".exportsweep-probe-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {folder} cannot take a " \
               f"file ({exc.strerror})"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


def _device(entry: Entry, options: PipelineOptions) -> str | None:
    """The device to run on; None when the entry needs CUDA and cannot have it."""
    if entry.device == "cpu":
        return "cpu"
    if options.use_cuda and torch.cuda.is_available():
        return "cuda"
    return "cpu" if entry.device == "any" or options.cuda_fallback else None


def _to_device(value: Any, device: str) -> Any:
    return numerics.pytree.tree_map(
        lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, value)


def _current_stage(record: Record) -> str:
    for name, state in record.stage_status.items():
        if state == "running":
            return name
    for name, state in record.stage_status.items():
        if state == "not_reached":
            return name
    return "build"


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[bool]:
    """SIGALRM deadline for in-process runs (main thread only; Ray workers are killed by
    their supervisor instead)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "SIGALRM"):
        yield False
        return

    def _expire(signum: int, frame: Any) -> None:
        raise EntryTimeout()

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def _rss_sampler(interval: float = 0.05) -> Iterator[Callable[[], float | None]]:
    """Peak resident memory of this process while the entry runs, in MiB."""
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        peak[0] = max(peak[0], rss_bytes())

    def loop() -> None:
        while not stop.wait(interval):
            sample()

    sample()
    thread = threading.Thread(target=loop, name="exportsweep-rss", daemon=True)
    thread.start()
    try:
        yield lambda: (sample(), round(peak[0] / 2**20, 1))[1] if peak[0] else None
    finally:
        stop.set()
        thread.join()
