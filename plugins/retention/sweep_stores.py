"""The orphan sweep's side of each file store: list a root with every item's age, and hand the
unnamed items to the store's own adapter to erase, so that erasing them keeps the adapter's rules.

- S3: every version and delete marker of a key (``S3Adapter.listed_versions``); an item is a key
  with all its versions, its age that of its newest version or delete marker. Erasing goes through
  ``S3Adapter.erase`` (by version id; Object Lock kept and counted; holds read again before).
- SFTP archive: ``SftpAdapter.listed_files``, lstat-based: a symlink is never followed, and the
  sweep never removes one either (it is counted as a link). Erasing goes through
  ``SftpAdapter.erase`` (the way re-checked, emptied directories pruned as for any erasure).
- Filesystem share: the same walk on this machine (``local_files``); erasing through
  ``FilesystemAdapter.erase`` (descriptor-confined, never pruning above the root's prefix).

Plain Python: no Airflow, and the store clients' modules are imported only when used.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from retention.adapters.base import Batch, HoldSource, Record, SharedCheck
from retention.adapters.tree import TreeItem, TreeTarget, dirs_on_the_way
from retention.errors import TerminalError, UnknownLocationError, UnsafeTargetError

if TYPE_CHECKING:
    from retention.adapters.s3 import S3Adapter
    from retention.adapters.sftp import SftpAdapter

SWEEP = "orphan sweep"
"""How the sweep's adapter targets name themselves in errors (they belong to no category)."""

_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class Entry:
    """One listed item: an S3 key with all its versions, or a file (or link) of a tree."""

    key: str
    """The S3 key, or the path relative to the tree's root."""
    modified: datetime
    """When it was last written (S3: its newest version or delete marker)."""
    versions: tuple[tuple[str, bool], ...] = ()
    """S3: (version id, is a delete marker) of every version; empty for a file."""
    link: bool = False
    """A symlink (trees): never followed, never removed."""

    @property
    def items(self) -> int:
        """Items as the engine counts them: object versions and delete markers, or one file."""
        return len(self.versions) or 1


def listing(adapter: Any, store: str, place: str, prefix: str) -> Iterator[Entry]:
    """Every item under ``prefix`` in ``place`` (a real bucket, or a tree's root directory)."""
    if store == "s3":
        return _grouped(_s3(adapter).listed_versions(place, prefix))
    root = tree_root(place)
    if store == "sftp":
        files = _sftp(adapter).listed_files(root, prefix)
    elif store == "filesystem":
        files = local_files(root, prefix)
    else:
        raise TerminalError(f"the orphan sweep cannot list store {store!r}")
    return (Entry(path, datetime.fromtimestamp(mtime, UTC), link=link) for path, link, mtime in files)


def erase_target(store: str, place: str, prefix: str, holds: HoldSource, named: SharedCheck) -> Any:
    """The adapter target erasing unnamed items in ``place``: ``holds`` are read again before each
    erase, and ``named`` (the index, looked up again) keeps what a record names by then."""
    if store == "s3":
        from retention.adapters.s3 import S3Target

        return S3Target(
            category=SWEEP,
            bucket=place,
            key_template="{key}",
            records=_no_records,
            subject_field="",
            holds=holds,
            shared=named,
        )
    # The template only tells the filesystem adapter how far up emptied directories may go: never
    # above the root's prefix. (The SFTP adapter prunes up to the archive root, as for any erasure.)
    return TreeTarget(
        category=SWEEP,
        root=tree_root(place),
        path_template=prefix + "{path}",
        records=_no_records,
        subject_field="",
        holds=holds,
        shared=named,
    )


def batch_of(store: str, entries: Sequence[Entry]) -> Batch[Any]:
    """The adapter batch of these entries; its keys (``key@version`` for S3) feed the ledger digest."""
    if store == "s3":
        from retention.adapters.s3 import S3Version

        versions = [S3Version(e.key, v, marker, frozenset()) for e in entries for v, marker in e.versions]
        return Batch(items=versions, keys=[f"{v.key}@{v.version_id}" for v in versions])
    items = [TreeItem(e.key, None) for e in entries]
    return Batch(items=items, keys=[i.path for i in items])


