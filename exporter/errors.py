"""exportsweep's one error hierarchy: every class carries the exit code it ends a command with.

Only the command line (``orchestrator.cli``) turns these into exit codes, and it reads them
from ``exit_code``, nowhere else.  The codes:

===  ==========================================================================
 0   the command did its job (a sweep that completed, whatever the models did)
 1   a check the user asked for tripped (``diff --fail-on``, a failing ``repro``)
 2   bad input: a manifest, a command-line value, a path, a results folder; one
     line per mistake, no traceback
 3   exportsweep itself could not go on (Ray unreachable, no worker starts, a
     Jobs API that refuses)
===  ==========================================================================

Failures of the models themselves are never raised as these: they become classified
result rows (see taxonomy.py).  Classes defined elsewhere (``FamilyError``,
``CompactError``, ``JobsError``) subclass one of these and inherit its code.
"""

from __future__ import annotations

from exporter.text import quote


class ExportsweepError(Exception):
    """Base of every error exportsweep reports to a person: bad input unless a subclass says
    otherwise."""

    exit_code: int = 2


class UsageError(ExportsweepError):
    """A command-line request that cannot be satisfied (unknown entry, bad run id...)."""


class ManifestError(ExportsweepError):
    """A manifest is malformed: names the file, the entry and the field at fault."""

    def __init__(self, file: str, message: str, *, entry: str | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.entry = entry
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file]
        if self.entry is not None:
            where.append(f"entry {quote(self.entry)}")
        if self.field is not None:
            where.append(f"field {quote(self.field)}")
        return ": ".join(where) + f": {self.message}"


class ManifestErrors(ExportsweepError):
    """Every mistake found in one validation pass, one line each."""

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class OrchestratorError(ExportsweepError):
    """exportsweep itself cannot go on (no worker starts, Ray or its Jobs API unreachable)."""

    exit_code = 3


class GateTripped(ExportsweepError):
    """A check the user asked for failed: ``diff --fail-on`` or a ``repro`` whose row fails.
    The command's output has said why; the message is the one-line verdict."""

    exit_code = 1


class JobOutcome(ExportsweepError):
    """A followed Ray Job ended unsuccessfully: the command exits as the job's driver did."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
