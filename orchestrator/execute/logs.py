"""structlog configuration: JSON lines to a file for machines, a readable console for people.

Every event carries what was bound where it happened (run, entry, mode,
stage, worker), so a log line can be joined to its result row.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from typing import Any, Iterator, TextIO

import structlog

# Ray runs this in every worker process it starts for a sweep (runtime_env), and the worker
# reads the run's log folder from this variable.
WORKER_SETUP_HOOK = "orchestrator.execute.logs.worker_setup"
LOG_DIR_ENV = "EXPORTSWEEP_LOG_DIR"


class _Tee:
    """Render each event as JSON into the log file and, at INFO and above, on the console."""

    def __init__(self, file: TextIO | None, console: TextIO | None, console_level: int) -> None:
        self._file = file
        self._console = console
        self._console_level = console_level
        self._json = structlog.processors.JSONRenderer(sort_keys=False)
        self._pretty = structlog.dev.ConsoleRenderer(
            colors=bool(console) and console.isatty(), pad_event_to=0)

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        if self._file is not None:
            try:
                self._file.write(self._json(logger, method, dict(event)) + "\n")
                self._file.flush()
            except OSError as exc:
                # A full disk must not turn logging into the run's failure: say so once on
                # the console and go on without the file.
                self._file = None
                if self._console is not None:
                    self._console.write(f"exportsweep: warning: the log file cannot be "
                                        f"written any more ({exc.strerror or exc}); "
                                        f"logging to the console only\n")
        level = logging.getLevelName(event.get("level", "info").upper())
        if self._console is not None and isinstance(level, int) and level >= self._console_level:
            shown = {k: v for k, v in event.items() if k not in ("run", "timestamp")}
            self._console.write(self._pretty(logger, method, shown) + "\n")
        raise structlog.DropEvent


def configure(log_file: str | None = None, *, console: TextIO | None = sys.stderr,
              verbose: bool = False) -> None:
    """Configure structlog for this process (driver or worker)."""
    file = None
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        file = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - process-long
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _Tee(file, console, logging.DEBUG if verbose else logging.WARNING),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=open(os.devnull, "w")),  # noqa: SIM115
        cache_logger_on_first_use=False,
    )


class _LineLogger(io.TextIOBase):
    """A text stream that turns each written line into a debug log event."""

    def __init__(self, logger: Any, stream: str, original: TextIO) -> None:
        self._logger = logger
        self._stream = stream
        self._original = original
        self._partial = ""
        self._logging = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._logging:
            # The logger itself writes to this stream (structlog left unconfigured prints to
            # stdout): pass it through instead of recursing.
            return self._original.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._log(line)
        return len(text)

    def flush(self) -> None:
        self._log(self._partial)
        self._partial = ""

    def _log(self, line: str) -> None:
        if not line.strip():
            return
        self._logging = True
        try:
            self._logger.debug("captured output", stream=self._stream, line=line)
        finally:
            self._logging = False


@contextlib.contextmanager
def captured_output(logger: Any) -> Iterator[None]:
    """Route what torch and the models print (Python-level stdout/stderr, and torch's logging,
    whose handlers write to the current sys.stderr) into the log file, off the console."""
    if not structlog.is_configured():
        # structlog's default logger prints to whatever sys.stdout is at call time, which is
        # about to be the capturing stream itself: bind logging to the real streams first.
        configure(None, console=sys.stderr)
    out = _LineLogger(logger, "stdout", sys.stdout)
    err = _LineLogger(logger, "stderr", sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.flush()
        err.flush()


def worker_setup() -> None:
    """Ray's ``worker_process_setup_hook``: structlog JSON lines into the run's log folder."""
    log_dir = os.environ.get(LOG_DIR_ENV)
    path = os.path.join(log_dir, f"worker-{os.getpid()}.jsonl") if log_dir else None
    configure(path, console=None)
