"""Reading YAML strictly: examples of each refusal, and arbitrary text never escaping."""

from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.yamlfile import MAX_DEPTH, YamlProblem, load_yaml, loads_yaml

from conftest import examples


def test_a_plain_document_reads_as_safe_load_reads_it():
    text = "version: 1\nentries:\n  - {name: a, inputs: [{shape: [2, 3]}]}\nx: &x {a: 1}\ny: *x\n"
    assert loads_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text,phrase", [
    ("a: 1\nb: 2\na: 3\n", "key 'a' appears twice in one mapping (lines 1 and 3)"),
    ("- {k: 1, k: 2}\n", "key 'k' appears twice"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels"),
    ("a: &a [*a]\n", "expands to more than"),
    ("a: [1, 2\n", "invalid YAML at line 2"),
    ("!!python/object:os.system {}\n", "invalid YAML"),
])
def test_refusals(text, phrase):
    with pytest.raises(YamlProblem, match=phrase.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        loads_yaml(text)


def test_bytes_are_checked_before_parsing(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(YamlProblem, match="not UTF-8: byte 3"):
        load_yaml(str(path))
    path.write_bytes(b"a: 1\n" * 10)
    with pytest.raises(YamlProblem, match="the limit is 20"):
        load_yaml(str(path), max_bytes=20)


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#\n ab1.\t%@`?") + ["\x00", "é"]),
               max_size=300))
def test_any_text_reads_or_is_one_problem(text):
    started = time.monotonic()
    try:
        loads_yaml(text)
    except YamlProblem as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
    assert time.monotonic() - started < 5
