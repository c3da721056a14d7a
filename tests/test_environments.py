"""Environments: declarations (manifest and --env), their mistakes, and the probe that checks
each one before any work (real interpreters, real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import environments
from exporter.environments import CURRENT, Environment
from exporter.errors import ManifestErrors, UsageError
from exporter.manifest import load_manifest
from exporter.spec import Entry
from orchestrator.execute.crossload import CrossLoad
from orchestrator.execute.environments import libraries_of, probe_all, split_unavailable
from orchestrator.execute.scheduling import WorkItem, WorkQueue, pending_items, share_out

from conftest import REPO, examples

BIN = Path(sys.executable).parent
ENTRIES = """
entries:
  - name: mlp
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
  - name: only_old
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
    environments: [old]
"""


def _errors(path) -> list[str]:
    with pytest.raises(ManifestErrors) as info:
        load_manifest(path)
    return str(info.value).splitlines()


def test_declarations_resolve_with_current_first_and_options_last(write_manifest, tmp_path):
    path = write_manifest("version: 1\nenvironments:\n  old: {python: venvs/old/bin/python}\n"
                          "  cluster: {runtime_env: {uv: [torch==2.13.0], env_vars: {A: '1'}}}\n"
                          + ENTRIES)
    m = load_manifest(path)
    assert m.environments["old"] == Environment(
        "old", python=str(tmp_path / "venvs/old/bin/python"), source=str(path))
    assert m.environments["cluster"].runtime_env == {"uv": ["torch==2.13.0"], "env_vars": {"A": "1"}}
    assert [e.environments for e in m.entries] == [None, ("old",)]
    assert m.entries[1].runs_in("old") and not m.entries[1].runs_in(CURRENT)
    override = environments.parse_option(f"old={tmp_path}/other/python")
    run = environments.resolve(m.environments, [override])
    assert list(run) == [CURRENT, "old", "cluster"]
    assert run[CURRENT].is_current and run["old"] == override and run["old"].source == "--env"


@pytest.mark.parametrize("body, field, phrase", [
    ("environments: {old: {python: /x, runtime_env: {pip: [a]}}}", "environments.old",
     "exactly one of python and runtime_env"),
    ("environments: {old: {pyhton: /x}}", "environments.old", "unknown key 'pyhton'"),
    ("environments: {'bad name': {python: /x}}", "environments", "an environment name is"),
    ("environments: {old: {runtime_env: {pipp: [torch]}}}", "environments.old",
     "runtime_env: unknown key 'pipp'"),
    ("environments: {old: {runtime_env: {env_vars: {A: 1}}}}", "environments.old",
     "env_vars must map names to strings"),
    ("environments: {old: {python: ''}}", "environments.old", "path of an interpreter"),
    ("environments: [old]", "environments", "must be a mapping"),
    ("environments: {}", "environments", "must be a mapping"),
])
def test_bad_declarations_are_one_line_naming_the_field(write_manifest, body, field, phrase):
    path = write_manifest(f"version: 1\n{body}\n" + ENTRIES.replace("environments: [old]",
                                                                      "tags: [x]"))
    lines = _errors(path)
    assert len(lines) == 1 and f"field '{field}'" in lines[0] and phrase in lines[0], lines
    assert lines[0].startswith(str(path))


def test_an_entry_naming_an_undeclared_environment_is_refused(write_manifest):
    path = write_manifest("version: 1\nenvironments: {olld: {python: /x}}\n" + ENTRIES)
    lines = _errors(path)
    assert len(lines) == 1
    assert "entry 'only_old'" in lines[0] and "field 'environments'" in lines[0]
    assert "no environment 'old' is declared (declared: current, olld); did you mean olld?" \
        in lines[0]


def test_entry_environments_must_be_a_list_of_names(write_manifest):
    path = write_manifest("version: 1\n" + ENTRIES.replace("[old]", "old"))
    assert "must be a non-empty list of environment names" in _errors(path)[0]


def test_only_the_top_manifest_declares_environments(write_manifest):
    write_manifest("version: 1\nenvironments: {old: {python: /x}}\n", name="inc.yaml")
    path = write_manifest("version: 1\ninclude: [inc.yaml]\n" + ENTRIES.replace(
        "    environments: [old]\n", ""))
    assert "only the top manifest declares environments" in _errors(path)[0]


def test_env_option_forms(tmp_path):
    python = environments.parse_option("next=~/venvs/next/bin/python")
    assert python.python == os.path.expanduser("~/venvs/next/bin/python") and \
        python.runtime_env is None
    (tmp_path / "plain.yaml").write_text("uv: [torch==2.13.0]\n")
    (tmp_path / "wrapped.json").write_text('{"runtime_env": {"pip": ["torch"]}}')
    assert environments.parse_option(f"a={tmp_path}/plain.yaml").runtime_env == {
        "uv": ["torch==2.13.0"]}
    assert environments.parse_option(f"b={tmp_path}/wrapped.json").runtime_env == {
        "pip": ["torch"]}


@pytest.mark.parametrize("value, phrase", [
    ("noequals", "expected NAME=PATH_TO_PYTHON"),
    ("x=", "expected NAME=PATH_TO_PYTHON"),
    ("-x=/usr/bin/python3", "an environment name is"),
    ("x=/nowhere/env.yaml", "cannot be read"),
])
def test_bad_env_options_are_one_line(value, phrase):
    with pytest.raises(ValueError) as info:
        environments.parse_option(value)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_a_runtime_env_file_with_a_typo_names_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("pip: torch\n")
    with pytest.raises(ValueError, match=r"b: .*bad.yaml: runtime_env.pip must be a list"):
        environments.parse_option(f"b={tmp_path}/bad.yaml")


@pytest.mark.property
@settings(max_examples=examples(200), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=60))
def test_any_env_option_parses_or_is_one_bounded_line(value, tmp_path):
    try:
        env = environments.parse_option(value)
    except ValueError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 600
    else:
        assert environments.name_problem(env.name) is None
        assert (env.python is None) != (env.runtime_env is None)


SPECS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(["python", "runtime_env", "pip", "uv", "env_vars", "/usr/bin/python3"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["python", "runtime_env", "pip", "uv", "env_vars", "image_uri", "x"])
        | st.text(max_size=8), inner, max_size=3), max_leaves=12)


@pytest.mark.property
@settings(max_examples=examples(200), deadline=None)
@given(value=SPECS)
def test_any_declaration_parses_or_is_refused_line_by_line(value):
    problems: list[tuple[str, str]] = []
    found = environments.parse_declarations(value, "/base", "m.yaml",
                                            lambda m, f: problems.append((m, f)))
    assert found or problems
    for message, fld in problems:
        assert fld.startswith("environments") and "\n" not in message and len(message) < 600
    for name, env in found.items():
        assert env.name == name and (env.python is None) != (env.runtime_env is None)


# -- scheduling across environments -----------------------------------------------------------

def test_each_entry_runs_in_every_environment_it_allows(write_manifest):
    path = write_manifest("version: 1\nenvironments: {old: {python: /x}}\n" + ENTRIES)
    entries = load_manifest(path).entries
    items = pending_items(entries, {("mlp", "strict", "old")}, None, [CURRENT, "old"])
    assert [(i.entry.name, i.env, i.modes) for i in items] == [
        ("mlp", CURRENT, ("non-strict", "strict")), ("mlp", "old", ("non-strict",)),
        ("only_old", "old", ("non-strict", "strict"))]
    queue = WorkQueue(items)
    assert queue.waiting("cpu") == {CURRENT: 1, "old": 2}
    assert queue.take("cpu", "old").entry.name == "mlp"
    assert queue.take("cpu", "missing") is None
    assert [i.env for i in queue.unrunnable({("cpu", CURRENT)})] == ["old"]


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "front", "take", "batch", "drop"]),
                          st.sampled_from([CURRENT, "old"]), st.sampled_from(["cpu", "cuda", "any"]),
                          st.sampled_from(["cpu", "gpu"]), st.integers(1, 3)), max_size=60))
def test_the_waiting_counts_follow_every_change_of_the_queue(ops):
    """waiting() is kept as items come and go (not recounted): it must always equal a count
    of what a model of the queue still holds."""
    queue, model = WorkQueue(), []
    for n, (op, env, device, pool, size) in enumerate(ops):
        item = WorkItem(Entry(name=f"e{n}", entrypoint="m:f", source="m.yaml", base_dir=".",
                              device=device), ("strict",), env=env,
                        crossload=CrossLoad("x", "2.13", None, (), device) if n % 3 else None)
        if op == "put":
            queue.put(item)
            model.append(item)
        elif op == "front":
            queue.put_front(item)
            model.insert(0, item)
        elif op == "take":
            got = queue.take(pool, env)
            if got is not None:
                model.remove(got)
        elif op == "batch":
            for got in queue.take_batch(pool, size, env):
                model.remove(got)
        else:
            for got in queue.unrunnable({(pool, env)}):
                model.remove(got)
        for kind in ("cpu", "gpu"):
            want: dict[str, int] = {}
            for i in model:
                if (i.device == "any") or ((i.device == "cuda") == (kind == "gpu")):
                    want[i.env] = want.get(i.env, 0) + 1
            assert queue.waiting(kind) == want
            checks = {}
            for i in model:
                if i.crossload is not None and (
                        (i.device == "any") or ((i.device == "cuda") == (kind == "gpu"))):
                    checks[i.env] = checks.get(i.env, 0) + 1
            assert {e: n for e, (n, _) in queue.checks_waiting(kind).items()} == checks
        assert len(queue) == len(model)


@pytest.mark.parametrize("workers, waiting, want", [
    (2, {"a": 10, "b": 10}, ["a", "b"]),
    (1, {"a": 10, "b": 10}, ["a"]),
    (5, {"a": 30, "b": 10}, ["a", "b", "a", "a", "a"]),
    (3, {"a": 0, "b": 4}, ["b", "b", "b"]),
    (3, {}, ["a", "b", "a"]),
])
def test_workers_are_shared_out_by_queued_work(workers, waiting, want):
    assert share_out(workers, waiting, ["a", "b"]) == want


@settings(max_examples=examples(200), deadline=None)
@given(workers=st.integers(0, 40),
       waiting=st.dictionaries(st.sampled_from("abcd"), st.integers(0, 1000), max_size=4))
def test_sharing_out_keeps_the_worker_count_and_serves_every_environment_with_work(
        workers, waiting):
    got = share_out(workers, waiting, list("abcd"))
    assert len(got) == workers
    with_work = [e for e in "abcd" if waiting.get(e)]
    if with_work and workers >= len(with_work):
        assert set(got) == set(with_work)


def test_work_items_carry_their_environment():
    item = WorkItem(load_manifest(REPO / "manifests" / "pathological.yaml").entries[0],
                    ("strict",), env="old")
    assert item.retry().env == "old"


# -- the probe: real interpreters --------------------------------------------------------------

def _venv(path: Path, ray_version: str | None = None) -> Path:
    """A bare virtualenv (no pip) that sees this one's packages through a .pth file, and
    optionally a distribution record saying another Ray is installed there."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    purelib = Path(subprocess.run([str(path / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    return purelib


