"""Model families against the real libraries: expansion semantics and builders.

No mocks: torchvision, timm and transformers are the installed ones, so a
library upgrade that renames models or breaks a builder shows up here first.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import time
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.families import cache
from exporter.families import (COMMON_KEYS, SOURCES, FamilyError, FamilyModel,
                               FamilyUnavailable, UnknownModel, expand, family_keys)
from exporter.manifest import load_manifest

from conftest import examples

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"


def _bare(models: list[FamilyModel]) -> list[str]:
    return [m.name.split("/", 1)[1] for m in models]


def _expand_manifest(path: Path) -> list[FamilyModel]:
    """Expand a manifest's family specs the way the manifest parser will."""
    doc = yaml.safe_load(path.read_text())
    assert doc["version"] == 1
    models: list[FamilyModel] = []
    for spec in doc.get("families", []):
        extra = {k: v for k, v in spec.items() if k not in COMMON_KEYS}
        models += expand(spec["source"], spec.get("include"), spec.get("exclude"),
                         spec.get("limit"), extra)
    return models


# --------------------------------------------------------------------------- expansion

def test_sources_and_family_keys() -> None:
    assert SOURCES == ("torchvision", "timm", "transformers", "noop")
    assert family_keys("torchvision") == frozenset({"tasks"})
    assert family_keys("noop") == frozenset({"count", "sleep_s"})
    assert family_keys("timm") == frozenset()
    assert family_keys("transformers") == frozenset()
    with pytest.raises(FamilyError, match="unknown family source"):
        family_keys("keras")


def test_import_is_lazy() -> None:
    code = ("import sys, exporter.families as f; f.family_keys('timm'); "
            "heavy = {'torch', 'timm', 'torchvision', 'transformers'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_include_exclude_limit() -> None:
    models = expand("timm", ["resnet*", "vit_tiny_*"], ["resnet5*", "*_gn"], None, {})
    names = _bare(models)
    assert names == sorted(names) and len(names) == len(set(names))
    assert "resnet18" in names and "vit_tiny_patch16_224" in names
    assert not [n for n in names if n.startswith("resnet5") or n.endswith("_gn")]
    assert all(n.startswith(("resnet", "vit_tiny_")) for n in names)
    # limit applies after filtering, to the sorted list
    assert expand("timm", ["resnet*", "vit_tiny_*"], ["resnet5*", "*_gn"], 3, {}) == models[:3]
    assert expand("timm", ["resnet*"], [], 0, {}) == []
    # exclusion wins over an exact include
    assert expand("timm", ["resnet18"], ["resnet*"], None, {}) == []


def test_deterministic_names_and_entries() -> None:
    first = expand("transformers", ["bert", "gpt2", "t5", "l*a"], [], None, {})
    assert first == expand("transformers", ["l*a", "t5", "gpt2", "bert"], [], None, {})
    assert [m.name for m in first][:1] == ["transformers/bert"]
    for model in first:
        assert model.name.startswith("transformers/") and model.device == "cpu"
        assert model.entrypoint == "exporter.families.transformers:build"
        assert model.kwargs == {"model_type": model.name.split("/", 1)[1]}
        assert model.tags[0] == "transformers"
        json.dumps(model.kwargs)
    [t5] = [m for m in first if m.name == "transformers/t5"]
    assert "seq2seq" in t5.tags and "text" in t5.tags


def test_torchvision_tasks() -> None:
    seg = expand("torchvision", ["*"], [], None, {"tasks": ["segmentation"]})
    assert len(seg) == 6 and all(m.kwargs["task"] == "segmentation" for m in seg)
    assert all(m.tags == ("torchvision", "segmentation") for m in seg)
    default = _bare(expand("torchvision", ["*"], [], None, {}))
    assert "raft_small" in default and "r3d_18" in default and "resnet18" in default
    assert not [n for n in default if n.startswith("quantized_")]   # quantization is opt-in
    with pytest.raises(UnknownModel, match="'detection' model; add 'detection' to tasks"):
        expand("torchvision", ["fasterrcnn_resnet50_fpn"], [], None,
               {"tasks": ["classification"]})
    with pytest.raises(FamilyError, match="unknown task"):
        expand("torchvision", ["*"], [], None, {"tasks": ["classification", "painting"]})


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(UnknownModel) as info:
        expand("timm", ["resnet18", "resnet181"], [], None, {})
    assert info.value.source == "timm" and info.value.name == "resnet181"
    assert "resnet18" in info.value.suggestions
    assert "did you mean" in str(info.value)
    with pytest.raises(UnknownModel) as info:
        expand("transformers", ["bertt"], [], None, {})
    assert "bert" in info.value.suggestions


def test_spec_errors() -> None:
    with pytest.raises(FamilyError, match="does not understand"):
        expand("timm", ["*"], [], None, {"tasks": ["classification"]})
    with pytest.raises(FamilyError, match="limit"):
        expand("timm", ["*"], [], -1, {})


def test_family_unavailable_when_library_missing() -> None:
    assert str(FamilyUnavailable("timm")) == (
        "family 'timm' needs the timm package: pip install 'exportsweep[timm]'")
    # A None entry in sys.modules makes `import timm` raise ImportError for real.
    code = ("import sys; sys.modules['timm'] = None\n"
            "from exporter.families import expand, FamilyUnavailable\n"
            "try:\n    expand('timm', ['*'], [], None, {})\n"
            "except FamilyUnavailable as e:\n    print(e)\n")
    # (uncached: a cached catalog lists timm's models without importing it)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "EXPORTSWEEP_CACHE_DIR": ""}).stdout
    assert "pip install 'exportsweep[timm]'" in out


# -- catalogs cached between commands ---------------------------------------------------------

LISTING = """
import json, sys
from exporter.manifest import load_manifest
m = load_manifest(sys.argv[1])
heavy = [x for x in ("torch", "timm", "torchvision", "transformers") if x in sys.modules]
print(json.dumps({"heavy": heavy, "entries": [[e.name, e.entrypoint, dict(e.kwargs),
                                               list(e.tags)] for e in m.entries]}))
"""


def _listing(manifest: Path, cache: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", LISTING, str(manifest)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EXPORTSWEEP_CACHE_DIR": cache})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_a_cached_catalog_lists_the_same_entries_without_importing_the_libraries(tmp_path):
    cache = str(tmp_path / "cache")
    first = _listing(MANIFESTS / "smoke.yaml", cache)
    assert set(first["heavy"]) == {"torch", "timm", "torchvision", "transformers"}
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == [
        "timm", "torchvision", "transformers"]
    again = _listing(MANIFESTS / "smoke.yaml", cache)
    # the Ray driver lists the zoo and runs no model: it no longer imports torch for it
    assert again["heavy"] == [] and again["entries"] == first["entries"]
    assert _listing(MANIFESTS / "smoke.yaml", "")["entries"] == first["entries"]   # uncached


