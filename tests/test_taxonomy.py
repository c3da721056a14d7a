"""Every purpose-built model gets its expected category, strict and non-strict, with real torch.export."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.manifest import load_manifest
from exporter.pipeline import run_entry
from exporter.record import Record
from exporter.spec import PipelineOptions
from exporter.taxonomy import (CATEGORIES, CATEGORY_NAMES, CROSSLOAD, STAGES, Failure,
                               classify_exception)

from conftest import MANIFESTS, REPO

PATHOLOGICAL = load_manifest(MANIFESTS / "pathological.yaml")

# Categories a model can provoke, and the modes in which each must be demonstrated.
MODEL_CATEGORIES = {
    "MODEL_BUILD_ERROR": 2, "EAGER_ERROR": 2, "EAGER_NONDETERMINISTIC": 2, "INVALID_INPUT": 2,
    "CONSTRAINT_VIOLATION": 2, "DATA_DEPENDENT_GUARD": 2, "DATA_DEPENDENT_OP": 2,
    "GRAPH_BREAK": 1, "MISSING_FAKE_KERNEL": 2, "UNSUPPORTED_TYPE": 2, "USER_CHECK_FAILED": 2,
    "EXPORT_ERROR": 1, "SPEC_VIOLATION": 1, "NUMERIC_MISMATCH": 2, "OUTPUT_STRUCTURE_MISMATCH": 1,
    "DYNAMIC_SHAPE_FAILURE": 2, "DECOMPOSITION_ERROR": 2, "SERIALIZE_ERROR": 2,
    "DESERIALIZE_ERROR": 2, "ROUNDTRIP_MISMATCH": 2,
}


@pytest.fixture(scope="module")
def pathological_rows(fresh_loader: Any) -> dict[tuple[str, str], Record]:
    rows = {}
    for entry in PATHOLOGICAL.entries:
        for record in run_entry(entry, PipelineOptions(), loader=fresh_loader):
            rows[(record.entry, record.mode)] = record
    return rows


@pytest.mark.parametrize("entry", PATHOLOGICAL.entries, ids=[e.name for e in PATHOLOGICAL.entries])
def test_pathological_model_meets_its_expectation(entry, pathological_rows):
    for mode in entry.modes:
        record = pathological_rows[(entry.name, mode)]
        expect = entry.expectation(mode)
        assert expect is not None, f"{entry.name} [{mode}] has no expectation"
        wanted = "PASS" if expect.status == "PASS" else "XFAIL"
        assert record.status == wanted, (
            f"{entry.name} [{mode}]: expected {expect.describe()}, got {record.status} "
            f"{record.category} at {record.failed_stage}: {record.message}")
        if record.status == "XFAIL":
            assert record.signature and record.exception_type is not None or \
                record.category in ("NUMERIC_MISMATCH", "OUTPUT_STRUCTURE_MISMATCH",
                                    "ROUNDTRIP_MISMATCH", "EAGER_NONDETERMINISTIC",
                                    "DYNAMIC_SHAPE_FAILURE", "DECOMPOSITION_ERROR")
            later = STAGES[STAGES.index(record.failed_stage) + 1:]
            assert all(record.stage_status[s] == "not_reached" for s in later)


@pytest.mark.parametrize("category", sorted(MODEL_CATEGORIES))
def test_every_model_category_is_demonstrated(category, pathological_rows):
    modes = {mode for (_, mode), r in pathological_rows.items()
             if r.status == "XFAIL" and r.category == category}
    assert len(modes) >= MODEL_CATEGORIES[category], f"{category} seen in modes {modes}"


def test_failures_carry_user_frames_into_the_model_file(pathological_rows):
    for key in [("patho/data_dependent_guard", "non-strict"),
                ("patho/data_dependent_guard", "strict"),
                ("patho/eager_error", "non-strict")]:
        frame = pathological_rows[key].user_frame
        assert frame is not None and frame.startswith("manifests/models/pathological.py:"), key


# Entries whose modes fail export for different reasons, each what that mode's user meets:
# strict trips over Dynamo's own handling of `%` on ints before it reaches the data pointer
# non-strict stops at; strict records math.log2 of a size as a graph op the verifier
# rejects, where non-strict specializes the size.
DIFFERENT_CAUSE_BY_MODE = {"patho/export_error_data_ptr", "patho/spec_violation"}


def test_one_root_cause_is_one_category_and_one_signature_in_both_modes(pathological_rows):
    checked = []
    for entry in PATHOLOGICAL.entries:
        rows = [pathological_rows[(entry.name, m)] for m in ("non-strict", "strict")]
        if entry.name in DIFFERENT_CAUSE_BY_MODE or \
                not all(r.failed_stage == "export" for r in rows):
            continue
        ns, st = rows
        assert ns.category == st.category, (entry.name, ns.category, st.category)
        assert ns.signature == st.signature, (entry.name, ns.error_code, st.error_code)
        checked.append(entry.name)
    assert len(checked) >= 14, checked
    # a custom torch._check message and an unusable fake kernel are among them
    assert {"patho/user_check_custom_message", "patho/unusable_fake_kernel"} <= set(checked)


def test_different_causes_keep_different_signatures(pathological_rows):
    causes = ["patho/data_dependent_guard", "patho/data_dependent_guard_item",
              "patho/data_dependent_op", "patho/missing_fake_kernel",
              "patho/unusable_fake_kernel", "patho/user_check_failed",
              "patho/user_check_custom_message", "patho/invalid_input_rank",
              "patho/invalid_input_key", "patho/constraint_violation",
              "patho/unsupported_type_input", "patho/graph_break",
              "patho/graph_break_builtin"]
    signatures = {pathological_rows[(name, "strict")].signature for name in causes}
    assert len(signatures) == len(causes)


def test_the_check_message_and_the_operator_are_the_error_code(pathological_rows):
    for mode in ("non-strict", "strict"):
        check = pathological_rows[("patho/user_check_custom_message", mode)]
        assert check.category == "USER_CHECK_FAILED"
        assert check.error_code == "torch._check: exportsweep_patho: needs more than 100 rows"
        fake = pathological_rows[("patho/unusable_fake_kernel", mode)]
        assert fake.category == "MISSING_FAKE_KERNEL"
        assert fake.error_code == "exportsweep_patho::unwrittenfake"
        missing = pathological_rows[("patho/missing_fake_kernel", mode)]
        assert missing.error_code == "exportsweep_patho::nofake"


def test_every_export_failure_names_a_line_of_the_model(pathological_rows):
    """Also where torch rejects inputs or outputs without running a model line: then the
    line that defines the model's forward."""
    failed = [r for r in pathological_rows.values() if r.failed_stage == "export"]
    assert len(failed) >= 30
    for r in failed:
        assert (r.user_frame or "").startswith("manifests/models/pathological.py:"), \
            (r.entry, r.mode, r.user_frame)
    # a data-dependent guard names the branch itself in both modes
    lines = {pathological_rows[("patho/guard_inside_interpolate", m)].user_frame
             for m in ("non-strict", "strict")}
    assert len(lines) == 1


