"""The pipeline end to end on real models: stages, state isolation, outputs, reloads, deadlines."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from exporter.manifest import load_manifest
from exporter.pipeline import run_entry
from exporter.spec import PipelineOptions
from exporter.taxonomy import STAGES

from conftest import MANIFESTS

PATHO = load_manifest(MANIFESTS / "pathological.yaml")


def _one(write_manifest, body: str):
    return load_manifest(write_manifest("version: 1\nentries:\n" + body)).entries[0]


def test_passing_entry_runs_every_stage_and_records_facts(write_manifest, fresh_loader):
    entry = _one(write_manifest, """
  - name: mlp
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
    dynamic_shapes: {0: {0: {name: batch, min: 1, max: 16}}}
""")
    records = run_entry(entry, loader=fresh_loader)
    assert [r.mode for r in records] == ["non-strict", "strict"]
    for r in records:
        assert r.status == "PASS", r.message
        assert r.stage_status == {**dict.fromkeys(STAGES, "passed"), "aoti": "skipped"}
        assert r.stage_reached == "serialize" and r.failed_stage is None
        assert r.max_abs_err is not None and r.max_abs_err < 1e-5
        assert r.node_count and r.op_histogram.get("aten.linear.default") == 2
        assert r.graph_inputs == {"PARAMETER": 4, "USER_INPUT": 1}
        assert r.dynamic_dims and "[1, 16]" in r.dynamic_dims[0]
        assert len(r.dynamic_sizes_tested) == 2
        assert r.decomposed_node_count and r.non_core_ops == []
        assert r.artifact_bytes and len(r.artifact_sha256) == 64 and r.artifact_path is None
        assert r.param_count == 4 * 8 + 8 + 8 * 3 + 3
        assert set(r.seconds) >= {"build", "eager", "export", "serialize", "serialize.load"}
        assert r.seconds["serialize.load"] <= r.seconds["serialize"]
        assert r.total_s == pytest.approx(sum(r.seconds[s] for s in STAGES if s in r.seconds),
                                          abs=1e-3)
        assert r.peak_rss_mb and r.peak_rss_mb > 50


def test_buffer_mutation_does_not_leak_between_runs_or_modes(write_manifest, fresh_loader):
    # The counter doubles its output on a second call: any run that shared state with
    # another (eager twice, ep.module() mutating buffers, reload, the other mode) would
    # differ from eager's first call.
    entry = _one(write_manifest, """
  - name: counter
    entrypoint: models/tiny.py:make_counter
    inputs: [{shape: [3]}]
""")
    records = run_entry(entry, loader=fresh_loader)
    for r in records:
        assert r.status == "PASS", (r.mode, r.category, r.message)
        assert r.graph_outputs.get("BUFFER_MUTATION") == 1


@pytest.mark.parametrize("name", ["patho/control_input_mutation", "patho/control_dict_output",
                                  "patho/control_tuple_output", "patho/control_scalar_output",
                                  "patho/control_buffer_mutation"])
def test_outputs_and_mutations_that_must_pass(name, fresh_loader):
    for r in run_entry(PATHO.get(name), loader=fresh_loader):
        assert r.status == "PASS", (r.mode, r.category, r.message)


def test_input_mutation_is_visible_in_the_signature(fresh_loader):
    r = run_entry(PATHO.get("patho/control_input_mutation"), loader=fresh_loader)[0]
    assert r.graph_outputs.get("USER_INPUT_MUTATION") == 1


def test_reload_happens_in_a_fresh_process(fresh_loader):
    # The custom op is registered when the model file is imported: this process has it,
    # a fresh one does not.  In-process reload passes; the real check must not.
    entry = PATHO.get("patho/deserialize_error_custom_op")
    fresh = run_entry(entry, loader=fresh_loader, modes=("non-strict",))[0]
    assert fresh.category == "DESERIALIZE_ERROR" and fresh.failed_stage == "serialize"
    assert "exportsweep_patho" in (fresh.message or "") + (fresh.error_code or "")
    here = run_entry(entry, PipelineOptions(load_in_fresh_process=False),
                     modes=("non-strict",))[0]
    assert here.status == "XPASS" and here.stage_status["serialize"] == "passed"


def test_hidden_load_error_is_dug_out(fresh_loader):
    r = run_entry(PATHO.get("patho/deserialize_error_string"), loader=fresh_loader,
                  modes=("non-strict",))[0]
    assert r.category == "DESERIALIZE_ERROR"
    # torch.export.load only says "check the warnings above"; the row names the real error.
    assert r.exception_type and "SerializeError" in r.exception_type, r.exception_type


def test_shared_build_failure_fails_every_mode(fresh_loader):
    records = run_entry(PATHO.get("patho/model_build_error"), loader=fresh_loader)
    assert [(r.category, r.failed_stage) for r in records] == [("MODEL_BUILD_ERROR", "build")] * 2
    assert all(r.stage_status["eager"] == "not_reached" for r in records)


def test_case_dict_with_keyword_inputs(write_manifest, fresh_loader):
    entry = _one(write_manifest, """
  - name: kw
    entrypoint: models/tiny.py:mlp_case_with_kwargs