def test_the_current_interpreter_probes_with_its_versions():
    facts = probe_all({CURRENT: Environment(CURRENT)}, version("ray"))[CURRENT]
    import torch
    assert facts.torch == str(torch.__version__) and facts.packages["ray"] == version("ray")
    assert facts.python == sys.version.split()[0] and facts.executable
    assert json.loads(json.dumps(facts.as_json()))["name"] == CURRENT


def test_the_probe_says_which_model_libraries_do_not_import(tmp_path, monkeypatch):
    (tmp_path / "brokenlib").mkdir()
    (tmp_path / "brokenlib" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist\\nmore')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    facts = probe_all({CURRENT: Environment(CURRENT)}, version("ray"),
                      libraries=["transformers", "brokenlib", "exportsweep_no_such_lib"])[CURRENT]
    assert facts.unavailable == {
        "brokenlib": "RuntimeError: operator torchvision::nms does not exist",
        "exportsweep_no_such_lib": "not installed"}
    assert facts.as_json()["unavailable"] == facts.unavailable


def test_work_whose_family_library_is_missing_is_set_aside_with_its_reason():
    def entry(name: str, family: str) -> Entry:
        return Entry(name=name, entrypoint="m:f", source="m.yaml", base_dir=".", family=family)
    items = [WorkItem(entry("timm/a", "timm"), ("strict",), env="old"),
             WorkItem(entry("timm/a", "timm"), ("strict",), env=CURRENT),
             WorkItem(entry("manual/b", "manual"), ("strict",), env="old"),
             WorkItem(entry("transformers/c", "transformers"), ("strict",), env="old")]
    facts = {CURRENT: {"unavailable": {}},
             "old": {"unavailable": {"timm": "not installed",
                                     "transformers": "ImportError: cannot import name 'x'"}}}
    kept, skipped = split_unavailable(items, facts)
    assert kept == items[1:3]
    assert [(i.entry.name, i.env) for i, _ in skipped] == [("timm/a", "old"),
                                                           ("transformers/c", "old")]
    assert skipped[0][1] == ("the timm family cannot run in environment 'old': timm is not "
                             "installed there")
    assert skipped[1][1].endswith("transformers does not import there (ImportError: cannot "
                                  "import name 'x')")
    assert libraries_of(i.entry for i in items) == {"timm", "transformers"}
    # facts from before this field existed (an old _run.json): nothing is set aside
    assert split_unavailable(items, {"old": {}}) == (items, [])
    # nor from a damaged one (a resumed run reads them back): no exception either
    for damaged in ("x", None, 3, {"unavailable": "timm"}, {"unavailable": {"timm": 1}},
                    {"unavailable": None}, ["timm"]):
        assert split_unavailable(items, {"old": damaged}) == (items, [])


