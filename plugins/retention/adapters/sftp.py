"""SFTP archive adapter: erases the files a target names under an archive root, never outside it.

SFTP has no ``openat`` or ``O_NOFOLLOW``, so confinement is enforced by looking: every
directory between the root and an item is ``lstat``-ed and must be a real directory. A
symlink on the way is never followed; the item is reported as failed (``symlink_in_path``)
so that the run fails loudly. An item that is itself a symlink is unlinked, never its target.
"""

from __future__ import annotations

import errno
import posixpath
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ParamSpec, TypeVar

import paramiko

from retention.adapters.base import (
    Batch,
    EraseOutcome,
    HoldSet,
    HoldSource,
    RecordSource,
    VerifyOutcome,
    no_holds,
)
from retention.errors import (
    TerminalError,
    TransientError,
    UnknownLocationError,
    UnsafeTargetError,
)
from retention.paths import is_prefix, render

P = ParamSpec("P")
R = TypeVar("R")

SYMLINK_IN_PATH = "symlink_in_path"
IS_DIRECTORY = "is_directory"
LEGAL_HOLD = "legal_hold"
_ERASED = "erased"
_GONE = "gone"


@dataclass(frozen=True)
class SftpTarget:
    """Files under ``root`` named by ``path_template`` (a trailing ``/``: everything under that directory)."""

    category: str
    root: str
    path_template: str
    records: RecordSource
    subject_field: str
    holds: HoldSource = no_holds


@dataclass(frozen=True)
class SftpItem:
    """One file or link, by its path relative to the root, and the subject whose data it is.

    A path ending in ``/`` is a directory template's directory that a symlink blocks.
    """

    path: str
    subject: str | None


class _Way(Enum):
    OPEN = "open"
    MISSING = "missing"
    BLOCKED = "blocked"


class _Dir(Enum):
    REAL = "real"
    ABSENT = "absent"
    LINK = "link"