""")
    for r in run_entry(entry, loader=fresh_loader):
        assert r.status == "PASS", (r.mode, r.message)
        assert r.dynamic_dims and "[1, 32]" in r.dynamic_dims[0]


def test_entrypoint_returning_garbage_is_a_build_error(write_manifest, fresh_loader):
    entry = _one(write_manifest, """
  - name: garbage
    entrypoint: models/tiny.py:not_a_model
    modes: [strict]
""")
    (r,) = run_entry(entry, loader=fresh_loader)
    assert r.category == "MODEL_BUILD_ERROR" and "nn.Module" in (r.message or "")


def test_deadline_turns_a_hang_into_a_timeout_row(write_manifest, fresh_loader):
    entry = _one(write_manifest, """
  - name: sleeper
    entrypoint: models/tiny.py:make_sleeper
    inputs: [{shape: [2]}]
    timeout_s: 1.5
""")
    records = run_entry(entry, loader=fresh_loader)
    for r in records:
        assert r.status == "ERROR" and r.category == "TIMEOUT"
        assert r.failed_stage == "eager" and "1.5 s" in (r.message or "")


def test_cuda_entry_without_cuda_is_skipped(write_manifest, fresh_loader):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    entry = _one(write_manifest, """
  - name: gpu-only
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
    device: cuda
""")
    for r in run_entry(entry, loader=fresh_loader):
        assert r.status == "SKIP" and "CUDA" in (r.skip_reason or "")


def test_cuda_reload_runs_on_cuda_and_not_in_a_fork(fresh_loader, tmp_path):
    # The saved inputs are CPU tensors; a CUDA program needs them on CUDA.  And the zygote's
    # warm-up asks torch about CUDA (fake tensors do), which poisons fork: a forked child
    # could never initialise CUDA ("Cannot re-initialize CUDA in forked subprocess").
    from exporter.freshload import LoadRequest
    cuda = torch.cuda.is_available()
    model = torch.nn.Linear(4, 3).to("cuda" if cuda else "cpu")
    x = torch.randn(2, 4)
    ep = torch.export.export(model, (x.to(model.weight.device),))
    torch.export.save(ep, tmp_path / "p.pt2")
    with torch.no_grad():
        expected = model(x.to(model.weight.device)).cpu()
    torch.save({"inputs": [x], "expected": [expected]}, tmp_path / "io.pt")
    request = LoadRequest("export", str(tmp_path / "p.pt2"), str(tmp_path / "io.pt"), 1e-5, 1e-5,
                          device="cuda")
    result = fresh_loader.check(request, 120.0, str(tmp_path / "result.json"))
    if cuda:
        assert result.ok, result.failure
        return
    # Without a GPU the inputs cannot go to CUDA: the check fails for lack of CUDA (which
    # shows the device was honoured), never because the child is a fork.
    assert not result.ok and result.failure is not None
    message = result.failure["message"] or ""
    assert "forked subprocess" not in message, message
    assert "NVIDIA driver" in message or "CUDA" in message, message


def test_reload_inputs_follow_the_program_device():
    from exporter.freshload import inputs_on
    leaves = [torch.ones(2), 3, None]
    assert inputs_on(leaves, "cpu") is leaves
    moved = inputs_on(leaves, "meta")
    assert moved[0].device.type == "meta" and moved[1:] == [3, None]


def test_kept_artifacts_are_content_addressed(write_manifest, fresh_loader, tmp_path):
    entry = _one(write_manifest, """
  - name: mlp
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
    modes: [non-strict]
