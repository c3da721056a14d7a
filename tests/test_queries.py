"""The DuckDB queries documented in docs/schema.md, run against a real sweep's output."""

from __future__ import annotations

import io
import re

import duckdb
import pytest

from exporter.manifest import load_manifest
from orchestrator.execute.config import SweepConfig
from orchestrator.execute.sweep import run_sweep

from conftest import REPO

QUERIES = dict(re.findall(r"```sql\n-- (\w+):.*?\n(.*?)```", (REPO / "docs" / "schema.md").read_text(),
                          re.S))


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory):
    """Two real in-process sweeps; between them a model's code changed and it broke."""
    folder = tmp_path_factory.mktemp("nights")
    models = folder / "models.py"
    manifest = folder / "m.yaml"
    manifest.write_text("""
version: 1
defaults: {modes: [non-strict, strict]}
entries:
  - {name: mlp, entrypoint: "models.py:mlp", inputs: [{shape: [2, 4]}]}
  - {name: flaky, entrypoint: "models.py:flaky", inputs: [{shape: [2, 4]}]}
""")
    out = folder / "results"
    for night, broken in (("night-1", False), ("night-2", True)):
        models.write_text(f"""
import torch
class Flaky(torch.nn.Module):
    def forward(self, x):
        if {broken} and x.sum() > 0:
            return x + 1
        return x - 1
def mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
def flaky():
    return Flaky()
""")
        import sys
        sys.modules.pop(next((k for k in sys.modules if k.startswith("exportsweep_models.models_")),
                             "-"), None)
        run_sweep(load_manifest(manifest), SweepConfig(out=str(out), run_id=night),
                  out=io.StringIO())
    return out


def test_the_five_documented_queries_exist():
    assert set(QUERIES) == {"pass_rate_per_night", "pass_rate_per_family",
                            "new_failures_tonight", "top_clusters", "slowest_models"}


def _run(name: str, out) -> list[tuple]:
    return duckdb.sql(QUERIES[name].replace("'results/", f"'{out}/")).fetchall()


def test_queries_answer_on_real_sweeps(two_nights):
    per_night = _run("pass_rate_per_night", two_nights)
    assert [(r[0], r[1], r[2]) for r in per_night] == [("night-1", 4, 100.0), ("night-2", 4, 50.0)]
    per_family = _run("pass_rate_per_family", two_nights)
    assert per_family == [("manual", "non-strict", 2, 50.0), ("manual", "strict", 2, 50.0)]
    new = _run("new_failures_tonight", two_nights)
    assert [(r[0], r[1], r[2]) for r in new] == [("flaky", "non-strict", "DATA_DEPENDENT_GUARD"),
                                                 ("flaky", "strict", "DATA_DEPENDENT_GUARD")]
    clusters = _run("top_clusters", two_nights)
    # one root cause (a branch on a tensor) in both modes: one cluster of two rows
    assert len(clusters) == 1 and clusters[0][1] == 2 and clusters[0][2] == 1
    slowest = _run("slowest_models", two_nights)
    assert len(slowest) == 4 and slowest[0][3] >= slowest[-1][3]
