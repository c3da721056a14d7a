"""The result table: one versioned Arrow schema, defined here and only here.

One row per (run, entry, mode, attempt).  Columns are flat where dashboards
filter or aggregate (DuckDB, pandas, Grafana), and maps / lists only for open
ended facts (op histogram, stage states).  Bump ``SCHEMA_VERSION`` on any
change that is not a pure addition of a nullable column.

``python -m exporter.schema`` prints the column reference as Markdown.
"""

from __future__ import annotations

import platform
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from exporter.environments import CURRENT
from exporter.record import Record
from exporter.taxonomy import STAGES

SCHEMA_VERSION = 3   # 2: dynamic_*, localized_*, localize_*, reruns, flaky*; 3: env
_TS = pa.timestamp("us", tz="UTC")
_STR_LIST = pa.list_(pa.string())

# (name, type, description).  The order is the column order in every file.
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("schema_version", pa.int16(), "version of this schema; rows of one dataset may mix versions"),
    ("run_id", pa.string(), "the sweep this row belongs to (also the hive partition)"),
    ("entry", pa.string(), "manifest entry name, unique within a manifest"),
    ("family", pa.string(), "manual | torchvision | timm | transformers"),
    ("tags", _STR_LIST, "entry tags from the manifest (family tags included)"),
    ("mode", pa.string(), "non-strict | strict, as written in manifests"),
    ("env", pa.string(), "the environment the entry ran in ('current': the driver's own; "
                         "others as the run declared them, see _run.json); null before "
                         "schema version 3, read as 'current'"),
    ("device", pa.string(), "device the pipeline ran on: cpu | cuda"),
    ("requested_device", pa.string(), "device the manifest asked for: cpu | cuda | any; cuda "
                                      "with device cpu means no CUDA existed on the GPU worker"),
    ("status", pa.string(), "PASS | FAIL | XFAIL | XPASS | ERROR (infrastructure) | SKIP"),
    ("stage_reached", pa.string(), "furthest stage entered: the failing stage, or the last run"),
    ("stage_ordinal", pa.int8(), "ordinal of stage_reached (build=1 ... aoti=9; 0 none)"),
    ("failed_stage", pa.string(), "stage that failed; null when nothing failed"),
    ("category", pa.string(), "taxonomy category (README, 'Failure taxonomy'); null on PASS"),
    ("exception_type", pa.string(), "fully qualified class of the exception, when one was raised"),
    ("error_code", pa.string(), "what torch says: UserErrorType, Dynamo gb_type, failing op, "
                                "guard expression"),
    ("message", pa.string(), "bounded error message, torch's draft_export advice stripped"),
    ("signature", pa.string(), "12-hex hash of category + the mode-independent cause (guard, "
     "operator, gb_type, check message, innermost exception), normalized: equal for one root "
     "cause across models and modes"),
    ("user_frame", pa.string(), "file:line of the model's own code (its library's source in a "
     "zoo) that led to the failure; for an input/output rejected before any model line ran, "
     "the line defining `forward`"),
    ("repro", pa.string(), "command that reruns exactly this entry and mode in-process"),
    ("expected", pa.string(), "the manifest's expectation for this mode, e.g. 'FAIL "
                              "DATA_DEPENDENT_GUARD'"),
    ("skip_reason", pa.string(), "why the row is SKIP"),
    ("stage_status", pa.map_(pa.string(), pa.string()),
     "stage -> passed | failed | skipped | not_reached"),
    *((f"seconds_{s}", pa.float64(), f"wall seconds in the {s} stage") for s in STAGES),
    ("seconds_load", pa.float64(), "part of seconds_serialize spent loading in the fresh process"),
    ("total_s", pa.float64(), "sum of the stage seconds (build and eager are shared by modes)"),
    ("peak_rss_mb", pa.float64(), "peak resident memory of the worker from entry start to the "
                                  "end of this mode, MiB"),
    ("param_count", pa.int64(), "number of model parameters"),
    ("max_abs_err", pa.float64(), "worst |exported - eager| over all outputs (numerics stage)"),
    ("max_rel_err", pa.float64(), "worst |exported - eager| / max(|eager|, 1e-8)"),
    ("node_count", pa.int32(), "nodes in the exported graph"),
    ("op_histogram", pa.map_(pa.string(), pa.int64()), "call_function target -> count"),
    ("n_parameter_inputs", pa.int32(), "graph signature: PARAMETER inputs"),
    ("n_buffer_inputs", pa.int32(), "graph signature: BUFFER inputs"),
    ("n_constant_tensor_inputs", pa.int32(), "graph signature: CONSTANT_TENSOR inputs"),
    ("n_token_inputs", pa.int32(), "graph signature: TOKEN inputs"),
    ("n_user_inputs", pa.int32(), "graph signature: USER_INPUT inputs"),
    ("n_user_outputs", pa.int32(), "graph signature: USER_OUTPUT outputs"),
    ("n_buffer_mutations", pa.int32(), "graph signature: BUFFER_MUTATION outputs (after "
                                       "decomposition, where torch materializes them)"),
    ("n_user_input_mutations", pa.int32(), "graph signature: USER_INPUT_MUTATION outputs"),
    ("dynamic_dims", _STR_LIST, "dynamic symbols and their ranges, e.g. 's77 in [1, 64]'"),
    ("dynamic_sizes_tested", _STR_LIST, "size assignments the dynamic stage ran"),
    ("dynamic_requested", _STR_LIST, "input dims the entry asked to be dynamic, named after the "
     "model's inputs: 'input_ids.shape[1] (auto)', or the Dim's name"),
    ("dynamic_achieved", _STR_LIST, "asked dims the program kept dynamic, with their range "
     "('x.shape[0] in [2, inf]') or what they derive from ('z.shape[1] = 2*x.shape[1]')"),
    ("dynamic_specialized", _STR_LIST, "asked dims the program fixed to the example size, with "
     "the guard that did it and where: 'x.shape[1] = 6: Eq(x.shape[1], 6) at m.py:7 in forward'"),
    ("dynamic_relations", _STR_LIST, "what torch found between dynamic dims: 'y.shape[0] == "
     "x.shape[0]', 'z.shape[1] == 2*x.shape[1]'"),
    ("localized_paths", _STR_LIST, "with localization (--localize): the smallest submodules "
     "that fail to export on their own, e.g. 'roi_heads.box_roi_pool'; '' is the whole model "
     "(every submodule it calls exports: its own forward fails)"),
    ("localized_classes", _STR_LIST, "their classes, in the same order"),
    ("localized_categories", _STR_LIST, "the category each fails with on its own"),
    ("localized_passing", _STR_LIST, "the largest submodules tried that export on their own"),
    ("localize_s", pa.float64(), "seconds the localization took (not in total_s)"),
    ("localize_complete", pa.bool_(), "false when the deadline cut the search short"),
    ("reruns", pa.int16(), "with --flaky-reruns N: how many fresh-process reruns of the entry "
     "ran (null without the option)"),
    ("flaky", pa.bool_(), "the entry's outcome in this mode (status, category, stage) differed "
     "between its first run and a rerun; diff and its gates treat it apart"),
    ("flaky_outcomes", _STR_LIST, "every outcome seen when flaky: 'PASS', 'FAIL "
     "NUMERIC_MISMATCH @numerics'"),
    ("float64_judged", _STR_LIST, "comparisons that failed in float32 and passed against eager "
     "run in float64 (the program no further from it than eager float32), e.g. 'decompose: "
     "program rmse 0.51, eager float32's 0.49'"),
    ("dynamic_suggested", pa.string(), "on CONSTRAINT_VIOLATION: torch's suggested fix, which "
     "exported, as a manifest snippet to paste (dynamic_achieved then describes it)"),
    ("decomposed_node_count", pa.int32(), "nodes after run_decompositions() to core ATen"),
    ("non_core_ops", _STR_LIST, "ops left after decomposition that are not core ATen"),
    ("artifact_path", pa.string(), "kept .pt2 (content-addressed; only with --keep-artifacts)"),
    ("artifact_sha256", pa.string(), "sha256 of the saved .pt2"),
    ("artifact_bytes", pa.int64(), "size of the saved .pt2"),
    ("draft_failures", _STR_LIST, "draft_export failure types and details (--draft-export)"),
    ("draft_report", pa.string(), "draft_export's report text, bounded"),
    ("torch_version", pa.string(), "torch.__version__ in the worker"),
    ("python_version", pa.string(), "Python version in the worker"),
    ("exportsweep_version", pa.string(), "exportsweep version in the worker"),
    ("hostname", pa.string(), "host the worker ran on"),
    ("node_id", pa.string(), "cluster node id (Ray), null in-process"),
    ("worker_id", pa.string(), "worker that ran the entry"),
    ("pool", pa.string(), "in-process | cpu | gpu: the worker pool that ran the entry"),
    ("attempt", pa.int16(), "1 for the first try; retries after worker faults count up"),
    ("final", pa.bool_(), "false for an attempt that was retried; a finished run has exactly "
                          "one final row per (entry, mode)"),
    ("started_at", _TS, "UTC time the entry started"),
    ("finished_at", _TS, "UTC time this mode finished"),
)

