"""Our own exceptions, for mistakes a user can fix.

Anything raised from this hierarchy is reported as one line, without a
traceback, and the CLI exits with code 2.  Failures of the models themselves are
never raised as these: they become classified result rows (see taxonomy.py).
"""

from __future__ import annotations


class ExportsweepError(Exception):
    """Base of every error that is the user's to fix (exit code 2)."""


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
            where.append(f"entry {self.entry!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return ": ".join(where) + f": {self.message}"


class UsageError(ExportsweepError):
    """A command-line request that cannot be satisfied (unknown entry, bad run id...)."""


class ManifestErrors(ExportsweepError):
    """Every mistake found in one validation pass, one line each."""

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