def test_the_key_follows_versions_code_and_extra_keys(tmp_path, monkeypatch):
    code = tmp_path / "family.py"
    code.write_text("x = 1\n")
    key = cache.catalog_key("torchvision", str(code), {"tasks": ["video"]}, ["torch"])
    assert key and key.startswith("torchvision-")
    assert cache.catalog_key("torchvision", str(code), {"tasks": ["video"]}, ["torch"]) == key
    assert cache.catalog_key("torchvision", str(code), {"tasks": ["detection"]},
                             ["torch"]) != key
    assert cache.catalog_key("torchvision", str(code), {"tasks": ["video"]},
                             ["torch", "pyarrow"]) != key
    code.write_text("x = 2\n")                                   # the family's code changed
    assert cache.catalog_key("torchvision", str(code), {"tasks": ["video"]}, ["torch"]) != key
    # a library that is not installed has no key: listing it says so, uncached
    assert cache.catalog_key("timm", str(code), {}, ["no-such-distribution-x"]) is None
    assert cache.catalog_key("timm", str(tmp_path / "gone.py"), {}, ["torch"]) is None


def _models(n: int) -> dict[str, FamilyModel]:
    return {f"m{i}": FamilyModel(f"timm/m{i}", "exporter.families.timm:build", {"model": f"m{i}"},
                                 ("timm", "classification")) for i in range(n)}


@settings(max_examples=examples(150), deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                              lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner,
                                                                      max_size=4)),
                              max_leaves=20).map(lambda v: json.dumps(
                                  {"format": 1, "models": v}).encode()),
                 st.just(b'{"format": 1, "models": {"m0": {"name": "x"}}}'),
                 st.just(b'{"format": 2, "models": {}}')))
def test_a_damaged_cache_file_costs_a_listing_never_a_wrong_one(tmp_path_factory, garbage):
    folder = tmp_path_factory.mktemp("c")
    code = folder / "family.py"
    code.write_text("")
    built = _models(3)
    calls = []

    def build():
        calls.append(1)
        return built
    os.environ["EXPORTSWEEP_CACHE_DIR"], saved = str(folder / "cache"), os.environ.get(
        "EXPORTSWEEP_CACHE_DIR")
    try:
        key = cache.catalog_key("timm", str(code), {}, ["torch"])
        (folder / "cache").mkdir()
        (folder / "cache" / f"{key}.json").write_bytes(garbage)
        got = cache.cached_catalog("timm", str(code), {}, ["torch"], build, FamilyModel)
        assert got == built and calls == [1]          # recomputed, and the file rewritten
        again = cache.cached_catalog("timm", str(code), {}, ["torch"], build, FamilyModel)
        assert again == built and calls == [1]        # now from the cache
    finally:
        os.environ["EXPORTSWEEP_CACHE_DIR"] = saved or ""


