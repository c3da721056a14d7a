"""Where results live: a local folder or an object-store URI, through pyarrow's filesystems.

``--out results`` and ``--out file:///data/results`` are local; ``s3://bucket/prefix`` and
``gs://bucket/prefix`` go through pyarrow's S3 / GCS filesystems (credentials and endpoint
from the usual environment: ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...; options such as
``?endpoint_override=host:port&scheme=http`` may ride on the URI, as pyarrow reads them).

Publishing is atomic everywhere: on a local disk a dot-named temporary file is fsync'ed and
renamed; an object store has no rename, but an object appears whole when its upload
completes (or never), and every name we publish rows under is unique.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from exporter.errors import UsageError


@dataclass(frozen=True)
class Location:
    """A results folder: a filesystem and the folder's path inside it."""

    fs: pafs.FileSystem
    root: str        # path inside ``fs``, no trailing slash
    uri: str         # as the user wrote it, for messages
    local: bool

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def __str__(self) -> str:
        return self.uri


def location(where: str, what: str = "results location") -> Location:
    """Parse ``--out`` / ``DIR`` (or an output file, ``what`` naming it in errors): a local
    path or a URI pyarrow knows (s3://, gs://, file://)."""
    if "://" not in where:
        return Location(pafs.LocalFileSystem(), os.path.abspath(where), where, True)
    try:
        fs, path = pafs.FileSystem.from_uri(where)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise UsageError(f"{what} {where!r}: {exc}") from None
    local = isinstance(fs, pafs.LocalFileSystem)
    return Location(fs, path.rstrip("/") or path, where, local)


def exists(loc: Location, path: str) -> bool:
    return loc.fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(loc: Location, path: str) -> bool:
    info = loc.fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        return True
    # Object stores have no folders: a prefix "exists" when something lies under it.
    return not loc.local and info.type == pafs.FileType.NotFound and bool(listing(loc, path))


def listing(loc: Location, folder: str) -> list[pafs.FileInfo]:
    """Direct children of ``folder`` (files and sub-folders); [] when it does not exist."""
    try:
        return loc.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_bytes(loc: Location, path: str) -> bytes | None:
    """A whole file's bytes, or None when it does not exist."""
    try:
        with loc.fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:            # pyarrow's S3 "not found" is a plain OSError
        if not exists(loc, path):
            return None
        raise exc


def publish_bytes(loc: Location, path: str, data: bytes) -> None:
    """Make ``path`` hold ``data``, all or nothing, even if this process dies half-way."""
    if not loc.local:
        with loc.fs.open_output_stream(path) as f:   # the object appears when the upload completes
            f.write(data)
        return
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk, a folder where the file should go, a kill signal: leave nothing behind.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def publish_table(loc: Location, path: str, table: pa.Table,
                  metadata: dict[str, str] | None = None) -> int:
    """Write ``table`` as one Parquet file atomically; returns its size in bytes."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    publish_bytes(loc, path, data)
    return len(data)


def open_parquet(loc: Location, path: str) -> pq.ParquetFile:
    return pq.ParquetFile(loc.fs.open_input_file(path))


def delete(loc: Location, path: str) -> None:
    try:
        loc.fs.delete_file(path)
    except FileNotFoundError:
        pass


def upload_folder(local_folder: str, loc: Location, target: str, append: bool = False) -> int:
    """Copy a local folder's files (one level) under ``target``; returns how many.  With
    ``append``, a file already there keeps its content and gets the new bytes after it
    (a resumed run's logs follow the first attempt's)."""
    if not os.path.isdir(local_folder):
        return 0
    count = 0
    for name in sorted(os.listdir(local_folder)):
        src = os.path.join(local_folder, name)
        if os.path.isfile(src):
            with open(src, "rb") as f:
                data = f.read()
            path = posixpath.join(target, name)
            before = read_bytes(loc, path) if append else None
            publish_bytes(loc, path, (before or b"") + data)
            count += 1
    return count


def _fsync_dir(folder: str) -> None:
    """Flush a directory's entries, so that a rename survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_output(target: str, data: bytes) -> None:
    """Write a command's output file (report, JUnit XML): a local path or an object-store URI.
    A target that cannot be written is a UsageError naming it, and leaves nothing behind."""
    loc = location(target, "output")
    if loc.local and os.path.isdir(loc.root):
        raise UsageError(f"-o {target}: is a folder; name a file")
    try:
        publish_bytes(loc, loc.root, data)
    except OSError as exc:
        raise UsageError(f"-o {target}: cannot write it ({exc.strerror or exc})") from None
