"""The result schema: one definition, versioned, documented, and what the sink really writes."""

from __future__ import annotations

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from exporter.record import Record
from exporter.schema import COLUMN_NAMES, SCHEMA, SCHEMA_VERSION, RowContext, markdown, row, to_table
from exporter.taxonomy import STAGES
from orchestrator.results.sink import ResultSink, read_dataset

from conftest import REPO

REQUIRED = ["run_id", "entry", "family", "tags", "mode", "device", "status", "stage_reached",
            "stage_ordinal", "failed_stage", "category", "exception_type", "error_code", "message",
            "signature", "user_frame", "repro", "total_s", "peak_rss_mb", "max_abs_err",
            "max_rel_err", "node_count", "op_histogram", "n_parameter_inputs", "n_buffer_inputs",
            "n_constant_tensor_inputs", "n_token_inputs", "n_buffer_mutations",
            "n_user_input_mutations", "param_count", "artifact_path", "artifact_sha256",
            "artifact_bytes", "torch_version", "python_version", "hostname", "worker_id", "attempt",
            "started_at", "finished_at", "schema_version"] + [f"seconds_{s}" for s in STAGES]


def _record(**kw) -> Record:
    r = Record(entry="vision/x", family="manual", mode="strict", device="cpu", tags=["a"])
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_schema_has_every_required_column_once():
    assert len(set(COLUMN_NAMES)) == len(COLUMN_NAMES)
    assert not set(REQUIRED) - set(COLUMN_NAMES)
    assert SCHEMA.metadata[b"exportsweep.schema_version"] == str(SCHEMA_VERSION).encode()
    assert all(f.metadata and f.metadata[b"doc"] for f in SCHEMA)


def test_row_matches_schema_exactly():
    r = _record(started_at=1.0e9, finished_at=1.0e9 + 5, node_count=3,
                graph_inputs={"PARAMETER": 2, "USER_INPUT": 1},
                graph_outputs={"USER_OUTPUT": 1, "BUFFER_MUTATION": 2}, op_histogram={"aten.add": 3})
    r.passed("build")
    d = row(r, RowContext(run_id="r1", worker_id="w0"))
    assert tuple(d) == COLUMN_NAMES or set(d) == set(COLUMN_NAMES)
    table = to_table([d])
    assert table.schema.equals(SCHEMA, check_metadata=False)
    got = table.to_pylist()[0]
    assert got["n_parameter_inputs"] == 2 and got["n_buffer_mutations"] == 2
    assert got["n_token_inputs"] == 0 and got["stage_ordinal"] == 1
    assert got["started_at"].tzinfo is not None and got["schema_version"] == SCHEMA_VERSION
    # graph counts stay null (not 0) when nothing was exported
    assert row(_record(), RowContext(run_id="r1"))["n_parameter_inputs"] is None


def test_sink_writes_a_hive_dataset_atomically(tmp_path):
    sink = ResultSink(str(tmp_path), "run-a")
    ctx = RowContext(run_id="run-a")
    sink.write([row(_record(entry=f"e{i}"), ctx) for i in range(3)])
    sink.write([row(_record(entry="e3"), ctx)])
    other = ResultSink(str(tmp_path), "run-b")
    other.write([row(_record(entry="e0"), RowContext(run_id="run-b"))])
    # a torn temporary file (crash mid-write) must be invisible to readers
    (tmp_path / "run_id=run-a" / ".part-99999-dead.parquet.tmp").write_bytes(b"PAR1garbage")
    dataset = ds.dataset(str(tmp_path), partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == 5
    assert sorted(set(table.column("run_id").to_pylist())) == ["run-a", "run-b"]
    a = read_dataset(str(tmp_path)).to_table(filter=ds.field("run_id") == "run-a")
    assert sorted(a.column("entry").to_pylist()) == ["e0", "e1", "e2", "e3"]
    files = sorted(p.name for p in (tmp_path / "run_id=run-a").iterdir() if p.suffix == ".parquet")
    assert len(files) == 2
    meta = pq.read_schema(tmp_path / "run_id=run-a" / files[0]).metadata
    assert meta[b"exportsweep.schema_version"] == str(SCHEMA_VERSION).encode()


def test_documented_schema_is_in_sync():
    doc = (REPO / "docs" / "schema.md").read_text()
    assert markdown() in doc, "docs/schema.md is stale: regenerate with python -m exporter.schema"
    readme = (REPO / "README.md").read_text()
    assert "docs/schema.md" in readme


def test_empty_table_has_the_schema():
    assert to_table([]).schema.equals(SCHEMA, check_metadata=False)
