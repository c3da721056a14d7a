"""Failure clusters on real models: one root cause per cluster, across models and modes."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest

from exporter.manifest import load_manifest
from exporter.pipeline import run_entry
from exporter.schema import RowContext, row
from orchestrator.results.clusters import cluster_rows, read_clusters, write_clusters
from orchestrator.results.sink import ResultSink


@pytest.fixture(scope="module")
def detection_rows(tmp_path_factory, fresh_loader):
    folder = tmp_path_factory.mktemp("detection")
    manifest = folder / "m.yaml"
    manifest.write_text("""
version: 1
families:
  - source: torchvision
    include: [fasterrcnn_mobilenet_v3_large_fpn, maskrcnn_resnet50_fpn]
    tasks: [detection]
""")
    rows = []
    for entry in load_manifest(manifest).entries:
        records = run_entry(entry, loader=fresh_loader,
                            repro=lambda mode, e=entry: f"exportsweep repro {manifest} {e.name} "
                                                        f"--mode {mode}")
        rows += [row(r, RowContext(run_id="det")) for r in records]
    return rows


def test_same_cause_in_two_models_and_two_modes_is_one_cluster(detection_rows):
    assert {r["status"] for r in detection_rows} == {"FAIL"}
    clusters = cluster_rows(detection_rows)
    # torchvision's batched_nms branches on boxes.numel() > 4000 in both models; strict and
    # non-strict report it through different exceptions, but the guard is one root cause.
    assert len(clusters) == 1
    [c] = clusters
    assert c.entries == ["torchvision/fasterrcnn_mobilenet_v3_large_fpn",
                         "torchvision/maskrcnn_resnet50_fpn"]
    assert c.categories == ["DATA_DEPENDENT_GUARD"] and c.stages == ["export"]
    assert c.modes == ["non-strict", "strict"] and c.rows == 4
    assert c.repro.startswith("exportsweep repro")


def test_clusters_table_is_written_next_to_the_results(detection_rows, tmp_path):
    ResultSink(str(tmp_path), "det").write(detection_rows)
    write_clusters(str(tmp_path), "det", cluster_rows(detection_rows))
    assert ds.dataset(str(tmp_path), partitioning="hive").to_table().num_rows == 4  # rows only
    stored = read_clusters(str(tmp_path), "det")
    assert len(stored) == 1 and all(c["n_entries"] == 2 for c in stored)
    across_runs = ds.dataset(str(tmp_path / "_clusters"), partitioning="hive").to_table()
    assert across_runs.column("run_id").to_pylist() == ["det"]


def test_passing_rows_make_no_clusters():
    assert cluster_rows([{"status": "PASS", "signature": None}]) == []


def test_the_fidelity_benchmark_reads_what_the_clusters_say(detection_rows):
    """bench/taxonomy_fidelity.py on real rows: the detection models' one guard is one
    signature in both modes, with a model line; an unexpected FAIL is listed."""
    import importlib.util

    from conftest import REPO
    spec = importlib.util.spec_from_file_location("taxonomy_fidelity",
                                                  REPO / "bench" / "taxonomy_fidelity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    f = bench.fidelity(detection_rows)
    assert (f["export_failures"], f["with_user_frame"]) == (4, 4)
    assert (f["both_modes_one_cause"], f["one_signature"]) == (2, 2)
    assert f["mixed_clusters"] == [] and f["clusters"] == 1
    assert len(f["fail_without_expectation"]) == 4            # the test manifest expects nothing
    split = [dict(r, signature=f"{r['signature']}{r['mode']}") for r in detection_rows]
    assert bench.fidelity(split)["split_signatures"] == sorted({r["entry"] for r in split})
    assert "| entries failing in both modes at one cause, one signature | 2/2 (100%)" in \
        bench.markdown(f, "det")
