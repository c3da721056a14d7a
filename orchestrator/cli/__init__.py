"""The ``exportsweep`` command line, and the one place where outcomes become exit codes.

Handlers (``sweep``, ``results``, ``jobs``) return nothing when the command did its job and
raise one of :mod:`exporter.errors`' classes otherwise; :func:`main` turns each into its
class's ``exit_code`` (0 done, 1 a check tripped, 2 bad input, 3 exportsweep failed).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Sequence

from exporter.errors import ExportsweepError, OrchestratorError
from exporter.text import printable
from orchestrator.cli.parser import build_parser

INTERRUPTED = 130      # the shell's code for SIGINT
BROKEN_PIPE = 141      # the shell's code for SIGPIPE
INTERNAL = OrchestratorError.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    # Models are built from code and config only: never let a library reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        args.func(args)
    except ExportsweepError as exc:
        sys.stderr.write("".join(f"exportsweep: {printable(line)}\n"
                                 for line in str(exc).splitlines())
                         or f"exportsweep: {type(exc).__name__}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("exportsweep: interrupted\n")
        return INTERRUPTED
    except BrokenPipeError:
        # The reader left (`exportsweep diff ... | head`): stop quietly, as Unix tools do, and
        # keep Python from failing again on flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except Exception:  # noqa: BLE001 - our own bug: say so, with the traceback
        sys.stderr.write("exportsweep: internal error (please report):\n" + traceback.format_exc())
        return INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
