"""Scheduling policy on its own: expected costs and the queue's order (no Ray, no torch work)."""

from __future__ import annotations

from exporter.manifest import load_manifest
from orchestrator.execute.scheduling import (WorkItem, expected_seconds, memory_ceiling_mb,
                                             order_items)


def _entries(write_manifest):
    return load_manifest(write_manifest("""
        version: 1
        entries:
          - {name: tv/a, entrypoint: "models/tiny.py:make_mlp", inputs: [{shape: [2, 4]}]}
          - {name: tv/b, entrypoint: "models/tiny.py:make_mlp", inputs: [{shape: [2, 4]}]}
          - {name: tv/c, entrypoint: "models/tiny.py:make_mlp", inputs: [{shape: [2, 4]}]}
          - {name: tv/d, entrypoint: "models/tiny.py:make_mlp", inputs: [{shape: [2, 4]}]}
    """)).entries


def _names(items):
    return [i.entry.name for i in items]


def test_longest_first_from_history_unknowns_at_the_median(write_manifest):
    entries = _entries(write_manifest)
    items = [WorkItem(e, e.modes) for e in entries]
    seen = {"tv/a": 1.0, "tv/b": 30.0, "tv/d": 5.0}
    assert expected_seconds(entries, seen)["tv/c"] == 5.0       # the median of what was seen
    assert _names(order_items(items, seen, "longest-first")) == ["tv/b", "tv/c", "tv/d", "tv/a"]
    assert _names(order_items(items, seen, "manifest")) == ["tv/a", "tv/b", "tv/c", "tv/d"]
    # nothing seen yet: the manifest's order, untouched
    assert _names(order_items(items, {}, "longest-first")) == ["tv/a", "tv/b", "tv/c", "tv/d"]


def test_a_resumed_entry_with_one_mode_left_costs_half(write_manifest):
    a, b, *_ = _entries(write_manifest)
    items = [WorkItem(a, ("strict",)), WorkItem(b, b.modes)]
    assert _names(order_items(items, {"tv/a": 10.0, "tv/b": 6.0}, "longest-first")) == \
        ["tv/b", "tv/a"]


def test_an_unseen_entry_costs_what_its_family_costs(write_manifest):
    entries = load_manifest(write_manifest("""
        version: 1
        families:
          - {source: torchvision, include: [resnet18, resnet34, alexnet]}
        entries:
          - {name: mine, entrypoint: "models/tiny.py:make_mlp", inputs: [{shape: [2, 4]}]}
    """)).entries
    cost = expected_seconds(entries, {"torchvision/resnet18": 20.0, "mine": 2.0})
    assert cost["torchvision/resnet34"] == cost["torchvision/alexnet"] == 20.0
    assert cost["mine"] == 2.0


def test_the_default_memory_ceiling_fits_the_tightest_node():
    gib = 2**30
    # 24 GiB, 2 CPUs, one CPU per worker: 60% of the memory shared by two workers
    assert memory_ceiling_mb([(24 * gib, 2.0)], 1.0) == round(0.6 * 24 * 1024 / 2)
    # a small node decides; a node too small for one worker does not count
    assert memory_ceiling_mb([(64 * gib, 8.0), (8 * gib, 4.0), (99 * gib, 0.5)], 1.0) == \
        round(0.6 * 8 * 1024 / 4)
    assert memory_ceiling_mb([(8 * gib, 4.0)], 2.0) == round(0.6 * 8 * 1024 / 2)
    assert memory_ceiling_mb([], 1.0) is None