SCHEMA = pa.schema([pa.field(name, kind, metadata={"doc": doc}) for name, kind, doc in COLUMNS],
                   metadata={"exportsweep.schema_version": str(SCHEMA_VERSION)})
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)

_INPUT_KINDS = {"n_parameter_inputs": "PARAMETER", "n_buffer_inputs": "BUFFER",
                "n_constant_tensor_inputs": "CONSTANT_TENSOR", "n_token_inputs": "TOKEN",
                "n_user_inputs": "USER_INPUT"}
_OUTPUT_KINDS = {"n_user_outputs": "USER_OUTPUT", "n_buffer_mutations": "BUFFER_MUTATION",
                 "n_user_input_mutations": "USER_INPUT_MUTATION"}


@dataclass(frozen=True)
class RowContext:
    """Where and when a record was produced: filled in by whoever runs the pipeline."""

    run_id: str
    worker_id: str = "local"
    attempt: int = 1
    pool: str = "in-process"
    env: str = CURRENT
    node_id: str | None = None
    hostname: str = field(default_factory=socket.gethostname)
    torch_version: str = ""
    python_version: str = field(default_factory=platform.python_version)
    exportsweep_version: str = ""


def row_env(r: dict[str, Any]) -> str:
    """A row's environment; rows from before environments existed ran in the driver's."""
    return r.get("env") or CURRENT


