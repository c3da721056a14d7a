"""The results folder's contract, in one place: names, partitioning and the run record.

::

    DIR/                                   a local folder or an object-store URI
      run_id=<id>/                         one run: a hive partition, so dataset readers
        part-00000-<uuid>.parquet            (pyarrow, DuckDB) see a ``run_id`` column
        part-compacted-<uuid>.parquet      rows: one file per flush, or one after compaction
        _run.json                          the run record (:class:`RunMeta`)
        _compact.lock                      held while a compaction runs (local disks)
        _logs/                             driver and worker logs (JSON lines)
      _clusters/run_id=<id>/clusters.parquet   failure clusters of the run

Everything that is not rows starts with ``_`` (or ``.``, for files being written), which
dataset readers skip, as they skip Hadoop's ``_SUCCESS``: ``ds.dataset(DIR)`` stays readable.
The writer (:mod:`.sink`) and every reader (:mod:`.runs`) take these names from here.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from exporter.errors import UsageError
from exporter.text import quote

RUN_PREFIX = "run_id="
RUN_META = "_run.json"
LOG_DIR = "_logs"
CLUSTERS_DIR = "_clusters"
CLUSTERS_FILE = "clusters.parquet"
COMPACT_LOCK = "_compact.lock"
REPLACES_KEY = "exportsweep.replaces"     # Parquet metadata of a compacted file: what it replaces
ALIASES = ("latest", "previous")          # run references that are not ids
MAX_RUN_ID = 128                          # characters: far below any filesystem's name limit


def new_run_id() -> str:
    """A fresh run id: sortable UTC time and a random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:4]


def run_id_problem(run_id: object) -> str | None:
    """Why ``run_id`` cannot name a run (None: it can).  Ids become folder names: only
    letters, digits, '.', '_' and '-', not starting with '.', never an alias, never a path."""
    if not isinstance(run_id, str) or not run_id:
        return "a run id must be a non-empty string"
    if len(run_id) > MAX_RUN_ID:
        return f"a run id has at most {MAX_RUN_ID} characters, this one {len(run_id)}"
    if not all(c.isascii() and (c.isalnum() or c in "._-") for c in run_id):
        return "use letters, digits, '.', '_' and '-' only"
    if run_id[0] in "._-":
        return "a run id starts with a letter or a digit"
    if run_id in ALIASES:
        return f"{run_id!r} is reserved: it refers to a run ({', '.join(ALIASES)})"
    return None


def check_run_id(run_id: str, what: str = "run id") -> str:
    """``run_id`` if it can name a run, else a UsageError naming it (quoted, bounded)."""
    problem = run_id_problem(run_id)
    if problem:
        raise UsageError(f"{what} {quote(run_id)}: {problem}")
    return run_id


def run_dir_name(run_id: str) -> str:
    """The run's folder name; every path built from a run id comes through here, so an id
    that could name something outside the results folder never reaches a filesystem."""
    return f"{RUN_PREFIX}{check_run_id(run_id)}"


def run_dir(out: str, run_id: str) -> str:
    """The run's folder as a path (local) or URI (object store), for messages."""
    return f"{out.rstrip('/')}/{run_dir_name(run_id)}" if "://" in out else \
        os.path.join(out, run_dir_name(run_id))


def part_name(index: int) -> str:
    """A flush's file: ordered by index, unique by uuid (two writers never collide)."""
    return f"part-{index:05d}-{uuid.uuid4().hex[:8]}.parquet"


def compacted_name() -> str:
    # "part-" keeps glob readers that expect part files happy; the uuid keeps it unique.
    return f"part-compacted-{uuid.uuid4().hex[:8]}.parquet"


def is_rows_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def clusters_file(run_id: str) -> tuple[str, str, str]:
    """Path parts of a run's clusters table, under DIR."""
    return CLUSTERS_DIR, run_dir_name(run_id), CLUSTERS_FILE


# -- the run record ----------------------------------------------------------------------------

RUN_META_VERSION = 2          # 2: selection and history


