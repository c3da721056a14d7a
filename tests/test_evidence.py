"""Reading torch's exceptions: causes that hold across modes, operators, checks, root causes.

The end-to-end cases (real torch.export in both modes) are in tests/test_taxonomy.py; these
are the readers on their own, fast."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import evidence as ev

from conftest import examples


def _chain(exc: BaseException) -> ev.Chain:
    return ev.Chain(ev.exception_chain(exc))


def _raised(make):
    try:
        make()
    except Exception as exc:  # noqa: BLE001 - the point is to hold the live exception
        return exc
    raise AssertionError("did not raise")


class ObservedRuntimeError(Exception):
    """Stands for Dynamo's Observed* exceptions, which carry only text."""


def test_an_exception_dynamo_observed_reads_as_the_one_raised_for_real():
    observed = ObservedRuntimeError("raised exception RuntimeError('needs more than 100 rows')")
    assert ev.observed_exception(observed) == ("RuntimeError", "needs more than 100 rows")

    def wrapped():
        try:
            raise observed
        except ObservedRuntimeError as inner:
            raise ValueError("Observed exception\n  Explanation: ...") from inner

    real = RuntimeError("needs more than 100 rows")
    assert _chain(_raised(wrapped)).root_cause() == _chain(real).root_cause() == \
        "RuntimeError: needs more than 100 rows"
    # a context (an exception handled on the way) is not the cause
    def handled():
        try:
            raise KeyError("looked up and missed")
        except KeyError:
            raise RuntimeError("the real failure")

    assert _chain(_raised(handled)).root_cause() == "RuntimeError: the real failure"


def test_operators_are_named_alike_in_every_form():
    assert ev._op_name(torch.ops.aten.add.Tensor) == "aten::add.Tensor"
    assert ev._op_name(torch.ops.aten.equal.default) == "aten::equal"
    assert ev._op_name("exportsweep_patho.nofake.default") == "exportsweep_patho::nofake"
    assert ev._op_name("<CustomOpDef(exportsweep_patho::nofake)>") == "exportsweep_patho::nofake"


def test_a_check_keeps_its_own_message_and_drops_torchs_plea():
    exc = _raised(lambda: torch._check(False, lambda: "batch must be odd"))
    found = ev.user_check(_chain(exc))
    assert found == ev.Found("torch._check: batch must be odd", "batch must be odd")
    default = ev.user_check(_chain(_raised(lambda: torch._check(False))))
    assert default is not None and "improved" not in default.code
    assert ev.user_check(_chain(RuntimeError("batch must be odd"))) is None   # not from _check


def test_constraint_reasons_leave_out_the_entrys_dim_names():
    def violation(name):
        return (f"Constraints violated ({name})! For more information, run with TORCH_LOGS.\n"
                f"  - You marked {name} as dynamic but your code specialized it to be a "
                f"constant (4).\nSuggested fixes:\n  {name} = 4")
    assert ev._violation_reasons(violation("batch")) == ev._violation_reasons(violation("seq"))
    assert "DIM" in ev._violation_reasons(violation("batch"))
    assert ev._violation_reasons("Constraints violated (b)!") is None


def test_errno_faults_are_their_own_cause():
    import errno
    found = ev.disk_fault(_chain(OSError(errno.ENOSPC, "No space left on device")))
    assert found == ev.Found("ENOSPC", "ENOSPC")
    assert ev.disk_fault(_chain(OSError(errno.ENOENT, "missing"))) is None


@pytest.mark.property
@settings(max_examples=examples(200))
@given(st.text(max_size=300))
def test_readers_take_any_text_without_raising(text):
    ev.observed_exception(ObservedRuntimeError(text))
    ev.observed_exception(ObservedRuntimeError(f"raised exception E({text})"))
    ev._violation_reasons(text)
    ev._check_message(text)
    ev._op_name(text)
    chain = _chain(RuntimeError(text))
    chain.root_cause()
    for match in (ev.missing_fake, ev.user_check, ev.unsupported_type, ev.constraint,
                  ev.data_dependent_guard, ev.graph_break):
        match(chain)


@pytest.mark.parametrize("text", ["", "raised exception E()", "raised exception E((((",
                                  "raised exception E('a', 'b')"])
def test_odd_observed_texts(text):
    ev.observed_exception(ObservedRuntimeError(text))
