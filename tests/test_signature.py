"""Signatures: the same root cause in different models matches, different causes do not."""

from __future__ import annotations

from exporter import signature as sig
from exporter.manifest import load_manifest
from exporter.pipeline import run_entry


def test_normalization_removes_what_varies_per_model():
    a = ("Could not guard on data-dependent expression 4*u1 > 4000 (unhinted: 4*u1 > 4000). "
         "object at 0x7f3a2b1c and /home/a/model.py:12")
    b = ("Could not guard on data-dependent expression 4*u7 > 2000 (unhinted: 4*u7 > 2000). "
         "object at 0x55aa00 and /srv/other/net.py:99")
    assert sig.normalize(a) == sig.normalize(b)
    assert "uN" in sig.normalize(a) and "0xADDR" in sig.normalize(a) and "PATH" in sig.normalize(a)
    # identifiers keep their digits: conv1 and conv2 are different layers, not numbers
    assert sig.normalize("layer conv1 of float32") == "layer conv1 of float32"


def test_draft_export_advice_and_user_stack_do_not_reach_the_signature():
    from exporter.taxonomy import Failure
    base = "Constraints violated (batch)! specialized it to be a constant (4)"
    noisy = (base + "\n\nfrom user code:\n   File \"/x/y.py\", line 3, in forward\n"
             "\nThe error above occurred when calling torch.export.export. If you would like to "
             "view some more information about this error, and get a list of all other errors "
             "that may occur in your export call, you can replace your `export()` call with "
             "`draft_export()`.")
    assert sig.strip_advice(noisy).endswith("in forward")
    plain = Failure.make("C", "export", base, exception_type="T")
    assert Failure.make("C", "export", noisy, exception_type="T").signature == plain.signature
    assert Failure.make("C", "export", base, exception_type="T",
                        error_code="other").signature != plain.signature
    assert len(plain.signature) == 12
    # an explicit cause is all the signature reads: wrappers and wording do not count
    assert Failure.make("C", "export", "wrapped once", cause="guard uN > N").signature == \
        Failure.make("C", "export", "said otherwise", exception_type="X",
                     cause="guard u7 > 2").signature
    assert sig.signature("C", "guard uN > N") != sig.signature("D", "guard uN > N")


def test_bounded_message():
    assert len(sig.bounded_message("x" * 10_000)) == sig.MAX_MESSAGE_CHARS


def test_two_models_with_one_root_cause_share_a_signature(write_manifest, fresh_loader):
    manifest = load_manifest(write_manifest("""
        version: 1
        defaults: {modes: [non-strict, strict]}
        entries:
          - {name: guard, entrypoint: "models/tiny.py:make_guard", inputs: [{shape: [2, 3]}]}
          - {name: item_guard, entrypoint: "models/tiny.py:make_item_guard",
             inputs: [{shape: [4, 3]}]}
          - name: specialize
            entrypoint: models/tiny.py:make_specialize
            inputs: [{shape: [4, 3]}]
            dynamic_shapes: {0: {0: {name: batch, min: 2, max: 32}}}
    """))
    rows = {(r.entry, r.mode): r for e in manifest.entries for r in run_entry(e, loader=fresh_loader)}
    for mode in ("non-strict", "strict"):
        guard, item, spec = (rows[(n, mode)] for n in ("guard", "item_guard", "specialize"))
        assert guard.category == item.category == "DATA_DEPENDENT_GUARD"
        assert guard.user_frame != item.user_frame           # different models, same cause
        assert guard.signature == item.signature, (guard.message, item.message)
        assert spec.category == "CONSTRAINT_VIOLATION"
        assert spec.signature != guard.signature
    # One root cause is one signature in both modes, although strict stops at Dynamo's
    # "Data-dependent branching" and non-strict at a guard raised by Tensor.__bool__.
    assert rows[("guard", "strict")].signature == rows[("guard", "non-strict")].signature
    assert rows[("guard", "strict")].error_code != rows[("guard", "non-strict")].error_code


# -- user frames in installed model libraries ---------------------------------------------------

def test_installed_libraries_are_model_code_and_torch_is_not():
    import os
    import sysconfig

    import torch

    from exporter.signature import _is_model_frame, _library_roots

    roots = _library_roots()
    assert not any(r.rstrip(os.sep).endswith(("site-packages", "dist-packages")) for r in roots)
    stdlib = sysconfig.get_paths()["stdlib"]
    assert not _is_model_frame(os.path.join(stdlib, "functools.py"), roots)
    assert not _is_model_frame(torch.__file__, roots)
    # A system Python keeps site-packages inside its stdlib folder.
    assert _is_model_frame(os.path.join(stdlib, "site-packages", "transformers", "m.py"), roots)


def test_the_user_frame_of_a_failing_model_in_an_installed_package(tmp_path, monkeypatch,
                                                                   fresh_loader):
    """A zoo model's source is library code: its frame is the user frame, in both modes."""
    site = tmp_path / "lib" / "site-packages"
    pkg = site / "zoolib" / "models"
    pkg.mkdir(parents=True)
    (site / "zoolib" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "guard.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
        "        n = int(x.sum().item())\n"
        "        if n > 3:                  # a data-dependent branch\n"
        "            return x * 2\n        return x\n\n\ndef make():\n    return Net()\n")
    monkeypatch.syspath_prepend(str(site))
    from exporter.manifest import load_manifest
    from exporter.pipeline import run_entry
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nentries:\n  - name: g\n    entrypoint: zoolib.models.guard:make\n"
                    "    inputs: [{shape: [2, 3]}]\n")
    records = run_entry(load_manifest(path).entries[0], loader=fresh_loader)
    assert {r.mode for r in records} == {"strict", "non-strict"}
    for r in records:
        assert r.failed_stage == "export" and r.category == "DATA_DEPENDENT_GUARD", r.message
        assert r.user_frame is not None and r.user_frame.startswith("zoolib/models/guard.py:"), \
            (r.mode, r.user_frame)