@dataclass
class RunMeta:
    """``_run.json``: what a run set out to do, where and with what, and how it ended.

    Written when the run starts and again when it ends (then with ``finished_at``, the
    counts and the file list that lets readers tell a complete run from a damaged one).
    What a run selected (``selection``) is fixed when it is created; each execution, the
    first and every ``--resume``, is appended to ``history`` and never rewrites the first
    one's provenance (``started_at``, ``command_line``, ``manifest_sha256``).
    Keys this version does not know (a newer writer's) are kept in ``extra`` and written
    back unchanged.
    """

    run_id: str
    started_at: str | None = None
    finished_at: str | None = None         # None: running, or interrupted
    manifest: str | None = None
    manifest_sha256: str | None = None
    manifest_files: list[str] = field(default_factory=list)
    command_line: list[str] = field(default_factory=list)
    selected_entries: int | None = None
    only: list[str] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    executor: str | None = None            # "in-process" | "ray"
    expected_pairs: int | None = None      # (entry, mode) pairs the run must end with
    resumed_from_rows: int | None = None
    cluster: dict[str, Any] | None = None  # Ray facts: address, pools, nodes, resources
    wall_s: float | None = None
    counts: dict[str, int] | None = None   # final rows per status
    rows: int | None = None                # final rows
    parts: dict[str, int] | None = None    # rows files of a finished run -> their row counts
    clusters: int | None = None
    compacted: dict[str, int] | None = None
    selection: dict[str, Any] = field(default_factory=dict)   # what decides the run's pairs
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per execution
    # name -> what it is and holds (declaration, Python, torch and package versions); set for
    # runs with more than the driver's own environment
    environments: dict[str, Any] | None = None
    meta_version: int = RUN_META_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, data: dict[str, Any], run_id: str) -> tuple["RunMeta", list[str]]:
        """The record, and what is wrong with it: a field of the wrong type is reported and
        read as its default, never trusted."""
        problems: list[str] = []
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            if value is None:
                if known[key].default is None:
                    values[key] = None         # else: keep the field's own default
            elif _fits(value, _TYPES[key][0]):
                values[key] = value
            else:
                problems.append(f"{RUN_META}: field {key!r} should be {_TYPES[key][1]}, got "
                                f"{type(value).__name__}; ignored")
        values.setdefault("run_id", run_id)
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra), problems


# The JSON type each field must have: (python types, words for messages).
_INT = ((int,), "a whole number")
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "run_id": ((str,), "a string"), "started_at": ((str,), "a string"),
    "finished_at": ((str,), "a string"), "manifest": ((str,), "a string"),
    "manifest_sha256": ((str,), "a string"), "manifest_files": ((list,), "a list"),
    "command_line": ((list,), "a list"), "selected_entries": _INT, "only": ((list,), "a list"),
    "pipeline": ((dict,), "a mapping"), "versions": ((dict,), "a mapping"),
    "resources": ((dict,), "a mapping"), "executor": ((str,), "a string"),
    "expected_pairs": _INT, "resumed_from_rows": _INT, "cluster": ((dict,), "a mapping"),
    "wall_s": ((int, float), "a number"), "counts": ((dict,), "a mapping"), "rows": _INT,
    "parts": ((dict,), "a mapping"), "clusters": _INT, "compacted": ((dict,), "a mapping"),
    "selection": ((dict,), "a mapping"), "history": ((list,), "a list"), "meta_version": _INT,
    "environments": ((dict,), "a mapping"),
}


def _fits(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):          # JSON true is not a count
        return bool in types
    return isinstance(value, types)


def parse_run_meta(data: bytes | None, run_id: str) -> tuple[RunMeta | None, list[str]]:
    """``_run.json``'s bytes (None: no such file) as a record and a list of problems.
    An unreadable record is a problem and no record, never an exception."""
    if data is None:
        return None, []
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, [f"{RUN_META} is unreadable"]
    if not isinstance(parsed, dict):
        return None, [f"{RUN_META} is unreadable"]
    return RunMeta.from_json(parsed, run_id)
