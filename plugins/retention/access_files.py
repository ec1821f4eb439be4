"""What the file stores hold under the keys and paths a customer's records name, for the access report.

Read-only. S3: every version and delete marker under each rendered key (or prefix), with its
version id, size and date, one ``ListObjectVersions`` listing per key a record names (never a
listing of the bucket). File trees (the SFTP archive, a mounted share): every directory on an
item's way is looked at without following links, as the erasing adapters do; a file that is a
link is listed as one and never read. Contents go into files.zip a chunk at a time.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from retention.access_render import ObjectVersion, TreeFile
from retention.adapters.s3 import classify
from retention.adapters.tree import dirs_on_the_way
from retention.errors import TerminalError, TransientError, UnknownLocationError

CHUNK = 1 << 20
"""Bytes read at a time when a file's contents go into the ZIP."""

# -- S3 ---------------------------------------------------------------------------------------------


def s3_versions(client: Any, bucket: str, prefix: str) -> Iterator[ObjectVersion]:
    """Every version and delete marker under ``prefix``, a page (up to 1,000) at a time."""
    try:
        pages = client.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}
        )
        for page in pages:
            found = [_version(v, False) for v in page.get("Versions") or ()]
            found += [_version(m, True) for m in page.get("DeleteMarkers") or ()]
            # Versions and delete markers come in two lists: merged, the page is in key order.
            yield from sorted(found, key=lambda v: v.key)
    except (ClientError, BotoCoreError) as e:
        # "from None": botocore's messages may carry the key.
        raise classify(e, "ListObjectVersions", bucket) from None


def _version(raw: dict[str, Any], marker: bool) -> ObjectVersion:
    modified = raw.get("LastModified")
    return ObjectVersion(
        key=str(raw["Key"]),
        version_id=str(raw.get("VersionId") or "null"),
        size=None if marker else int(raw.get("Size") or 0),
        last_modified=modified if isinstance(modified, datetime) else None,
        latest=bool(raw.get("IsLatest")),
        delete_marker=marker,
    )