def test_environments_that_cannot_work_are_named_one_line_each(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)     # the probes see only their own
    bare = tmp_path / "bare"
    _venv(bare)                                          # no exportsweep, no torch, no Ray
    old_ray = tmp_path / "old-ray"
    purelib = _venv(old_ray)
    (purelib / "here.pth").write_text(f"{REPO}\n{sysconfig.get_path('purelib')}\n")
    dist = purelib / "ray-2.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ray\nVersion: 2.0.0\n")
    envs = {
        "missing": Environment("missing", python=str(tmp_path / "nowhere" / "python"),
                               source="--env"),
        "folder": Environment("folder", python=str(tmp_path), source="--env"),
        "shell": Environment("shell", python="/bin/true", source="m.yaml"),
        "bare": Environment("bare", python=str(bare / "bin" / "python"), source="m.yaml"),
        "oldray": Environment("oldray", python=str(old_ray / "bin" / "python"), source="m.yaml"),
        CURRENT: Environment(CURRENT),
    }
    with pytest.raises(UsageError) as info:
        probe_all(envs, version("ray"))
    lines = str(info.value).splitlines()
    assert len(lines) == 5 and info.value.exit_code == 2
    said = dict(zip(["missing", "folder", "shell", "bare", "oldray"], lines))
    assert said["missing"].endswith("python does not exist")
    assert "is not an executable interpreter" in said["folder"]
    assert "is not a Python that can run the probe" in said["shell"]
    assert "exportsweep is not installed there" in said["bare"]
    assert f"Ray 2.0.0 there, Ray {version('ray')} in the driver" in said["oldray"]
    assert all(line.startswith(f"environment '{name}' (") for name, line in said.items())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "exportsweep"), "run", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_a_run_with_an_environment_that_cannot_work_stops_before_anything(write_manifest,
                                                                          tmp_path):
    path = write_manifest("version: 1\n" + ENTRIES.replace("    environments: [old]\n", ""))
    out = tmp_path / "out"
    proc = _run(str(path), "--out", str(out), "--env", f"old={tmp_path}/nowhere/python")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("python does not exist"), proc.stderr
    assert not out.exists()
    proc = _run(str(path), "--out", str(out), "--in-process", "--env", f"old={sys.executable}")
    assert proc.returncode == 2 and "drop --in-process" in proc.stderr and not out.exists()
    proc = _run(str(path), "--out", str(out), "--env", "bad name=/x")
    assert proc.returncode == 2 and "--env" in proc.stderr and "an environment name" in proc.stderr