class SftpAdapter:
    """Locates, erases and verifies files on one SFTP session; ``requests`` counts the SFTP calls made."""

    store = "sftp"

    def __init__(self, client: paramiko.SFTPClient, *, batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._client = client
        self._batch_size = batch_size
        self.requests = 0

    def locate(self, target: SftpTarget) -> Iterator[Batch[SftpItem]]:
        """Yield the existing files the target names, in batches of at most ``batch_size``; touch nothing."""
        self._checked_root(target)
        items: list[SftpItem] = []
        for item in self._present(target):
            items.append(item)
            if len(items) == self._batch_size:
                yield _batch(items)
                items = []
        if items:
            yield _batch(items)

    def erase(self, target: SftpTarget, batch: Batch[SftpItem]) -> EraseOutcome:
        """Remove the batch's files not held now, then the directories this left empty (never the root)."""
        root = self._checked_root(target)
        holds = target.holds()
        outcome = EraseOutcome()
        dirs: dict[str, _Dir] = {}
        emptied: set[str] = set()
        for item in batch.items:
            if _held(holds, item):
                outcome.keep(LEGAL_HOLD)
                continue
            result = self._erase_one(root, item.path, dirs)
            if result == _ERASED:
                outcome.erased += 1
            elif result != _GONE:
                outcome.failed += 1
                if result not in outcome.errors:
                    outcome.errors.append(result)
                continue
            parent = posixpath.dirname(item.path.rstrip("/"))
            if parent:
                emptied.add(parent)
        self._prune(root, emptied)
        return outcome

    def verify(self, target: SftpTarget) -> VerifyOutcome:
        """Look again: files present (or behind a symlink) count as remaining, held ones as kept."""
        self._checked_root(target)
        holds = target.holds()
        remaining = kept = 0
        for item in self._present(target):
            if _held(holds, item):
                kept += 1
            else:
                remaining += 1
        return VerifyOutcome(remaining=remaining, kept=kept)

    def _present(self, target: SftpTarget) -> Iterator[SftpItem]:
        """Each existing item the target names, and each path a symlink blocks (it may hide one)."""
        root = _root(target)
        directory = is_prefix(target.path_template)
        for records in target.records():
            # Per record batch, so the cache stays as small as the batch.
            dirs: dict[str, _Dir] = {}
            for record in records:
                path = render(target.path_template, record)
                subject = _subject(record, target.subject_field)
                way = self._located(self._way, root, path, dirs)
                if way is _Way.BLOCKED:
                    yield SftpItem(path, subject)
                elif way is _Way.OPEN and directory:
                    for found in self._walk(root, path):
                        yield SftpItem(found, subject)
                elif way is _Way.OPEN and self._located(self._lstat, root, path) is not None:
                    yield SftpItem(path, subject)

    def _walk(self, root: str, top: str) -> Iterator[str]:
        """Relative paths of every non-directory under ``top``; a symlinked directory is never entered."""
        pending = [top.rstrip("/")]
        while pending:
            rel = pending.pop()
            try:
                entries = self._call(self._client.listdir_attr, _join(root, rel))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
                raise _terminal(exc, "listing") from exc
            for entry in entries:
                child = f"{rel}/{entry.filename}"
                # OpenSSH reads directory entries with lstat: S_ISDIR is never true for a link.
                if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
                    pending.append(child)
                else:
                    yield child

    def _erase_one(self, root: str, path: str, dirs: dict[str, _Dir]) -> str:
        """Re-check one item and remove it: ``_ERASED``, ``_GONE`` (nothing there) or an error code."""
        try:
            way = self._way(root, path, dirs)
            if way is _Way.BLOCKED:
                return SYMLINK_IN_PATH
            # A blocked directory whose way is open again holds files this batch never located.
            if way is _Way.MISSING or path.endswith("/"):
                return _GONE
            attrs = self._lstat(root, path)
            if attrs is None:
                return _GONE
            if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
                return IS_DIRECTORY
            # remove() is unlink(): a symlink item goes, its target stays.
            self._call(self._client.remove, _join(root, path))
        except OSError as exc:
            return _GONE if exc.errno == errno.ENOENT else _code(exc)
        return _ERASED

    def _prune(self, root: str, emptied: set[str]) -> None:
        """Remove these directories and then their parents, deepest first, while empty; never the root."""
        by_depth: dict[int, set[str]] = {}
        for d in emptied:
            by_depth.setdefault(d.count("/") + 1, set()).add(d)
        for depth in range(max(by_depth, default=0), 0, -1):
            for d in by_depth.get(depth, ()):
                try:
                    self._call(self._client.rmdir, _join(root, d))
                except OSError:
                    # Not empty (held or newer files) or already gone: it stays, and so do its parents.
                    continue
                parent = posixpath.dirname(d)
                if parent:
                    by_depth.setdefault(depth - 1, set()).add(parent)

    def _way(self, root: str, path: str, dirs: dict[str, _Dir]) -> _Way:
        """Whether every directory between the root and ``path`` is a real one; ``dirs`` caches lstat."""
        for d in _dirs_on_the_way(path):
            state = dirs.get(d)
            if state is None:
                attrs = self._lstat(root, d)
                state = _dir_state(attrs)
                dirs[d] = state
            if state is _Dir.LINK:
                return _Way.BLOCKED
            if state is _Dir.ABSENT:
                return _Way.MISSING
        return _Way.OPEN

    def _lstat(self, root: str, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self._call(self._client.lstat, _join(root, path))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _located(self, look: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a read-only look-up; an SFTP error other than "no such file" stops the run."""
        try:
            return look(*args, **kwargs)
        except OSError as exc:
            raise _terminal(exc, "lookup") from exc

    def _checked_root(self, target: SftpTarget) -> str:
        """The target's root, once it is confirmed to be a real directory (not a symlink) on the server."""
        root = _root(target)
        try:
            attrs = self._call(self._client.lstat, root)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise _terminal(exc, "lookup") from exc
            attrs = None
        if attrs is None or attrs.st_mode is None or not stat.S_ISDIR(attrs.st_mode):
            raise UnknownLocationError(f"{target.category}: archive root {root} is not a real directory")
        return root

    def _call(self, op: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """One SFTP call; a lost connection raises ``TransientError``, refused keys ``TerminalError``."""
        self.requests += 1
        try:
            return op(*args, **kwargs)
        except (paramiko.AuthenticationException, paramiko.BadHostKeyException) as exc:
            raise TerminalError(f"sftp authentication refused: {type(exc).__name__}") from exc
        except (EOFError, paramiko.SSHException, ConnectionError, TimeoutError) as exc:
            raise TransientError(f"sftp connection lost: {type(exc).__name__}") from exc
        except OSError as exc:
            # paramiko reports a closed channel as a bare OSError, like an SFTP failure status.
            if exc.errno is None and self._connection_lost():
                raise TransientError("sftp connection lost: channel closed") from exc
            raise

    def _connection_lost(self) -> bool:
        channel = self._client.get_channel()
        if channel is None or channel.closed:
            return True
        transport = channel.get_transport()
        return transport is None or not transport.is_active()


def _root(target: SftpTarget) -> str:
    """The target's root without a trailing ``/``; refused unless absolute, normalised and not ``/``."""
    root = target.root.rstrip("/")
    if not root.startswith("/") or posixpath.normpath(root) != root:
        raise UnsafeTargetError(f"{target.category}: archive root must be absolute, normalised and not /")
    return root


def _join(root: str, path: str) -> str:
    return f"{root}/{path.rstrip('/')}"


def _dirs_on_the_way(path: str) -> list[str]:
    """``a/b/c.txt`` -> ``[a, a/b]``; a directory ``a/b/`` -> ``[a, a/b]``: it is on the way to its files."""
    parts = path.rstrip("/").split("/")
    depth = len(parts) if path.endswith("/") else len(parts) - 1
    return ["/".join(parts[:i]) for i in range(1, depth + 1)]


def _dir_state(attrs: paramiko.SFTPAttributes | None) -> _Dir:
    mode = None if attrs is None else attrs.st_mode
    if mode is not None and stat.S_ISLNK(mode):
        return _Dir.LINK
    if mode is not None and stat.S_ISDIR(mode):
        return _Dir.REAL
    return _Dir.ABSENT


def _held(holds: HoldSet, item: SftpItem) -> bool:
    """Held by subject, or by a path prefix relative to the root (as the hold registry stores them)."""
    return holds.subject_held(item.subject) or holds.path_held(item.path)


def _subject(record: Mapping[str, Any], field: str) -> str | None:
    value = record.get(field)
    return None if value is None else str(value)


def _batch(items: list[SftpItem]) -> Batch[SftpItem]:
    return Batch(items=items, keys=[i.path for i in items])


def _code(exc: OSError) -> str:
    """A short, non-personal error code for an SFTP status error."""
    return "permission_denied" if exc.errno == errno.EACCES else "sftp_failure"


def _terminal(exc: OSError, during: str) -> TerminalError:
    return TerminalError(f"sftp {_code(exc)} during {during}")