def pair_key(r: dict[str, Any]) -> tuple[str, str, str]:
    """A row's identity within a run: (entry, mode, environment)."""
    return r["entry"], r["mode"], row_env(r)


def row(record: Record, ctx: RowContext, final: bool = True) -> dict[str, Any]:
    """Flatten a record into a dict keyed exactly by ``COLUMN_NAMES``."""
    has_graph = record.node_count is not None
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": ctx.run_id, "entry": record.entry,
        "family": record.family, "tags": list(record.tags), "mode": record.mode,
        "env": ctx.env,
        "device": record.device, "requested_device": record.requested_device,
        "status": record.status, "stage_reached": record.stage_reached,
        "stage_ordinal": record.stage_ordinal, "failed_stage": record.failed_stage,
        "category": record.category, "exception_type": record.exception_type,
        "error_code": record.error_code, "message": record.message,
        "signature": record.signature, "user_frame": record.user_frame, "repro": record.repro,
        "expected": record.expected, "skip_reason": record.skip_reason,
        "stage_status": dict(record.stage_status),
        "seconds_load": record.seconds.get("serialize.load"), "total_s": record.total_s,
        "peak_rss_mb": record.peak_rss_mb, "param_count": record.param_count,
        "max_abs_err": record.max_abs_err, "max_rel_err": record.max_rel_err,
        "node_count": record.node_count, "op_histogram": dict(record.op_histogram),
        "dynamic_dims": list(record.dynamic_dims),
        "dynamic_sizes_tested": list(record.dynamic_sizes_tested),
        "dynamic_requested": list(record.dynamic_requested),
        "dynamic_achieved": list(record.dynamic_achieved),
        "dynamic_specialized": list(record.dynamic_specialized),
        "dynamic_relations": list(record.dynamic_relations),
        "dynamic_suggested": record.dynamic_suggested,
        "localized_paths": list(record.localized_paths),
        "localized_classes": list(record.localized_classes),
        "localized_categories": list(record.localized_categories),
        "localized_passing": list(record.localized_passing),
        "localize_s": record.localize_s, "localize_complete": record.localize_complete,
        "reruns": record.reruns, "flaky": record.flaky,
        "flaky_outcomes": list(record.flaky_outcomes),
        "float64_judged": list(record.float64_judged),
        "decomposed_node_count": record.decomposed_node_count,
        "non_core_ops": list(record.non_core_ops), "artifact_path": record.artifact_path,
        "artifact_sha256": record.artifact_sha256, "artifact_bytes": record.artifact_bytes,
        "draft_failures": list(record.draft_failures), "draft_report": record.draft_report,
        "torch_version": ctx.torch_version, "python_version": ctx.python_version,
        "exportsweep_version": ctx.exportsweep_version, "hostname": ctx.hostname,
        "node_id": ctx.node_id, "worker_id": ctx.worker_id, "attempt": ctx.attempt,
        "pool": ctx.pool, "final": final,
        "started_at": _utc(record.started_at), "finished_at": _utc(record.finished_at),
    }
    for stage in STAGES:
        out[f"seconds_{stage}"] = record.seconds.get(stage)
    for col, kind in _INPUT_KINDS.items():
        out[col] = record.graph_inputs.get(kind, 0) if has_graph else None
    for col, kind in _OUTPUT_KINDS.items():
        out[col] = record.graph_outputs.get(kind, 0) if has_graph else None
    return out


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


