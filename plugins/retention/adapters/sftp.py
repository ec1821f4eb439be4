"""SFTP archive adapter: erases the files a target names under an archive root, never outside it.

SFTP has no ``openat`` or ``O_NOFOLLOW``, so confinement is enforced by looking: every
directory between the root and an item is ``lstat``-ed and must be a real directory. A
symlink on the way is never followed; the item is reported as failed (``symlink_in_path``)
so that the run fails loudly. An item that is itself a symlink is unlinked, never its target.

Items are handled a batch at a time, one step after the other: the directories on the way
(depth by depth, so nothing behind a symlink is ever looked at), then the removals, then the
emptied directories. An item is not looked at before it is removed: ``remove`` is ``unlink``,
which takes a symlink and not its target and refuses a directory, so only a refused removal
is followed by a look (to tell a directory from a denial). On a paramiko ``SFTPClient`` each
step sends all its requests before reading the answers (SFTP numbers them; see ``sftp_pipeline``),
so a batch costs a few round trips instead of several per file; any other client is called one
request at a time.
"""

from __future__ import annotations

import errno
import posixpath
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Any, ParamSpec, TypeVar

import paramiko

from retention.adapters.base import (
    Batch,
    EraseOutcome,
    VerifyOutcome,
)
from retention.adapters.sftp_pipeline import Op, Pipeline
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
    TerminalError,
    TransientError,
    UnknownLocationError,
)
from retention.locations import SftpLocation
from retention.paths import is_prefix
from retention.stores import TargetInputs

P = ParamSpec("P")
R = TypeVar("R")

