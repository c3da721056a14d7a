"""Failure localization: the smallest submodules that fail to export on their own (real
torch.export on purpose-built and real models)."""

from __future__ import annotations

import time

import pytest

from exporter import localize
from exporter.loader import build_case
from exporter.manifest import load_manifest
from exporter.pipeline import run_entry
from exporter.spec import PipelineOptions

from conftest import MANIFESTS

NESTED = {e.name: e for e in load_manifest(MANIFESTS / "localize.yaml").entries}
SMOKE = {e.name: e for e in load_manifest(MANIFESTS / "smoke.yaml").entries}


def _facts(r):
    return (r.localized_paths, r.localized_classes, r.localized_categories, r.localized_passing,
            r.localize_complete)


def test_a_failure_three_levels_down_is_found_in_both_modes(fresh_loader):
    records = run_entry(NESTED["nested/three_levels_down"], loader=fresh_loader)
    for r in records:
        assert (r.status, r.category) == ("XFAIL", "DATA_DEPENDENT_GUARD")
        assert _facts(r) == (["middle.inner.leaf"], ["Leaf"], ["DATA_DEPENDENT_GUARD"],
                             ["stem", "head", "middle.side", "middle.inner.lin"], True)
        assert r.localize_s is not None and r.localize_s < 60
        assert r.total_s == pytest.approx(sum(r.seconds[s] for s in r.seconds
                                              if s != "serialize.load"), abs=1e-3)


def test_a_failure_between_children_names_the_module_itself(fresh_loader):
    for r in run_entry(NESTED["nested/own_forward"], loader=fresh_loader):
        assert _facts(r) == ([""], ["OwnForward"], ["DATA_DEPENDENT_GUARD"], ["a", "b"], True)


def test_a_model_that_exports_is_not_localized(fresh_loader):
    for r in run_entry(NESTED["nested/passes"], loader=fresh_loader):
        assert r.status == "PASS"
        assert _facts(r) == ([], [], [], [], None) and r.localize_s is None


def test_without_the_option_nothing_is_localized(fresh_loader):
    entry = NESTED["nested/three_levels_down"]
    plain = type(entry)(**{**entry.__dict__, "localize": False})
    [r] = run_entry(plain, loader=fresh_loader, modes=("non-strict",))
    assert r.category == "DATA_DEPENDENT_GUARD" and r.localized_paths == []
    [r] = run_entry(plain, PipelineOptions(localize=True), loader=fresh_loader,
                    modes=("non-strict",))
    assert r.localized_paths == ["middle.inner.leaf"]


def test_the_deadline_stops_the_search_with_what_it_knows():
    case = build_case(NESTED["nested/three_levels_down"])
    found = localize.localize(case.model, lambda: (case.args, case.kwargs), False,
                              "DATA_DEPENDENT_GUARD", deadline=time.monotonic() - 1)
    assert not found.complete and "deadline" in (found.note or "")
    assert [(p.path, p.cls) for p in found.failing] == [("", "Outer")]


@pytest.mark.parametrize("modes", [("non-strict",), pytest.param(("strict",),
                                                                 marks=pytest.mark.slow)])
def test_detection_fails_in_the_heads_box_ops_not_the_backbone(modes, fresh_loader):
    [r] = run_entry(SMOKE["torchvision/fasterrcnn_mobilenet_v3_large_fpn"],
                    PipelineOptions(localize=True), loader=fresh_loader, modes=modes)
    assert r.category == "DATA_DEPENDENT_GUARD"
    assert (r.localized_paths[0], r.localized_classes[0], r.localized_categories[0]) == \
        ("roi_heads", "RoIHeads", "DATA_DEPENDENT_GUARD")
    assert "backbone" in r.localized_passing
    assert {"roi_heads.box_roi_pool", "roi_heads.box_head", "roi_heads.box_predictor"} <= \
        set(r.localized_passing)


@pytest.mark.parametrize("path, code, phrase", [
    ("middle.inner.leaf", 1, "submodule middle.inner.leaf: DATA_DEPENDENT_GUARD"),
    ("middle.side", 0, "submodule middle.side: exports on its own"),
    ("middle.nope", 2, "--submodule 'middle.nope': "),
])
def test_repro_targets_a_submodule(path, code, phrase):
    import subprocess
    import sys

    from conftest import REPO
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "repro",
                           str(MANIFESTS / "localize.yaml"), "nested/three_levels_down",
                           "--mode", "non-strict", "--submodule", path],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == code, proc.stderr
    assert phrase in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
