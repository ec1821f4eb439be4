"""Filesystem adapter: erases the files a target names under a share's root, never outside it.

A *filesystem* store is a directory of this machine (a mounted share, as many agencies keep
one). The contract is the SFTP archive's (``retention.adapters.sftp``): paths rendered from
records, a trailing ``/`` for a whole directory, holds by subject and by path prefix, missing
files already gone, emptied directories pruned, ``verify`` looks again, counts only.

Confinement is stronger than over SFTP because the OS offers ``openat``: the root is opened
once (``O_DIRECTORY | O_NOFOLLOW``) and every directory on an item's way is opened relative to
its parent's descriptor with ``O_NOFOLLOW``, so a symlink on the way is never followed, not
even when it is swapped in between looking and removing. Such an item is reported as failed
(``symlink_in_path``) so that the run fails loudly. Files are removed with
``unlink(name, dir_fd=parent)``: an item that is itself a symlink loses the link, never its
target, and a directory where a file is expected is refused (``is_directory``).

A batch's items are handled in path order, so the directories they share are opened once and
at most one chain of descriptors (root to the current directory) is open at a time. Emptied
directories are removed on the way back up: never the root, and never a directory above the
template's fixed part (``archive/2024/{id}.pdf`` may remove ``archive/2024`` but not ``archive``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence

from retention.adapters.base import (
    Batch,
    EraseOutcome,
    VerifyOutcome,
)
from retention.adapters.tree import (
    ERASED,
    GONE,
    IS_DIRECTORY,
    NO_WAY,
    SYMLINK_IN_PATH,
    TreeItem,
    TreeTarget,
    Way,
    batch_of,
    build_tree_target,
    checked_root,
    count_present,
    dirs_on_the_way,
    item_of,
    to_erase,
)
from retention.errors import (
    RetentionError,
    TerminalError,
    TransientError,
    UnknownLocationError,
)
from retention.locations import FilesystemLocation
from retention.paths import is_prefix
from retention.stores import TargetInputs

MAX_BATCH = 500
"""Items per batch at most (and the default): one ledger entry pair per batch stays small."""

"""Error code: a directory on the item's way is a symlink; nothing behind it was touched."""
"""Error code: a directory stands where the template names a file; it was not removed."""
PERMISSION_DENIED = "permission_denied"
"""Error code: EACCES or EPERM."""
READ_ONLY = "read_only"
"""Error code: EROFS (the share is mounted read-only)."""
SHARE_UNAVAILABLE = "share_unavailable"
"""Error code of ``TRANSIENT_ERRNOS``: the share went away or is busy."""

TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.ENOTCONN,
        errno.ECONNABORTED,
        errno.ECONNRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETUNREACH,
    }
)
"""Errors of a share that went away (or is busy): retrying later may succeed."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class FilesystemAdapter:
    """Locates, erases and verifies files under a local directory, confined to its root by descriptors."""

    store = "filesystem"

    def __init__(self, *, batch_size: int = MAX_BATCH) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        self._batch_size = batch_size

    def locate(self, target: FilesystemTarget) -> Iterator[Batch[FilesystemItem]]:
        """Yield the existing files the target names (and paths a link blocks), in batches; touch nothing."""
        with _opened_root(target) as root_fd:
            yield from self._batches(self._present(target, root_fd))

    def named(self, target: FilesystemTarget) -> Iterator[Batch[FilesystemItem]]:
        """Yield the items the target's records name, in batches, unlooked at (a directory template locates).

        ``erase`` looks anyway (every directory on the way, then the item, by unlinking it) and
        copes with an item that is missing (not counted) or behind a symlink (failed).
        """
        if is_prefix(target.path_template):
            yield from self.locate(target)
            return
        _root(target)
        yield from self._batches(
            item_of(target, record) for records in target.records() for record in records
        )

    def erase(self, target: FilesystemTarget, batch: Batch[FilesystemItem]) -> EraseOutcome:
        """Unlink the batch's files not held now, then the directories this left empty (never the root)."""
        outcome = EraseOutcome()
        with _opened_root(target) as root_fd:
            todo = to_erase(target, batch.items, outcome)
            cursor = _Cursor(root_fd, floor=_floor(target.path_template))
            try:
                for item in sorted(todo, key=_order):
                    result = _erase_one(cursor, item)
                    _tally(outcome, result)
                    if result in (GONE, NO_WAY):
                        outcome.absent.append(item.path)
                cursor.leave_all(prune=True)
            finally:
                cursor.leave_all(prune=False)
        return outcome

    def verify(self, target: FilesystemTarget) -> VerifyOutcome:
        """Look again: files present (or behind a symlink) count as remaining, held ones as kept."""
        with _opened_root(target) as root_fd:
            return count_present(target, self._present(target, root_fd))

    def _batches(self, items: Iterator[FilesystemItem]) -> Iterator[Batch[FilesystemItem]]:
        chunk: list[FilesystemItem] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == self._batch_size:
                yield batch_of(chunk)
                chunk = []
        if chunk:
            yield batch_of(chunk)

    def _present(self, target: FilesystemTarget, root_fd: int) -> Iterator[FilesystemItem]:
        """Each existing item the target names, and each path a symlink blocks (it may hide one)."""
        directory = is_prefix(target.path_template)
        for records in target.records():
            # Rendered (and so checked) before anything is looked at; sorted to share directories.
            items = sorted(
                (item_of(target, r) for r in records),
                key=_order,
            )
            cursor = _Cursor(root_fd, floor=0)
            try:
                for item in items:
                    yield from _present_one(cursor, item, directory)
            finally:
                cursor.leave_all(prune=False)