""")
    store = tmp_path / "artifacts"
    (r,) = run_entry(entry, PipelineOptions(artifacts_dir=str(store)), loader=fresh_loader)
    assert r.artifact_path and os.path.isfile(r.artifact_path)
    data = open(r.artifact_path, "rb").read()
    assert hashlib.sha256(data).hexdigest() == r.artifact_sha256 == os.path.basename(
        r.artifact_path)[:-4]
    assert len(data) == r.artifact_bytes
    assert torch.export.load(r.artifact_path).module()(torch.ones(2, 4)).shape == (2, 3)


def test_draft_export_enriches_export_failures(write_manifest, fresh_loader):
    entry = _one(write_manifest, """
  - name: guard
    entrypoint: models/tiny.py:make_guard
    inputs: [{shape: [2, 3]}]
    modes: [non-strict]
""")
    (r,) = run_entry(entry, PipelineOptions(draft_export=True), loader=fresh_loader)
    assert r.status == "FAIL" and r.category == "DATA_DEPENDENT_GUARD"   # never a pass
    assert any(f.startswith("DATA_DEPENDENT_ERROR") for f in r.draft_failures), r.draft_failures
    assert r.draft_report


@pytest.mark.slow
def test_aoti_stage_compiles_reloads_and_compares(write_manifest, fresh_loader):
    manifest = load_manifest(write_manifest("""
        version: 1
        defaults: {modes: [non-strict]}
        entries:
          - {name: mlp, entrypoint: "models/tiny.py:make_mlp", inputs: [{shape: [2, 4]}]}
    """))
    (ok,) = run_entry(manifest.entries[0], PipelineOptions(aoti=True), loader=fresh_loader)
    assert ok.status == "PASS" and ok.stage_status["aoti"] == "passed", ok.message
    assert ok.seconds["aoti"] > 0
    # A Python float output does not compile ("Unexpected output types"); an int output
    # compiles but comes back from AOTInductor as a tensor: a real difference from eager.
    (floats,) = run_entry(PATHO.get("patho/control_scalar_output"), PipelineOptions(aoti=True),
                          loader=fresh_loader, modes=("non-strict",))
    assert floats.category == "AOTI_COMPILE_ERROR" and floats.failed_stage == "aoti"
    assert "Unexpected output types" in (floats.message or "")
    ints = load_manifest(write_manifest("""
        version: 1
        entries:
          - {name: ints, entrypoint: "models/tiny.py:make_int_output", inputs: [{shape: [2, 4]}],
             modes: [non-strict]}
    """, name="ints.yaml")).entries[0]
    (mismatch,) = run_entry(ints, PipelineOptions(aoti=True), loader=fresh_loader)
    assert mismatch.category == "AOTI_MISMATCH" and mismatch.failed_stage == "aoti"


def test_cpu_workers_keep_any_entries_off_a_nodes_gpu(monkeypatch):
    # A CPU worker on a GPU node sees CUDA; the GPU belongs to the GPU workers.
    from dataclasses import replace as _replace

    from exporter.pipeline import _device
    from exporter.spec import Entry, PipelineOptions
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    entry = Entry(name="a", entrypoint="m.py:f", source="m.yaml", base_dir=".", device="any")
    assert _device(entry, PipelineOptions()) == "cuda"
    assert _device(entry, PipelineOptions(use_cuda=False)) == "cpu"
    assert _device(_replace(entry, device="cuda"), PipelineOptions(use_cuda=False)) is None


# -- the machine's faults are not the model's -------------------------------------------------

import contextlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow.dataset as ds  # noqa: E402

from conftest import REPO  # noqa: E402


@contextlib.contextmanager
def tiny_disk(tmp_path: Path, size_kb: int, leave_kb: int):
    """A real, nearly full filesystem: a tmpfs of ``size_kb`` with ``leave_kb`` left free."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        stats = os.statvfs(where)
        free_kb = stats.f_bavail * stats.f_frsize // 1024
        if free_kb > leave_kb:
            with open(where / "fill", "wb") as f:
                f.write(b"\0" * ((free_kb - leave_kb) * 1024))
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


ONE_MLP = """
version: 1
defaults: {modes: [non-strict]}
entries:
  - name: mlp
    entrypoint: models/tiny.py:make_mlp
    inputs: [{shape: [2, 4]}]
"""


