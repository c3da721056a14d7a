"""Scheduling policy on its own: expected costs and the queue's order (no Ray, no torch work)."""

from __future__ import annotations

from collections import Counter

from exporter.environments import CURRENT
from exporter.manifest import load_manifest
from orchestrator.execute.scheduling import (CheckPolicy, Idle, WorkItem, expected_seconds,
                                             memory_ceiling_mb, order_items, plan_moves)


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


# -- moving workers between environments -------------------------------------------------------

def _plan(idle, workers, waiting, checks=None, now=1000.0, policy=CheckPolicy()):
    return [(m.worker_id, env) for m, env, _ in plan_moves(
        [Idle(w, "cpu", e) for w, e in idle], Counter({("cpu", e): n for e, n in workers.items()}),
        lambda pool: dict(waiting), lambda pool: dict(checks or {}), now, policy)]


def test_an_idle_worker_with_nothing_left_moves_where_work_waits():
    # old's queue ran dry while current still has work: old's worker moves there
    assert _plan([("old-1", "old")], {"old": 1, CURRENT: 1}, {CURRENT: 10}) == [
        ("old-1", CURRENT)]
    # its own environment still has work: it stays
    assert _plan([("old-1", "old")], {"old": 1, CURRENT: 1}, {CURRENT: 10, "old": 1}) == []
    # nothing queued anywhere: nobody moves
    assert _plan([("old-1", "old")], {"old": 1, CURRENT: 1}, {}) == []
    # several places with work: the most per worker wins
    assert _plan([("a-1", "a")], {"a": 1, "b": 3, "c": 0}, {"b": 9, "c": 4}) == [("a-1", "c")]


def test_checks_gathered_for_an_environment_without_workers_pull_one_back():
    policy = CheckPolicy(max_waiting=4, max_wait_s=60.0)
    idle = [("cpu-1", CURRENT), ("cpu-2", CURRENT)]
    # three checks for old, waiting 10 s: not yet worth a worker start there and back
    assert _plan(idle, {CURRENT: 2}, {CURRENT: 5, "old": 3}, {"old": (3, 990.0)},
                 policy=policy) == []
    # four of them: one worker (not both) goes
    assert _plan(idle, {CURRENT: 2}, {CURRENT: 5, "old": 4}, {"old": (4, 990.0)},
                 policy=policy) == [("cpu-2", "old")]
    # or one that has waited past the limit
    assert _plan(idle, {CURRENT: 2}, {CURRENT: 5, "old": 1}, {"old": (1, 900.0)},
                 policy=policy) == [("cpu-2", "old")]
    # old has a worker (starting, or busy): it will drain them
    assert _plan(idle, {CURRENT: 2, "old": 1}, {CURRENT: 5, "old": 9}, {"old": (9, 0.0)},
                 policy=policy) == []
    # no idle worker elsewhere: they wait for one
    assert _plan([], {CURRENT: 2}, {"old": 9}, {"old": (9, 0.0)}, policy=policy) == []


def test_moves_never_double_book_a_worker():
    # one idle worker, both rules want it: the first rule takes it, the second finds none
    moves = _plan([("cpu-1", CURRENT)], {CURRENT: 1}, {"old": 40}, {"old": (40, 0.0)})
    assert moves == [("cpu-1", "old")]