def object_chunks(client: Any, bucket: str, version: ObjectVersion) -> Iterator[bytes]:
    """One object version's bytes, a chunk at a time."""
    try:
        body = client.get_object(Bucket=bucket, Key=version.key, VersionId=version.version_id)["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()
    except (ClientError, BotoCoreError) as e:
        raise classify(e, "GetObject", bucket) from None


# -- file trees -------------------------------------------------------------------------------------


class TreeFs(Protocol):
    """What is read of a file tree: paramiko's ``SFTPClient`` has it, and so has ``LocalFs``."""

    def lstat(self, path: str) -> Any: ...

    def listdir_attr(self, path: str = ...) -> list[Any]: ...

    def open(self, filename: str, mode: str = ..., bufsize: int = ...) -> Any: ...


@dataclass(frozen=True)
class _LocalEntry:
    filename: str
    st_mode: int
    st_size: int
    st_mtime: float


class LocalFs:
    """A directory of this machine (a mounted share) as a ``TreeFs``: nothing is followed through a link."""

    def lstat(self, path: str) -> Any:
        return os.lstat(path)

    def listdir_attr(self, path: str = ".") -> list[Any]:
        with os.scandir(path) as entries:
            found = []
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                found.append(_LocalEntry(entry.name, st.st_mode, st.st_size, st.st_mtime))
            return found

    def open(self, filename: str, mode: str = "rb", bufsize: int = -1) -> Any:
        if mode not in ("r", "rb"):
            raise ValueError("the access report only reads")
        fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        return os.fdopen(fd, "rb")


@dataclass
class TreeReader:
    """The files of one tree (an SFTP archive or a share) under ``root``, read without following links."""

    fs: TreeFs
    root: str
    store: str

    def __post_init__(self) -> None:
        root = self.root.rstrip("/")
        if not root.startswith("/") or posixpath.normpath(root) != root:
            raise TerminalError(f"the {self.store} root must be absolute, normalised and not /")
        attrs = self._lstat(root)
        if attrs is None or attrs.st_mode is None or not stat.S_ISDIR(attrs.st_mode):
            raise UnknownLocationError(f"the {self.store} root is not a real directory")
        self.root = root

    def files(self, paths: Iterable[str], directory: bool) -> Iterator[TreeFile]:
        """The files the rendered ``paths`` name (a directory path: every file under it)."""
        dirs: dict[str, bool] = {}
        for path in paths:
            if not self._way_open(path, dirs):
                continue
            if directory:
                yield from self._walk(path.rstrip("/"))
            else:
                found = self._file(path)
                if found is not None:
                    yield found

    def chunks(self, item: TreeFile) -> Iterator[bytes]:
        """A regular file's bytes, a chunk at a time; refused if it is no longer the file listed."""
        changed = TransientError(f"a {self.store} file changed while the access report was made")
        try:
            opened = self._call(self.fs.open, self._join(item.path), "rb")
        except FileNotFoundError:
            raise changed from None
        with opened as f:
            # paramiko's file answers fstat: the file opened must be the regular file listed.
            now = f.stat() if hasattr(f, "stat") else None
            if now is not None and not (stat.S_ISREG(now.st_mode or 0) and now.st_size == item.size):
                raise changed
            if hasattr(f, "prefetch"):
                f.prefetch(item.size)  # paramiko: the reads go out together, not one round trip each
            while chunk := f.read(CHUNK):
                yield chunk

    def _way_open(self, path: str, dirs: dict[str, bool]) -> bool:
        """Whether every directory on the way to ``path`` is a real directory (not a link, not missing)."""
        for d in dirs_on_the_way(path):
            if d not in dirs:
                attrs = self._lstat(self._join(d))
                dirs[d] = attrs is not None and attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode)
            if not dirs[d]:
                return False
        return True

    def _file(self, path: str) -> TreeFile | None:
        attrs = self._lstat(self._join(path))
        if attrs is None or attrs.st_mode is None or stat.S_ISDIR(attrs.st_mode):
            return None
        return _tree_file(path, attrs)

    def _walk(self, top: str) -> Iterator[TreeFile]:
        """Every non-directory under ``top``; a linked directory is listed as a link, never entered."""
        pending = [top]
        while pending:
            rel = pending.pop()
            try:
                entries = self._call(self.fs.listdir_attr, self._join(rel))
            except FileNotFoundError:
                continue
            for entry in sorted(entries, key=lambda e: str(e.filename)):
                child = f"{rel}/{entry.filename}"
                if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
                    pending.append(child)
                else:
                    yield _tree_file(child, entry)

    def _lstat(self, path: str) -> Any:
        try:
            return self._call(self.fs.lstat, path)
        except FileNotFoundError:
            return None

    def _join(self, rel: str) -> str:
        return f"{self.root}/{rel.rstrip('/')}"

    def _call(self, fn: Any, *args: Any) -> Any:
        """One call on the tree; "no such file" is raised as ``FileNotFoundError``, the rest classified."""
        try:
            return fn(*args)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise FileNotFoundError(errno.ENOENT, "not found") from None
            if e.errno is None:
                raise TransientError(f"{self.store}: connection lost ({type(e).__name__})") from None
            raise TerminalError(
                f"{self.store}: reading failed ({errno.errorcode.get(e.errno, 'error')})"
            ) from None
        except (EOFError, TimeoutError) as e:
            raise TransientError(f"{self.store}: connection lost ({type(e).__name__})") from None


def _tree_file(path: str, attrs: Any) -> TreeFile:
    mode = attrs.st_mode or 0
    mtime = getattr(attrs, "st_mtime", None)
    return TreeFile(
        path=path,
        size=getattr(attrs, "st_size", None),
        modified=None if mtime is None else datetime.fromtimestamp(mtime, UTC),
        link=stat.S_ISLNK(mode),
    )


# -- files.zip --------------------------------------------------------------------------------------


def zip_name(*parts: str) -> str:
    """A safe name inside the ZIP: no absolute path, no ``..``, no empty segment, no control character."""
    segments: list[str] = []
    for part in parts:
        for seg in part.replace("\\", "/").split("/"):
            if seg in ("", ".", ".."):
                continue
            segments.append("".join(c if c.isprintable() else "_" for c in seg))
    return "/".join(segments) or "unnamed"


class ZipOut:
    """files.zip, written a chunk at a time (ZIP64, deflated); a name seen twice is written once."""

    def __init__(self, path: str) -> None:
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self._names: set[str] = set()
        self.files = 0

    def add(self, name: str, modified: datetime | None, chunks: Iterable[bytes]) -> None:
        if name in self._names:
            return
        self._names.add(name)
        when = (modified or datetime.now(UTC)).astimezone(UTC)
        info = zipfile.ZipInfo(name, date_time=_zip_time(when))
        info.compress_type = zipfile.ZIP_DEFLATED
        with self._zip.open(info, "w", force_zip64=True) as out:
            for chunk in chunks:
                out.write(chunk)
        self.files += 1

    def close(self) -> None:
        self._zip.close()


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    if when.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)


def with_shared(items: Sequence[Any], shared: frozenset[str], key: str) -> list[Any]:
    """``items`` with ``shared`` set where their ``key`` attribute is among ``shared``."""
    return [replace(i, shared=True) if getattr(i, key) in shared else i for i in items]