class _Cursor:
    """The open directories from the root to the current item's parent, one descriptor each.

    ``go`` moves to another chain of directories: it leaves (closes, and when pruning removes if
    emptied) the ones not shared and opens the new ones, each relative to its parent with
    ``O_NOFOLLOW``. Directories that could not be opened are remembered for the cursor's life.
    """

    def __init__(self, root_fd: int, floor: int) -> None:
        self._root_fd = root_fd
        self._floor = max(1, floor)
        self._open: list[tuple[str, int]] = []
        self._closed: dict[str, Way | OSError] = {}
        self.emptied: set[str] = set()
        """Directories (relative paths) an erased or gone item was in: removed when left, if empty."""

    @property
    def fd(self) -> int:
        """The descriptor of the deepest open directory (the root's when none is)."""
        return self._open[-1][1] if self._open else self._root_fd

    def go(self, chain: Sequence[str], *, prune: bool = False) -> Way | OSError:
        """Open ``chain`` (``[a, a/b]``) below the root; OPEN, MISSING, BLOCKED, or the refusal."""
        shared = 0
        while shared < min(len(chain), len(self._open)) and self._open[shared][0] == chain[shared]:
            shared += 1
        while len(self._open) > shared:
            self._leave(prune)
        for rel in chain[shared:]:
            known = self._closed.get(rel)
            if known is not None:
                return known
            way = self._enter(rel)
            if way is not Way.OPEN:
                self._closed[rel] = way
                return way
        return Way.OPEN

    def leave_all(self, *, prune: bool) -> None:
        """Close every open directory, deepest first, removing emptied ones if ``prune``."""
        while self._open:
            self._leave(prune)

    def _enter(self, rel: str) -> Way | OSError:
        parent, name = self.fd, posixpath.basename(rel)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            return _way_refused(exc, parent, name)
        self._open.append((rel, fd))
        return Way.OPEN

    def _leave(self, prune: bool) -> None:
        rel, fd = self._open.pop()
        os.close(fd)
        if not prune or rel not in self.emptied or rel.count("/") + 1 < self._floor:
            return
        try:
            os.rmdir(posixpath.basename(rel), dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS:
                raise classify(exc, "pruning") from exc
            return  # not empty (held or newer files), already gone, or refused: it stays
        parent = posixpath.dirname(rel)
        if parent:
            self.emptied.add(parent)


def _present_one(cursor: _Cursor, item: FilesystemItem, directory: bool) -> Iterator[FilesystemItem]:
    way = cursor.go(dirs_on_the_way(item.path))
    if isinstance(way, OSError):
        raise classify(way, "lookup") from way
    if way is Way.BLOCKED:
        yield item
    elif way is Way.OPEN and directory:
        for path in _walk(cursor.fd, item.path.rstrip("/")):
            yield item.at(path)
    elif way is Way.OPEN and _exists(cursor.fd, posixpath.basename(item.path)):
        yield item


def _erase_one(cursor: _Cursor, item: FilesystemItem) -> str:
    """Re-check the way and unlink: ``ERASED``, ``GONE``, ``NO_WAY`` or an error code."""
    way = cursor.go(dirs_on_the_way(item.path), prune=True)
    if isinstance(way, OSError):
        return error_code(way)
    if way is Way.BLOCKED:
        return SYMLINK_IN_PATH
    if way is Way.MISSING:
        return NO_WAY
    if item.path.endswith("/"):
        # A blocked directory whose way is open again holds files this batch never located.
        result = GONE
    else:
        result = _unlink(cursor.fd, posixpath.basename(item.path))
    parent = posixpath.dirname(item.path.rstrip("/"))
    if result in (ERASED, GONE) and parent:
        cursor.emptied.add(parent)
    return result


def _unlink(parent_fd: int, name: str) -> str:
    """Unlink ``name`` (a file or a link, never a link's target): ``ERASED``, ``GONE`` or an error code."""
    try:
        os.unlink(name, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return GONE
        if exc.errno == errno.EISDIR:
            return IS_DIRECTORY
        if exc.errno in TRANSIENT_ERRNOS:
            raise classify(exc, "removal") from exc
        # Refused otherwise (POSIX allows EPERM for a directory): look, to name it right.
        try:
            mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
        except OSError as look:
            return GONE if look.errno == errno.ENOENT else error_code(exc)
        return IS_DIRECTORY if stat.S_ISDIR(mode) else error_code(exc)
    return ERASED


def _way_refused(exc: OSError, parent_fd: int, name: str) -> Way | OSError:
    """What a refused ``O_NOFOLLOW | O_DIRECTORY`` open means: a missing directory, a symlink, or an error.

    Linux answers ENOTDIR (others ELOOP) for a symlink; a file on the way means nothing is there.
    """
    if exc.errno in TRANSIENT_ERRNOS:
        raise classify(exc, "lookup") from exc
    if exc.errno == errno.ENOENT:
        return Way.MISSING
    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
        return exc
    try:
        mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return Way.MISSING
    except OSError as look:
        if look.errno in TRANSIENT_ERRNOS:
            raise classify(look, "lookup") from look
        return look
    return Way.BLOCKED if stat.S_ISLNK(mode) else Way.MISSING


def _exists(parent_fd: int, name: str) -> bool:
    """Whether ``name`` exists in the directory (a link counts, whatever it points to)."""
    try:
        os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise classify(exc, "lookup") from exc
    return True


def _walk(top_fd: int, top: str) -> Iterator[str]:
    """Relative paths of every non-directory under ``top`` (open as ``top_fd``); no symlink is entered.

    Depth first without recursion: one descriptor per directory level, the levels' names in memory.
    """
    stack: list[tuple[str, int, Iterator[tuple[str, bool]]]] = [(top, top_fd, _entries(top_fd))]
    try:
        while stack:
            rel, fd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                if fd != top_fd:
                    os.close(fd)
                continue
            name, is_dir = entry
            child = f"{rel}/{name}"
            sub = _open_subdir(fd, name) if is_dir else Way.BLOCKED
            if sub is Way.BLOCKED:
                yield child  # a file, a link, or a directory a link replaced since listing: unlinked
            elif isinstance(sub, int):
                stack.append((child, sub, _entries(sub)))
    finally:
        for _, fd, _ in stack:
            if fd != top_fd:
                os.close(fd)


def _entries(fd: int) -> Iterator[tuple[str, bool]]:
    """The directory's entries as (name, is a real directory), sorted by name."""
    try:
        with os.scandir(fd) as found:
            entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in found)
    except OSError as exc:
        raise classify(exc, "listing") from exc
    return iter(entries)


def _open_subdir(parent_fd: int, name: str) -> int | Way:
    """A listed subdirectory's descriptor; BLOCKED if a link replaced it since, MISSING if it is gone."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        way = _way_refused(exc, parent_fd, name)
        if isinstance(way, OSError):
            raise classify(way, "listing") from way
        return way


@contextlib.contextmanager
def _opened_root(target: FilesystemTarget) -> Iterator[int]:
    """The root's descriptor, once it is confirmed to be a real directory (not a symlink); closed after."""
    root = _root(target)
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            problem = "is missing or not a real directory"
            raise UnknownLocationError(f"{target.category}: the filesystem root {problem}") from None
        raise classify(exc, "opening the root") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def error_code(exc: OSError) -> str:
    """A short, non-personal code for an OS error: ``permission_denied``, ``read_only``, ``os_<errno>``..."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PERMISSION_DENIED
    if exc.errno == errno.EROFS:
        return READ_ONLY
    if exc.errno in TRANSIENT_ERRNOS:
        return SHARE_UNAVAILABLE
    name = errno.errorcode.get(exc.errno, "unknown") if exc.errno is not None else "unknown"
    return f"os_{name.lower()}"


def classify(exc: OSError, during: str) -> RetentionError:
    """The engine's error for an OS error: ``TransientError`` if the share went away, or ``TerminalError``."""
    message = f"filesystem {error_code(exc)} during {during}"
    if exc.errno in TRANSIENT_ERRNOS:
        return TransientError(message)
    return TerminalError(message)


def _floor(template: str) -> int:
    """Directories in the template's fixed part (``archive/2024/{id}.pdf``: 2); none above it is pruned."""
    segments = template.rstrip("/").split("/")
    fixed = 0
    for segment in segments if is_prefix(template) else segments[:-1]:
        if "{" in segment:
            break
        fixed += 1
    return fixed


def _order(item: FilesystemItem) -> tuple[str, ...]:
    """Path segments: items of one directory (and its subdirectories) come together."""
    return tuple(item.path.split("/"))


def _tally(outcome: EraseOutcome, result: str) -> None:
    if result == ERASED:
        outcome.erased += 1
    elif result not in (GONE, NO_WAY):
        outcome.failed += 1
        if result not in outcome.errors:
            outcome.errors.append(result)


FilesystemTarget = TreeTarget
FilesystemItem = TreeItem


def build_target(location: FilesystemLocation, inputs: TargetInputs) -> TreeTarget:
    """The target of one filesystem location (see ``tree.build_tree_target``)."""
    return build_tree_target(location, inputs)


def _root(target: TreeTarget) -> str:
    return checked_root(target, "filesystem")
