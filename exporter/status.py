"""Row statuses: one documented table, beside the failure categories of taxonomy.py.

A row's status is what became of one (entry, mode) once the manifest's expectation is
applied.  Every reader of rows (console, report, diff, JUnit, clusters, ``repro``) takes
what a status means from this table and from the sets derived from it, never from its own
list of names.

=======  ======  ========  =======  =========  ========  ===========================================
status   kind    exported  passing  attention  junit     meaning
=======  ======  ========  =======  =========  ========  ===========================================
PASS     pass    yes       yes      no         (pass)    every stage passed
XFAIL    fail    no        yes      no         skipped   failed as the manifest's ``expect`` says
XPASS    pass    yes       no       yes        failure   passed although a failure was expected:
                                                         the expectation is stale
FAIL     fail    no        no       yes        failure   the model failed a stage, unexpectedly
ERROR    infra   no        no       yes        error     exportsweep or the machine failed around
                                                         the entry (timeout, crash, OOM)
SKIP     skip    no        no       no         skipped   not run (no worker can run it, say)
=======  ======  ========  =======  =========  ========  ===========================================

- *kind*: whose outcome it is: the pipeline's pass, the model's failure, the
  infrastructure's fault, or nothing run.
- *exported*: the pipeline ran to its end (``diff`` calls such an outcome OK).
- *passing*: counts toward the pass rate, ``(PASS + XFAIL) / all final pairs``.
- *attention*: somebody has to act on it (console "needs attention", ``repro``'s verdict
  together with *kind*).
- *junit*: the JUnit element the test case gets (``None``: a plain pass).

The tuple's order is the display order everywhere (counts, legends, filters).
"""

from __future__ import annotations

from dataclasses import dataclass

PASS, XFAIL, XPASS, FAIL, ERROR, SKIP = "PASS", "XFAIL", "XPASS", "FAIL", "ERROR", "SKIP"


@dataclass(frozen=True)
class Status:
    name: str
    kind: str                # "pass" | "fail" | "infra" | "skip"
    exported: bool
    passing: bool
    attention: bool
    junit: str | None        # "failure" | "error" | "skipped" | None
    severity: int            # sort order of trouble in the report, worst first
    colour: str              # badge and chart colour, light theme
    colour_dark: str         # ... dark theme
    ink: str                 # text on the badge, light theme
    ink_dark: str            # ... dark theme
    meaning: str

    @property
    def failure(self) -> bool:
        """The row carries a classified failure (category, stage, signature)."""
        return self.kind in ("fail", "infra")


STATUS_TABLE: tuple[Status, ...] = (
    Status(PASS, "pass", True, True, False, None, 5, "#2f9a5c", "#4fc07f", "#fff", "#0f1216",
           "every stage passed"),
    Status(XFAIL, "fail", False, True, False, "skipped", 3, "#7bb38f", "#5f9a74", "#0f2617",
           "#0f1216", "failed as the manifest expects"),
    Status(XPASS, "pass", True, False, True, "failure", 2, "#d49a12", "#f0bd3c", "#2b1d00",
           "#0f1216", "passed although a failure was expected: update the expectation"),
    Status(FAIL, "fail", False, False, True, "failure", 0, "#d64236", "#f26a5e", "#fff",
           "#0f1216", "a stage failed and the manifest did not expect it"),
    Status(ERROR, "infra", False, False, True, "error", 1, "#8d4bc4", "#b588e6", "#fff",
           "#0f1216", "exportsweep or the machine failed around the entry"),
    Status(SKIP, "skip", False, False, False, "skipped", 4, "#a3aab3", "#6f7781", "#1c1f24",
           "#0f1216", "not run"),
)

STATUSES: tuple[str, ...] = tuple(s.name for s in STATUS_TABLE)
STATUS_BY_NAME: dict[str, Status] = {s.name: s for s in STATUS_TABLE}

# Derived sets, as tuples in display order (legends and counts iterate over them).
PASSING = tuple(s.name for s in STATUS_TABLE if s.passing)
EXPORTED = tuple(s.name for s in STATUS_TABLE if s.exported)
FAILED = tuple(s.name for s in STATUS_TABLE if s.failure)
ATTENTION = tuple(s.name for s in STATUS_TABLE if s.attention)
# An unexpected failure: what makes `repro` exit 1.
FAILED_UNEXPECTEDLY = tuple(s for s in FAILED if s in ATTENTION)
SKIPPED = tuple(s.name for s in STATUS_TABLE if s.kind == "skip")
SEVERITY: dict[str, int] = {s.name: s.severity for s in STATUS_TABLE}

# What a manifest's ``expect: {status: ...}`` may predict, before the expectation is applied.
EXPECTABLE: tuple[str, ...] = (PASS, FAIL)
