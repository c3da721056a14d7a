"""Typed configuration records: what a manifest entry and a sweep ask for.

These are plain frozen dataclasses with no torch import, so that validating a
manifest, printing it and shipping entries to workers stays cheap.  The YAML
contract that produces them lives in :mod:`exporter.manifest`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from exporter.status import EXPECTABLE, FAIL

MODES: tuple[str, ...] = ("non-strict", "strict")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "any")
DTYPES: tuple[str, ...] = (
    "float32", "float64", "float16", "bfloat16",
    "int64", "int32", "int16", "int8", "uint8", "bool",
)
INTEGER_DTYPES = frozenset({"int64", "int32", "int16", "int8", "uint8"})
EXPECT_STATUSES: tuple[str, ...] = EXPECTABLE


@dataclass(frozen=True)
class TensorSpec:
    """One example tensor: random normal for floats, uniform in [low, high) for ints."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int | None = None
    high: int | None = None


@dataclass(frozen=True)
class DimSpec:
    """A named dynamic dimension; ``auto`` lets torch.export decide."""

    name: str | None = None
    min: int | None = None
    max: int | None = None
    auto: bool = False
    derived: tuple[int, str, int] | None = None   # "2*batch+1" -> (2, "batch", 1)


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-4


@dataclass(frozen=True)
class Expectation:
    """A known outcome for one mode: FAIL (optionally with category / stage) or PASS."""

    status: str = FAIL
    category: str | None = None
    stage: str | None = None

    def describe(self) -> str:
        parts = [self.status]
        if self.category:
            parts.append(self.category)
        if self.stage:
            parts.append(f"@{self.stage}")
        return " ".join(parts)


@dataclass(frozen=True)
class Entry:
    """One model of the zoo, fully expanded (defaults, includes and families applied)."""

    name: str
    entrypoint: str
    source: str                       # manifest file the entry (or its family) came from
    base_dir: str                     # directory that relative entrypoint paths resolve against
    family: str = "manual"            # manual | torchvision | timm | transformers
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[TensorSpec, ...] | str | None = None   # specs, or "module:attr" callable
    # More input sets for the same export (torch.export.AdditionalInputs): dims that differ
    # between them become dynamic; the program is checked on each. Or a "module:attr"
    # callable returning a list of input sets.
    examples: tuple[tuple[TensorSpec, ...], ...] | str | None = None
    # A mapping input -> dim -> DimSpec, "auto" (Dim.AUTO on every dim of every tensor input)
    # or "discover" (the same, overriding a case's own dims, and the dynamic stage also tries
    # each range's edges and random sizes inside it).
    dynamic_shapes: Mapping[int, Mapping[int, DimSpec]] | str | None = None
    modes: tuple[str, ...] = MODES
    device: str = "cpu"
    tolerance: Tolerance = Tolerance()
    timeout_s: float = 300.0
    tags: tuple[str, ...] = ()
    expect: Mapping[str, Expectation] = field(default_factory=dict)   # mode -> expectation
    train: bool = False
    seed: int = 0
    localize: bool = False            # on an export failure, find the failing submodules
    environments: tuple[str, ...] | None = None   # run only in these (None: in every one)

    def expectation(self, mode: str) -> Expectation | None:
        return self.expect.get(mode)

    def runs_in(self, environment: str) -> bool:
        return self.environments is None or environment in self.environments


def target_path(target: str, base_dir: str) -> str | None:
    """The file that the target part of ``path/file.py:attr`` names, resolved against the
    manifest's folder; None for a ``pkg.module`` target."""
    if not target.endswith(".py"):
        return None
    return target if os.path.isabs(target) else os.path.join(base_dir, target)


@dataclass(frozen=True)
class PipelineOptions:
    """Sweep-wide switches that change what the pipeline does for every entry."""

    draft_export: bool = False        # enrich export failures with draft_export's report
    aoti: bool = False                # run the opt-in AOTInductor stage
    artifacts_dir: str | None = None  # keep .pt2 files here, content-addressed
    load_in_fresh_process: bool = True  # serialize stage reloads in a pristine process
    dynamic_sizes: int = 2            # how many other sizes the dynamic stage tries
    in_process_deadline: bool = True  # SIGALRM deadline; off where a supervisor kills instead
    cuda_fallback: bool = False       # run `cuda` entries on CPU when CUDA is absent (flagged)
    use_cuda: bool = True             # False on CPU workers: `any` entries stay on the CPU even
                                      # where the node has a GPU (it belongs to the GPU workers)
    discover_dynamic: bool = False    # --dynamic discover: every entry as dynamic_shapes: discover
    localize: bool = False            # --localize: every entry as localize: true
    flaky_reruns: int = 0             # --flaky-reruns N: rerun each entry N times, fresh
    handoff_dir: str | None = None    # copy each program that reloaded fine (and its inputs and
                                      # eager outputs) here, for the cross-version stage
    share_between_modes: bool = True  # one decomposition for two identical programs, one
                                      # ep.module() per mode, one decomposition table per
                                      # process; False recomputes all (bench/pipeline_savings.py)