_IN_FLIGHT = 1000
"""Requests sent before their answers are read (a bounded burst: memory and server buffers)."""


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
        self._pipeline = Pipeline(client, in_flight=_IN_FLIGHT, round_trip=self._round_trip)
        self.requests = 0

    def locate(self, target: SftpTarget) -> Iterator[Batch[SftpItem]]:
        """Yield the existing files the target names, in batches of at most ``batch_size``; touch nothing."""
        self._checked_root(target)
        items: list[SftpItem] = []
        for item in self._present(target):
            items.append(item)
            if len(items) == self._batch_size:
                yield batch_of(items)
                items = []
        if items:
            yield batch_of(items)

    def named(self, target: SftpTarget) -> Iterator[Batch[SftpItem]]:
        """Yield the items the target's records name, in batches of at most ``batch_size``, unlooked at.

        ``erase`` looks anyway (every directory on the way, then the item, by removing it) and
        copes with an item that is missing (not counted) or behind a symlink (failed), so
        locating first would cost every file its look-ups twice. A file template sends no
        request here; a directory template's files are known only by walking, so it is located.
        """
        if is_prefix(target.path_template):
            yield from self.locate(target)
            return
        _root(target)
        items: list[SftpItem] = []
        for records in target.records():
            for record in records:
                items.append(item_of(target, record))
                if len(items) == self._batch_size:
                    yield batch_of(items)
                    items = []
        if items:
            yield batch_of(items)

    def erase(self, target: SftpTarget, batch: Batch[SftpItem]) -> EraseOutcome:
        """Remove the batch's files not held now, then the directories this left empty (never the root)."""
        root = self._checked_root(target)
        outcome = EraseOutcome()
        todo = to_erase(target, batch.items, outcome)
        emptied: set[str] = set()
        for item, result in zip(todo, self._erase_all(root, [i.path for i in todo]), strict=True):
            if result == ERASED:
                outcome.erased += 1
            elif result == NO_WAY:
                outcome.absent.append(item.path)  # its directory is gone (pruned), and it with it
                continue
            elif result == GONE:
                outcome.absent.append(item.path)
            else:
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
        return count_present(target, self._present(target))

    def _present(self, target: SftpTarget) -> Iterator[SftpItem]:
        """Each existing item the target names, and each path a symlink blocks (it may hide one)."""
        root = _root(target)
        directory = is_prefix(target.path_template)
        for records in target.records():
            # Per record batch, so the cache stays as small as the batch.
            dirs: dict[str, _Dir] = {}
            for start in range(0, len(records), _IN_FLIGHT):
                chunk = records[start : start + _IN_FLIGHT]
                items = [item_of(target, r) for r in chunk]
                yield from self._present_items(root, items, dirs, directory)

    def _present_items(
        self, root: str, items: Sequence[SftpItem], dirs: dict[str, _Dir], directory: bool
    ) -> Iterator[SftpItem]:
        ways = [_looked(way) for way in self._ways(root, [i.path for i in items], dirs)]
        files = [i for i, way in zip(items, ways, strict=True) if way is Way.OPEN and not directory]
        found = self._many("lstat", [_join(root, i.path) for i in files])
        present = {
            i.path for i, attrs in zip(files, found, strict=True) if _looked(attrs, gone=None) is not None
        }
        for item, way in zip(items, ways, strict=True):
            if way is Way.BLOCKED:
                yield item
            elif way is Way.OPEN and directory:
                for path in self._walk(root, item.path):
                    yield item.at(path)
            elif way is Way.OPEN and item.path in present:
                yield item

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

    def _erase_all(self, root: str, paths: Sequence[str]) -> list[str]:
        """Re-check the way and remove: per path ``ERASED``, ``GONE``, ``NO_WAY`` or an error code."""
        results: dict[int, str] = {}
        doomed: list[int] = []
        for n, (path, way) in enumerate(zip(paths, self._ways(root, paths, {}), strict=True)):
            if isinstance(way, OSError):
                results[n] = _code(way)
            elif way is Way.BLOCKED:
                results[n] = SYMLINK_IN_PATH
            elif way is Way.MISSING:
                results[n] = NO_WAY
            elif path.endswith("/"):
                # A blocked directory whose way is open again holds files this batch never located.
                results[n] = GONE
            else:
                doomed.append(n)
        results.update(zip(doomed, self._remove_all([_join(root, paths[n]) for n in doomed]), strict=True))
        return [results[n] for n in range(len(paths))]

    def _remove_all(self, paths: Sequence[str]) -> list[str]:
        """Remove items not looked at: per path ``ERASED``, ``GONE`` or an error code.

        ``remove`` is ``unlink``: a symlink item goes and its target stays; a directory is refused
        (by Linux and the BSDs, even for root). Only a refusal is looked at, to report a
        directory as such and anything else by the refusal's status.
        """
        results: list[str] = []
        refused: list[tuple[int, OSError]] = []
        for n, done in enumerate(self._many("remove", paths)):
            if not isinstance(done, OSError):
                results.append(ERASED)
            elif done.errno == errno.ENOENT:
                results.append(GONE)
            else:
                results.append(_code(done))
                refused.append((n, done))
        for (n, exc), attrs in zip(refused, self._many("lstat", [paths[n] for n, _ in refused]), strict=True):
            if isinstance(attrs, OSError):
                results[n] = GONE if attrs.errno == errno.ENOENT else _code(exc)
            elif attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
                results[n] = IS_DIRECTORY
        return results

    def _prune(self, root: str, emptied: set[str]) -> None:
        """Remove these directories and then their parents, deepest first, while empty; never the root."""
        by_depth: dict[int, set[str]] = {}
        for d in emptied:
            by_depth.setdefault(d.count("/") + 1, set()).add(d)
        for depth in range(max(by_depth, default=0), 0, -1):
            level = sorted(by_depth.get(depth, ()))
            for d, done in zip(level, self._many("rmdir", [_join(root, d) for d in level]), strict=True):
                # Not empty (held or newer files) or already gone: it stays, and so do its parents.
                parent = posixpath.dirname(d)
                if not isinstance(done, OSError) and parent:
                    by_depth.setdefault(depth - 1, set()).add(parent)

    def _ways(self, root: str, paths: Sequence[str], dirs: dict[str, _Dir]) -> list[Way | OSError]:
        """``_way`` for many paths: the uncached directories are looked up together, a depth at a time.

        A directory is looked up only once every directory above it is known to be a real one, so
        nothing behind a symlink or a missing directory is ever looked at. A look-up that fails
        for another reason than "no such file" is returned for the paths that needed it.
        """
        chains = [dirs_on_the_way(p) for p in paths]
        failed: dict[str, OSError] = {}
        for depth in range(max((len(c) for c in chains), default=0)):
            wanted = list(
                dict.fromkeys(
                    c[depth]
                    for c in chains
                    if len(c) > depth
                    and c[depth] not in dirs
                    and all(dirs.get(d) is _Dir.REAL for d in c[:depth])
                )
            )
            for d, attrs in zip(wanted, self._many("lstat", [_join(root, d) for d in wanted]), strict=True):
                if isinstance(attrs, OSError) and attrs.errno != errno.ENOENT:
                    failed[d] = attrs
                else:
                    dirs[d] = _dir_state(None if isinstance(attrs, OSError) else attrs)
        return [_way_known(chain, dirs, failed) for chain in chains]

    def _many(self, op: Op, paths: Sequence[str]) -> list[Any]:
        """One SFTP operation (``lstat``, ``remove``, ``rmdir``) on many absolute paths.

        Per path its answer (attributes, or None) or the ``OSError`` the server's status means;
        a lost connection raises ``TransientError`` for the whole call.
        """
        return self._pipeline.many(op, paths)

    def _round_trip(self, requests: int, send: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``_call`` for one round trip of ``requests`` requests (a pipelined burst, or one request)."""
        result = self._call(send, *args, **kwargs)
        self.requests += requests - 1  # _call counted one
        return result

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

    # -- read-only, for the orphan sweep (``retention.sweep``) -------------------------------------

    def listed_files(self, root: str, top: str) -> Iterator[tuple[str, bool, int]]:
        """(path relative to ``root``, is a symlink, modification time in seconds) of every
        non-directory under the directory ``top`` (``""``: the root itself; else ending in ``/``),
        names sorted per directory; touches nothing.

        Nothing is followed: a symlinked directory is yielded as a link and never entered, and so is
        a symlink on the way from the root to ``top``. A missing ``top`` yields nothing; a ``root``
        that is not a real directory raises ``UnknownLocationError``.
        """
        attrs = self._looked_up(root)
        if attrs is None or attrs.st_mode is None or not stat.S_ISDIR(attrs.st_mode):
            raise UnknownLocationError(f"orphan sweep: archive root {root} is not a real directory")
        for d in dirs_on_the_way(top) if top else []:
            attrs = self._looked_up(_join(root, d))
            mode = None if attrs is None else attrs.st_mode
            if attrs is not None and mode is not None and stat.S_ISLNK(mode):
                yield d, True, int(attrs.st_mtime or 0)
                return
            if mode is None or not stat.S_ISDIR(mode):
                return
        pending = [top.rstrip("/")]
        while pending:
            rel = pending.pop()
            try:
                entries = self._call(self._client.listdir_attr, _join(root, rel) if rel else root)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
                raise _terminal(exc, "listing") from exc
            subdirs = []
            for entry in sorted(entries, key=lambda e: e.filename):
                child = f"{rel}/{entry.filename}" if rel else entry.filename
                mode = entry.st_mode or 0
                # OpenSSH reads directory entries with lstat: S_ISDIR is never true for a link.
                if stat.S_ISDIR(mode):
                    subdirs.append(child)
                else:
                    yield child, stat.S_ISLNK(mode), int(entry.st_mtime or 0)
            pending.extend(reversed(subdirs))

    def _looked_up(self, path: str) -> paramiko.SFTPAttributes | None:
        """``lstat`` of an absolute path; None if it does not exist (any other failure is terminal)."""
        try:
            return self._call(self._client.lstat, path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise _terminal(exc, "lookup") from exc


def _join(root: str, path: str) -> str:
    return f"{root}/{path.rstrip('/')}"


def _way_known(
    chain: Sequence[str], dirs: Mapping[str, _Dir], failed: Mapping[str, OSError]
) -> Way | OSError:
    for d in chain:
        if d in failed:
            return failed[d]
        state = dirs[d]
        if state is _Dir.LINK:
            return Way.BLOCKED
        if state is _Dir.ABSENT:
            return Way.MISSING
    return Way.OPEN


def _looked(answer: Any, gone: Any = GONE) -> Any:
    """A look-up's answer while locating; any failure but "no such file" (then ``gone``) stops the run."""
    if not isinstance(answer, OSError):
        return answer
    if answer.errno == errno.ENOENT:
        return gone
    raise _terminal(answer, "lookup") from answer


def _dir_state(attrs: paramiko.SFTPAttributes | None) -> _Dir:
    mode = None if attrs is None else attrs.st_mode
    if mode is not None and stat.S_ISLNK(mode):
        return _Dir.LINK
    if mode is not None and stat.S_ISDIR(mode):
        return _Dir.REAL
    return _Dir.ABSENT


def _code(exc: OSError) -> str:
    """A short, non-personal error code for an SFTP status error."""
    return "permission_denied" if exc.errno == errno.EACCES else "sftp_failure"


def _terminal(exc: OSError, during: str) -> TerminalError:
    return TerminalError(f"sftp {_code(exc)} during {during}")


SftpTarget = TreeTarget
SftpItem = TreeItem


def build_target(location: SftpLocation, inputs: TargetInputs) -> TreeTarget:
    """The target of one SFTP location (see ``tree.build_tree_target``)."""
    return build_tree_target(location, inputs)


def _root(target: TreeTarget) -> str:
    return checked_root(target, "archive")
