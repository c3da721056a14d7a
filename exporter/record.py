"""The one typed record the pipeline fills in, per (entry, mode).

It holds plain Python values only (no tensors, no torch objects), so it can be
pickled across processes and turned into an Arrow row by :mod:`exporter.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.spec import Entry, Expectation
from exporter.status import ERROR, FAIL, PASS, SKIP, XFAIL, XPASS
from exporter.taxonomy import CATEGORY_BY_NAME, STAGE_ORDINAL, STAGES, Failure

STAGE_STATES = ("passed", "failed", "skipped", "not_reached")


@dataclass
class Record:
    entry: str
    family: str
    mode: str
    device: str                       # where it ran
    requested_device: str = "cpu"     # what the manifest asked for (cpu | cuda | any)
    tags: list[str] = field(default_factory=list)
    status: str = PASS
    stage_reached: str | None = None
    failed_stage: str | None = None
    category: str | None = None
    exception_type: str | None = None
    error_code: str | None = None
    message: str | None = None
    signature: str | None = None
    user_frame: str | None = None
    repro: str | None = None
    expected: str | None = None
    skip_reason: str | None = None
    stage_status: dict[str, str] = field(default_factory=lambda: dict.fromkeys(STAGES, "not_reached"))
    seconds: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0
    peak_rss_mb: float | None = None
    param_count: int | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    node_count: int | None = None
    op_histogram: dict[str, int] = field(default_factory=dict)
    graph_inputs: dict[str, int] = field(default_factory=dict)    # InputKind -> count
    graph_outputs: dict[str, int] = field(default_factory=dict)   # OutputKind -> count
    dynamic_dims: list[str] = field(default_factory=list)
    dynamic_sizes_tested: list[str] = field(default_factory=list)
    dynamic_requested: list[str] = field(default_factory=list)    # exporter.dynamism
    dynamic_achieved: list[str] = field(default_factory=list)
    dynamic_specialized: list[str] = field(default_factory=list)
    dynamic_relations: list[str] = field(default_factory=list)
    dynamic_suggested: str | None = None      # torch's fix for a violated spec, as a snippet
    localized_paths: list[str] = field(default_factory=list)        # exporter.localize
    localized_classes: list[str] = field(default_factory=list)
    localized_categories: list[str] = field(default_factory=list)
    localized_passing: list[str] = field(default_factory=list)
    localize_s: float | None = None
    localize_complete: bool | None = None
    reruns: int | None = None                 # --flaky-reruns: fresh-process reruns done
    flaky: bool | None = None
    flaky_outcomes: list[str] = field(default_factory=list)
    float64_judged: list[str] = field(default_factory=list)   # float32 failures float64 overturned
    decomposed_node_count: int | None = None
    non_core_ops: list[str] = field(default_factory=list)
    artifact_path: str | None = None
    artifact_sha256: str | None = None
    artifact_bytes: int | None = None
    draft_failures: list[str] = field(default_factory=list)
    draft_report: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    traceback: str | None = None          # for logs and repro only; not a table column

    # -- transitions ---------------------------------------------------------------------------

    def passed(self, stage: str) -> None:
        self.stage_status[stage] = "passed"
        self.stage_reached = stage

    def skipped(self, stage: str) -> None:
        self.stage_status[stage] = "skipped"

    def fail(self, failure: Failure) -> None:
        """Record a failure; a stage of None means the orchestrator could not tell which
        stage was running (a worker that died or hung as a whole)."""
        if failure.stage in self.stage_status:
            self.stage_status[failure.stage] = "failed"
            self.stage_reached = failure.stage
            self.failed_stage = failure.stage
        self.category = failure.category
        self.exception_type = failure.exception_type
        self.error_code = failure.error_code
        self.message = failure.message
        self.signature = failure.signature
        self.user_frame = failure.user_frame
        self.traceback = failure.traceback
        self.status = ERROR if CATEGORY_BY_NAME[failure.category].infra else FAIL

    def skip(self, reason: str) -> None:
        self.status = SKIP
        self.skip_reason = reason
        self.stage_status = dict.fromkeys(STAGES, "skipped")

    def apply_expectation(self, expect: Expectation | None) -> None:
        """Turn FAIL into XFAIL and PASS into XPASS where the manifest predicted a failure."""
        if expect is None or self.status in (ERROR, SKIP):
            return
        self.expected = expect.describe()
        if expect.status != FAIL:
            return
        if self.status == PASS:
            self.status = XPASS
        elif self.status == FAIL and (expect.category in (None, self.category)) and (
                expect.stage in (None, self.failed_stage)):
            self.status = XFAIL

    @property
    def stage_ordinal(self) -> int:
        return STAGE_ORDINAL.get(self.stage_reached or "", 0)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict
        return asdict(self)


def new_record(entry: Entry, mode: str, device: str) -> Record:
    return Record(entry=entry.name, family=entry.family, mode=mode, device=device,
                  requested_device=entry.device, tags=list(entry.tags))


def new_record_like(other: Record) -> Record:
    """A blank record for the same (entry, mode), e.g. to replace one that cannot travel."""
    return Record(entry=other.entry, family=other.family, mode=other.mode, device=other.device,
                  requested_device=other.requested_device, tags=list(other.tags),
                  repro=other.repro, started_at=other.started_at, finished_at=other.finished_at)