def unlocked_items(adapter: Any, store: str, place: str, entries: Sequence[Entry]) -> int:
    """Of the entries' items, those no storage lock keeps (S3 Object Lock; trees have none)."""
    if store != "s3" or not entries:
        return sum(e.items for e in entries)
    batch = batch_of(store, entries)
    return len(batch.items) - len(_s3(adapter).object_locks(place, batch.items))


def tree_root(place: str) -> str:
    """A tree's root without a trailing ``/``; refused unless absolute, normalised and not ``/``."""
    root = place.rstrip("/")
    if not root.startswith("/") or posixpath.normpath(root) != root:
        raise UnsafeTargetError("orphan sweep: a root directory must be absolute, normalised and not /")
    return root


def local_files(root: str, top: str) -> Iterator[tuple[str, bool, int]]:
    """``SftpAdapter.listed_files`` for a directory of this machine: (path relative to ``root``, is a
    symlink, modification time) of every non-directory under ``top``, names sorted per directory;
    a symlink (on the way to ``top`` too) is yielded as a link and never entered."""
    found = _lstat(root)
    if found is None or not stat.S_ISDIR(found.st_mode):
        raise UnknownLocationError(f"orphan sweep: share root {root} is not a real directory")
    for d in dirs_on_the_way(top) if top else []:
        found = _lstat(f"{root}/{d}")
        if found is not None and stat.S_ISLNK(found.st_mode):
            yield d, True, int(found.st_mtime)
            return
        if found is None or not stat.S_ISDIR(found.st_mode):
            return
    pending = [top.rstrip("/")]
    while pending:
        rel = pending.pop()
        subdirs = []
        for name, is_dir, is_link, mtime in _scanned(f"{root}/{rel}" if rel else root):
            child = f"{rel}/{name}" if rel else name
            if is_dir:
                subdirs.append(child)
            else:
                yield child, is_link, mtime
        pending.extend(reversed(subdirs))


def _scanned(path: str) -> list[tuple[str, bool, bool, int]]:
    """(name, is a real directory, is a symlink, mtime) of a directory's entries, sorted; none if it went."""
    try:
        with os.scandir(path) as found:
            return sorted(
                (
                    e.name,
                    e.is_dir(follow_symlinks=False),
                    e.is_symlink(),
                    int(e.stat(follow_symlinks=False).st_mtime),
                )
                for e in found
            )
    except FileNotFoundError:
        return []
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "unknown")
        raise TerminalError(f"orphan sweep: listing the share failed ({code})") from None


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _grouped(versions: Iterator[tuple[str, str, bool, datetime]]) -> Iterator[Entry]:
    """Listed versions (in key order) grouped per key; a key's age is its newest version's."""
    key: str | None = None
    found: list[tuple[str, bool]] = []
    newest = _EPOCH
    for listed_key, version_id, is_marker, modified in versions:
        if key is not None and listed_key != key:
            yield Entry(key, newest, tuple(found))
            found, newest = [], _EPOCH
        key = listed_key
        found.append((version_id, is_marker))
        newest = max(newest, modified)
    if key is not None:
        yield Entry(key, newest, tuple(found))


def _no_records() -> Iterator[Sequence[Record]]:
    """The sweep's targets erase the batches they are given: no record names their items."""
    return iter(())


def _s3(adapter: Any) -> S3Adapter:
    from retention.adapters.s3 import S3Adapter

    if not isinstance(adapter, S3Adapter):
        raise TerminalError("the orphan sweep needs the S3 adapter for an s3 root")
    return adapter


def _sftp(adapter: Any) -> SftpAdapter:
    from retention.adapters.sftp import SftpAdapter

    if not isinstance(adapter, SftpAdapter):
        raise TerminalError("the orphan sweep needs the SFTP adapter for an sftp root")
    return adapter