def test_an_unwritable_cache_only_costs_the_next_listing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EXPORTSWEEP_CACHE_DIR", str(blocker / "cache"))
    code = tmp_path / "family.py"
    code.write_text("")
    calls = []
    for _ in range(2):
        got = cache.cached_catalog("timm", str(code), {}, ["torch"],
                                   lambda: calls.append(1) or _models(2), FamilyModel)
        assert got == _models(2)
    assert calls == [1, 1] and blocker.read_text() == "not a folder"
    monkeypatch.setenv("EXPORTSWEEP_CACHE_DIR", "")                # off
    assert cache.cache_dir() is None
    monkeypatch.delenv("EXPORTSWEEP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == str(tmp_path / "xdg" / "exportsweep" / "catalogs")


def test_manifests_expand() -> None:
    smoke = _expand_manifest(MANIFESTS / "smoke.yaml")
    assert 12 <= len(smoke) <= 20
    assert {"torchvision/resnet18", "timm/resnet18", "transformers/whisper",
            "torchvision/fasterrcnn_mobilenet_v3_large_fpn"} <= {m.name for m in smoke}
    nightly = _expand_manifest(MANIFESTS / "nightly.yaml")
    assert len(nightly) >= 300
    assert len({m.name for m in nightly}) == len(nightly)
    assert {m.tags[0] for m in nightly} == set(SOURCES) - {"noop"}     # real models only
    full = _expand_manifest(MANIFESTS / "full.yaml")
    assert len(full) > len(nightly)


# --------------------------------------------------------------------------- builders

def _build(source: str, name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    [model] = expand(source, [name], [], None, extra or {})
    module, attr = model.entrypoint.split(":")
    return getattr(importlib.import_module(module), attr)(**model.kwargs)


@pytest.mark.parametrize(("source", "name"), [
    ("torchvision", "resnet18"), ("timm", "resnet18"),
    ("transformers", "bert"), ("transformers", "t5"), ("transformers", "whisper"),
])
def test_builder_runs_eager_and_exports(source: str, name: str) -> None:
    import torch

    torch.manual_seed(0)
    case = _build(source, name)
    model = case["model"].eval()
    args, kwargs = case["args"], case.get("kwargs", {})
    assert isinstance(args, tuple)
    with torch.no_grad():
        model(*args, **kwargs)
    ep = torch.export.export(model, args, kwargs, dynamic_shapes=case["dynamic_shapes"],
                             strict=False)
    # The batch dimension really is symbolic, with the range the builder asked for.
    ranges = [(int(r.lower), int(r.upper)) for r in ep.range_constraints.values()]
    assert (1, 64) in ranges


def test_input_sizes_follow_model_config() -> None:
    import torch

    inception = _build("torchvision", "inception_v3")
    assert inception["args"][0].shape == (2, 3, 299, 299)
    mvit = _build("timm", "mobilevitv2_050")
    assert mvit["args"][0].shape == (2, 3, 256, 256)
    det = _build("torchvision", "ssdlite320_mobilenet_v3_large", {"tasks": ["detection"]})
    [image] = det["args"][0]
    assert image.shape == (3, 320, 320) and det["dynamic_shapes"] is None
    whisper = _build("transformers", "whisper")
    feats = whisper["kwargs"]["input_features"]
    config = whisper["model"].config
    assert feats.shape == (2, config.num_mel_bins, 2 * config.max_source_positions)
    assert whisper["kwargs"]["decoder_input_ids"].max() < config.vocab_size
    assert config.pad_token_id < config.vocab_size and config.use_cache is False
    assert isinstance(whisper["kwargs"]["decoder_input_ids"], torch.Tensor)


# --------------------------------------------------------------------------- noop

def test_noop_entries_run_without_torch_work(write_manifest):
    from exporter.pipeline import run_entry
    from exporter.spec import PipelineOptions
    m = load_manifest(write_manifest("""
        version: 1
        families:
          - {source: noop, count: 12, sleep_s: 0.05,
             overrides: {"noop/000011": {expect: {status: FAIL}}}}
    """))
    assert [e.name for e in m.entries][:2] == ["noop/000000", "noop/000001"]
    assert len(m.entries) == 12 and {e.family for e in m.entries} == {"noop"}
    started = time.monotonic()
    records = run_entry(m.entries[0], PipelineOptions())      # no reload process started
    assert 0.05 <= time.monotonic() - started < 1.0
    assert [(r.mode, r.status) for r in records] == [("non-strict", "PASS"), ("strict", "PASS")]
    assert all(set(r.stage_status.values()) == {"skipped"} and r.finished_at for r in records)
    assert {r.status for r in run_entry(m.entries[11], PipelineOptions())} == {"XPASS"}


@pytest.mark.parametrize("spec, phrase", [
    ("{source: noop, count: 0}", "count must be an integer from 1"),
    ("{source: noop, count: 2.5}", "count must be an integer from 1"),
    ("{source: noop, sleep_s: -1}", "sleep_s must be a number of seconds"),
    ("{source: noop, sleep_s: yes}", "sleep_s must be a number of seconds"),
    ("{source: noop, include: ['7']}", "noop entries are numbered 0 to count - 1"),
])
def test_bad_noop_specs_are_manifest_errors(write_manifest, spec, phrase):
    from exporter.errors import ExportsweepError
    with pytest.raises(ExportsweepError, match=phrase):
        load_manifest(write_manifest(f"version: 1\nfamilies:\n  - {spec}\n"))