def test_a_full_disk_while_saving_is_an_infra_error_not_a_serialize_error(write_manifest,
                                                                         tmp_path):
    path = write_manifest(ONE_MLP)
    out = tmp_path / "out"
    with tiny_disk(tmp_path, 512, 8) as disk:
        proc = subprocess.run([str(Path(sys.executable).parent / "exportsweep"), "run",
                               str(path), "--out", str(out), "--in-process", "--run-id", "full"],
                              capture_output=True, text=True, cwd=REPO, timeout=300,
                              env={**os.environ, "TMPDIR": str(disk)})
    assert proc.returncode == 0, proc.stderr[-2000:]          # the process survived
    (row,) = ds.dataset(str(out), partitioning="hive").to_table().to_pylist()
    assert row["status"] == "ERROR" and row["category"] == "INFRA_ERROR"
    assert row["failed_stage"] == "serialize" and row["error_code"] == "ENOSPC"
    assert "bytes free" in row["message"]


def test_a_full_artifacts_folder_is_an_infra_error(write_manifest, fresh_loader, tmp_path):
    entry = load_manifest(write_manifest(ONE_MLP)).entries[0]
    with tiny_disk(tmp_path, 256, 1) as disk:
        (record,) = run_entry(entry, PipelineOptions(artifacts_dir=str(disk)),
                              loader=fresh_loader)
    assert record.status == "ERROR" and record.category == "INFRA_ERROR"
    assert record.failed_stage == "serialize" and record.error_code == "ENOSPC"


def test_os_errors_are_blamed_by_errno_and_stage():
    from exporter.taxonomy import classify_exception
    import errno as errnos
    full = OSError(errnos.ENOSPC, "No space left on device")
    assert classify_exception(full, "decompose").category == "INFRA_ERROR"
    assert classify_exception(PermissionError(errnos.EACCES, "denied"), "serialize").category \
        == "INFRA_ERROR"
    # A model's own code opening a missing file is the model's failure.
    assert classify_exception(FileNotFoundError(errnos.ENOENT, "weights.bin"), "build").category \
        == "MODEL_BUILD_ERROR"
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errnos.EROFS, "Read-only file system")
    failure = classify_exception(wrapped, "serialize")
    assert failure.category == "INFRA_ERROR" and failure.error_code == "EROFS"


def test_a_working_folder_that_vanished_is_blamed_on_the_machine(tmp_path):
    from exporter.pipeline import _cannot_write
    assert _cannot_write(str(tmp_path)) is None
    assert _cannot_write(str(tmp_path / "gone")).startswith("ENOENT: the folder")


def test_a_results_folder_that_fills_up_stops_the_run_cleanly_and_resumes(write_manifest,
                                                                           tmp_path):
    path = write_manifest(ONE_MLP.replace("entries:", "entries:\n" + "".join(
        f"  - name: m{i}\n    entrypoint: models/tiny.py:make_mlp\n    inputs: [{{shape: [2, 4]}}]\n"
        for i in range(6))))
    bin_ = str(Path(sys.executable).parent / "exportsweep")
    with tiny_disk(tmp_path, 1024, 90) as disk:
        out = disk / "results"
        proc = subprocess.run([bin_, "run", str(path), "--out", str(out), "--in-process",
                               "--run-id", "r"], capture_output=True, text=True, cwd=REPO,
                              timeout=600)
        assert proc.returncode == 3, proc.stdout[-1500:] + proc.stderr[-1500:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("exportsweep: ")
                  and "warning" not in line]
        assert len(errors) == 1 and "cannot write" in errors[0] and "--resume r" in errors[0]
        assert "Traceback" not in proc.stderr
        written = ds.dataset(str(out), partitioning="hive").to_table().to_pylist()
        assert 0 < len(written) < 7                          # every published file is whole
        assert not list((out / "run_id=r").glob(".*.tmp"))  # and no temporary is left
        (disk / "fill").unlink()                             # the operator frees space
        again = subprocess.run([bin_, "run", str(path), "--out", str(out), "--in-process",
                                "--resume", "r"], capture_output=True, text=True, cwd=REPO,
                               timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        rows = ds.dataset(str(out), partitioning="hive").to_table().to_pylist()
        assert sorted(r["entry"] for r in rows) == sorted(["mlp"] + [f"m{i}" for i in range(6)])


def test_a_real_model_drawing_noise_in_forward_passes_every_comparison(fresh_loader):
    """vit_mae draws its random mask in forward: the eager reference, the exported program
    and the program reloaded in a fresh process must all run under the same seed."""
    entry = {e.name: e for e in load_manifest(MANIFESTS / "nightly.yaml").entries}["transformers/vit_mae"]
    for r in run_entry(entry, loader=fresh_loader):
        assert r.status == "PASS", (r.mode, r.category, r.failed_stage, r.message)
        assert r.stage_status["serialize"] == "passed" and r.max_abs_err is not None


def _verdicts(records):
    return [(r.mode, r.status, r.category, r.signature, r.failed_stage, r.stage_status,
             r.decomposed_node_count, r.non_core_ops, r.graph_outputs, r.node_count,
             r.dynamic_sizes_tested) for r in records]


def test_modes_exporting_one_program_share_its_decomposition(write_manifest, fresh_loader,
                                                             monkeypatch):
    entry = _one(write_manifest, """
  - name: convnet
    entrypoint: models/tiny.py:make_convnet
    inputs: [{shape: [2, 3, 8, 8]}]
    dynamic_shapes: {0: {0: {name: batch, min: 1, max: 16}}}
""")
    calls, modules = [], []
    real_decompose = torch.export.ExportedProgram.run_decompositions
    real_module = torch.export.ExportedProgram.module
    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions",
                        lambda ep, *a, **k: calls.append(ep) or real_decompose(ep, *a, **k))
    monkeypatch.setattr(torch.export.ExportedProgram, "module",
                        lambda ep, *a, **k: modules.append(ep) or real_module(ep, *a, **k))
    shared = run_entry(entry, loader=fresh_loader)
    shared_calls, shared_modules = len(calls), len(modules)
    calls.clear()
    modules.clear()
    apart = run_entry(entry, PipelineOptions(share_between_modes=False), loader=fresh_loader)
    assert _verdicts(shared) == _verdicts(apart)
    assert all(r.status == "PASS" for r in shared)
    assert (shared_calls, len(calls)) == (1, 2)     # the strict program was not retraced
    assert shared_modules < len(modules)            # one ep.module() per mode for its runs


