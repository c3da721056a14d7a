"""Claiming a run id: at most one run ever owns a folder ``run_id=<id>/``.

Two drivers started with one ``--run-id`` must not write into one run.  On a local disk the
claim is the exclusive creation of the run's folder (``mkdir`` fails for the second).  Object
stores have no exclusive create through pyarrow, so there each driver writes a claim object
with a unique, time-ordered name, waits for the store to settle, and lists the claims: the
first claim wins, the others withdraw theirs and stop.  Two drivers whose clocks differ by
more than the settle time could both win; docs/reliability.md says so.

Also here: whether ``--out`` can hold results at all, checked before anything runs.
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid

from exporter.errors import UsageError
from exporter.text import quote
from orchestrator.results import storage
from orchestrator.results.layout import run_dir_name

CLAIM_PREFIX = "_claim-"
SETTLE_S = 1.0


def check_out(out: str) -> storage.Location:
    """``out`` as a place rows can be written, or a UsageError saying why not."""
    loc = storage.location(out, "--out")
    if not loc.local:
        return loc
    if os.path.exists(loc.root) and not os.path.isdir(loc.root):
        raise UsageError(f"--out {quote(out)}: is a file, not a folder")
    try:
        os.makedirs(loc.root, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {quote(out)}: cannot create the folder "
                         f"({exc.strerror or type(exc).__name__})") from None
    if not os.access(loc.root, os.W_OK | os.X_OK):
        raise UsageError(f"--out {quote(out)}: the folder is not writable")
    return loc


def claim_run(out: str, run_id: str, settle_s: float = SETTLE_S) -> None:
    """Make ``run_id`` this process's, or raise UsageError when another run has it."""
    loc = check_out(out)
    folder = loc.path(run_dir_name(run_id))
    taken = UsageError(f"--run-id {run_id}: that run already exists in {out}; "
                       f"`--resume {run_id}` finishes it, or choose another id")
    if loc.local:
        try:
            os.mkdir(folder)
        except FileExistsError:
            raise taken from None
        except OSError as exc:
            raise UsageError(f"--out {quote(out)}: cannot create the run's folder "
                             f"({exc.strerror or type(exc).__name__})") from None
        return
    if storage.is_dir(loc, folder):
        raise taken
    mine = f"{CLAIM_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex}"
    try:
        storage.publish_bytes(loc, posixpath.join(folder, mine), b"")
    except OSError as exc:
        raise UsageError(f"--out {quote(out)}: cannot write there ({exc})") from None
    time.sleep(settle_s)
    names = [info.base_name for info in storage.listing(loc, folder)]
    claims = sorted(n for n in names if n.startswith(CLAIM_PREFIX))
    others = [n for n in names if not n.startswith(CLAIM_PREFIX)]
    if claims[:1] != [mine] or others:
        storage.delete(loc, posixpath.join(folder, mine))
        raise taken