NIGHTLY = {e.name: e for e in load_manifest(MANIFESTS / "nightly.yaml").entries}


@pytest.mark.parametrize("name, cause", [
    ("transformers/vilt", "a guard (u0 > 1) inside nn.functional.interpolate; strict wraps it in "
                          "UserError(CONSTRAINT_VIOLATION)"),
    ("transformers/fsmt", "`if not padding_mask.any():` strict refuses the branch itself, "
                          "non-strict fails the guard Tensor.__bool__ raises"),
])
def test_a_real_model_one_root_cause_one_category_one_cluster(name, cause, fresh_loader):
    rows = run_entry(NIGHTLY[name], loader=fresh_loader)
    assert [r.mode for r in rows] == ["non-strict", "strict"]
    assert {r.category for r in rows} == {"DATA_DEPENDENT_GUARD"}, cause
    assert len({r.signature for r in rows}) == 1, cause
    model = name.split("/")[1]
    frames = {r.user_frame for r in rows}
    assert len(frames) == 1 and frames.pop().startswith(f"transformers/models/{model}/"), cause


def test_error_codes_come_from_torch(pathological_rows):
    strict_guard = pathological_rows[("patho/graph_break", "strict")]
    assert strict_guard.error_code       # Dynamo's gb_type
    guard = pathological_rows[("patho/data_dependent_guard", "non-strict")]
    assert "u0" in (guard.error_code or "")         # the guard expression
    invalid = pathological_rows[("patho/invalid_input_rank", "non-strict")]
    assert invalid.error_code == "UserErrorType.INVALID_INPUT"


def test_messages_drop_the_draft_export_advice(pathological_rows):
    for record in pathological_rows.values():
        assert "draft_export" not in (record.message or ""), record.entry


def test_category_table_is_complete_and_documented():
    assert len(set(CATEGORY_NAMES)) == len(CATEGORY_NAMES)
    for c in CATEGORIES:
        assert c.name.isupper() and c.meaning
        assert c.stage is None or c.stage in STAGES or c.stage == CROSSLOAD
    for required in ("TIMEOUT", "WORKER_CRASH", "OOM", "INFRA_ERROR", *MODEL_CATEGORIES):
        assert required in CATEGORY_NAMES


def test_classification_reads_the_exception_chain():
    # A wrapper exception whose cause is a MemoryError is still an OOM; an unknown error
    # in a stage falls back to that stage's category, never to an exception.
    try:
        try:
            raise MemoryError("no more")
        except MemoryError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        assert classify_exception(exc, "export").category == "OOM"
    assert classify_exception(RuntimeError("wrapped"), "export").category == "EXPORT_ERROR"
    assert classify_exception(MemoryError("x"), "eager").category == "OOM"
    failure = classify_exception(ValueError("bad"), "serialize.load")
    assert isinstance(failure, Failure) and failure.category == "DESERIALIZE_ERROR"
    assert failure.stage == "serialize" and failure.exception_type == "ValueError"


def test_readme_documents_every_category():
    readme = (REPO / "README.md").read_text()
    for c in CATEGORIES:
        assert f"| `{c.name}` |" in readme, c.name


def test_torch_2_11_unhashable_output_is_an_unsupported_type():
    # What non-strict export raised for patho/unsupported_type_output on torch 2.11 (H100 run).
    failure = classify_exception(TypeError("unhashable type: 'PathoBox'"), "export")
    assert failure.category == "UNSUPPORTED_TYPE" and failure.error_code == "PathoBox"
    assert classify_exception(TypeError("unhashable type: 'X'"), "eager").category != \
        "UNSUPPORTED_TYPE"          # only export's own handling of an output means that