def test_a_failed_decomposition_is_not_shared(fresh_loader, monkeypatch):
    # Each mode's failure must come from its own decomposition (its message, its signature).
    entry = next(e for e in PATHO.entries if e.name == "patho/decomposition_error")
    calls = []
    real = torch.export.ExportedProgram.run_decompositions
    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions",
                        lambda ep, *a, **k: calls.append(ep) or real(ep, *a, **k))
    records = run_entry(entry, loader=fresh_loader)
    assert [(r.category, r.failed_stage) for r in records] == \
        [("DECOMPOSITION_ERROR", "decompose")] * 2
    assert len(calls) == 2


LEAKY = '''
import torch

@torch.library.custom_op("exportsweep_leak::double", mutates_args=())
def double(x: torch.Tensor) -> torch.Tensor:
    return x * 2

@double.register_fake
def _(x):
    return torch.empty_like(x)
'''


def test_a_library_one_check_imports_is_not_in_the_next_checks_process(tmp_path, monkeypatch):
    # Importing a library can register custom operators. The reload process imports the
    # libraries that own a program's pytree types; had it imported them for good, a later
    # program needing an operator that only an earlier check's library registers would load
    # where a truly fresh process could not, and verdicts would depend on the sweep's order.
    import json as _json

    from exporter.freshload import FreshLoader, LoadRequest
    (tmp_path / "leaky_ops.py").write_text(LEAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import leaky_ops  # noqa: F401 - registers exportsweep_leak::double here

    class UsesOp(torch.nn.Module):
        def forward(self, x):
            return torch.ops.exportsweep_leak.double(x) + 1

    x = torch.ones(2, 3)
    program = tmp_path / "op.pt2"
    torch.export.save(torch.export.export(UsesOp(), (x,)), str(program))
    data = tmp_path / "io.pt"
    torch.save({"inputs": [x], "expected": [x * 2 + 1]}, str(data))
    with FreshLoader() as loader:
        loader.start()

        def check(imports: tuple[str, ...], name: str):
            return loader.check(LoadRequest("export", str(program), str(data), 1e-4, 1e-4,
                                            imports=imports), 120, str(tmp_path / name))

        assert check(("leaky_ops",), "a.json").ok          # its library: it loads
        after = check((), "b.json")                         # a check without it, afterwards
        assert not after.ok and after.failure["category"] == "DESERIALIZE_ERROR", \
            _json.dumps(after.failure)[:300]
        assert check(("leaky_ops",), "c.json").ok           # the library's set, again