# -- the cross-version table ------------------------------------------------------------------
# One row per (entry, mode, program kind, saved-in environment, loaded-in environment): a
# program that passed serialize (and aoti) where it was exported, loaded and run in a fresh
# process of another environment of the run and compared with the exporting one's eager
# outputs. Kept in the run's ``_crossload/`` folder, apart from the main table (another grain).
CROSSLOAD_DIR = "_crossload"
CROSSLOAD_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("schema_version", pa.int16(), "version of the main schema this table goes with"),
    ("run_id", pa.string(), "the run"),
    ("entry", pa.string(), "manifest entry name"),
    ("family", pa.string(), "manual | torchvision | timm | transformers"),
    ("mode", pa.string(), "export mode the program was made in"),
    ("kind", pa.string(), "export (torch.export.save's .pt2) | aoti (AOTInductor package)"),
    ("from_env", pa.string(), "environment the program was exported and saved in"),
    ("to_env", pa.string(), "environment it was loaded and run in"),
    ("from_torch", pa.string(), "torch version of from_env"),
    ("to_torch", pa.string(), "torch version of to_env"),
    ("direction", pa.string(), "forward (saved by the older torch, loaded by the newer), "
                               "backward (the other way), same (equal torch versions)"),
    ("status", pa.string(), "PASS | FAIL (the program's fault) | ERROR (the worker's)"),
    ("category", pa.string(), "CROSS_VERSION_LOAD_ERROR | CROSS_VERSION_MISMATCH | an "
                              "infrastructure category; null on PASS"),
    ("load_category", pa.string(), "what the fresh process's own classification said "
                                   "(DESERIALIZE_ERROR, ROUNDTRIP_MISMATCH, ...)"),
    ("exception_type", pa.string(), "class of the exception, when one was raised"),
    ("message", pa.string(), "bounded error message"),
    ("signature", pa.string(), "12-hex hash of the category and the normalized cause"),
    ("max_abs_err", pa.float64(), "worst |loaded - eager| over all outputs"),
    ("load_s", pa.float64(), "seconds to load the program in the fresh process"),
    ("run_s", pa.float64(), "seconds to run it"),
    ("worker_id", pa.string(), "worker of to_env that ran the check"),
    ("finished_at", _TS, "UTC time the check finished"),
)
CROSSLOAD_SCHEMA = pa.schema(
    [pa.field(name, kind, metadata={"doc": doc}) for name, kind, doc in CROSSLOAD_COLUMNS],
    metadata={"exportsweep.schema_version": str(SCHEMA_VERSION)})


def crossload_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{"schema_version": SCHEMA_VERSION, **r} for r in rows],
                                schema=CROSSLOAD_SCHEMA)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def markdown() -> str:
    lines = [f"Schema version {SCHEMA_VERSION}.", "", *_column_table(COLUMNS), "",
             f"The cross-version table (`run_id=<id>/{CROSSLOAD_DIR}/*.parquet`):", "",
             *_column_table(CROSSLOAD_COLUMNS)]
    return "\n".join(lines)


def _column_table(columns: tuple[tuple[str, pa.DataType, str], ...]) -> list[str]:
    return ["| column | type | meaning |", "|---|---|---|",
            *(f"| `{name}` | `{kind}` | {doc} |" for name, kind, doc in columns)]


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
