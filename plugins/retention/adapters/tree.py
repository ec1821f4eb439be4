"""What the two file-tree stores (the SFTP archive and the mounted share) share: their target, their
items, and the rules for paths under a root.

A tree target names files under a root by a path template filled from each record; a
template ending in ``/`` names a whole directory. Both adapters keep the same contract:
paths stay under the root, a symlink on the way is never followed, holds are checked per item.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from retention.adapters.base import (
    Batch,
    EraseOutcome,
    HoldSet,
    HoldSource,
    RecordSource,
    SharedCheck,
    VerifyOutcome,
    no_holds,
    not_shared,
)
from retention.errors import UnsafeTargetError
from retention.locations import FilesystemLocation, SftpLocation
from retention.paths import placeholders, render
from retention.results import Reason
from retention.stores import TargetInputs

SYMLINK_IN_PATH = "symlink_in_path"
"""Error code: a directory on the way to the item is a symlink; nothing behind it was touched."""
IS_DIRECTORY = "is_directory"
"""Error code: a directory stands where the template names a file; it was not removed."""
ERASED = "erased"
GONE = "gone"
NO_WAY = "no_way"
"""Gone because a directory on its way is: nothing there, and no emptied directory to prune."""


@dataclass(frozen=True)
class TreeTarget:
    """Files under ``root`` named by ``path_template`` (a trailing ``/``: everything under that directory)."""

    category: str
    root: str
    path_template: str
    records: RecordSource
    subject_field: str
    holds: HoldSource = no_holds
    key_field: str | None = None
    """The records' key column: a kept item names the records whose rows must stay with it."""
    shared: SharedCheck = not_shared


@dataclass(frozen=True)
class TreeItem:
    """One file or link, by its path relative to the root, the subject whose data it is, and the
    keys of the records that named it.

    A path ending in ``/`` is a directory template's directory that a symlink blocks.
    """

    path: str
    subject: str | None
    records: frozenset[str] = frozenset()

    def at(self, path: str) -> TreeItem:
        """The same record's item at another path (a file found under a directory item)."""
        return TreeItem(path, self.subject, self.records)


def item_of(target: TreeTarget, record: Mapping[str, Any]) -> TreeItem:
    """The item one record names: its rendered path (``UnsafeTargetError`` if unsafe), subject and key."""
    key = record.get(target.key_field) if target.key_field else None
    return TreeItem(
        render(target.path_template, record),
        subject_of(record, target.subject_field),
        frozenset() if key is None else frozenset({str(key)}),
    )


class Way(Enum):
    """What lies on the way from the root to an item."""

    OPEN = "open"
    MISSING = "missing"
    BLOCKED = "blocked"


def build_tree_target(location: SftpLocation | FilesystemLocation, inputs: TargetInputs) -> TreeTarget:
    """The target of one file-tree location: its store's root and the path template filled per record."""
    return TreeTarget(
        category=inputs.category,
        root=inputs.root(location.store),
        path_template=location.path,
        records=inputs.records(placeholders(location.path)),
        subject_field=inputs.subject_field,
        holds=inputs.holds,
        key_field=inputs.key_field,
        shared=inputs.shared,
    )


def checked_root(target: TreeTarget, what: str) -> str:
    """The target's root without a trailing ``/``; refused unless absolute, normalised and not ``/``."""
    root = target.root.rstrip("/")
    if not root.startswith("/") or posixpath.normpath(root) != root:
        raise UnsafeTargetError(f"{target.category}: {what} root must be absolute, normalised and not /")
    return root


def dirs_on_the_way(path: str) -> list[str]:
    """``a/b/c.txt`` -> ``[a, a/b]``; a directory ``a/b/`` -> ``[a, a/b]``: it is on the way to its files."""
    parts = path.rstrip("/").split("/")
    depth = len(parts) if path.endswith("/") else len(parts) - 1
    return ["/".join(parts[:i]) for i in range(1, depth + 1)]


def held(holds: HoldSet, item: TreeItem) -> bool:
    """Held by subject, or by a path prefix relative to the root (as the hold registry stores them)."""
    return holds.subject_held(item.subject) or holds.path_held(item.path)


def subject_of(record: Mapping[str, Any], field: str) -> str | None:
    """The record's subject as text, or None."""
    value = record.get(field)
    return None if value is None else str(value)


def batch_of(items: list[TreeItem]) -> Batch[TreeItem]:
    """A batch of items, keyed by their paths for the ledger digest."""
    return Batch(items=items, keys=[i.path for i in items])


def to_erase(target: TreeTarget, items: Sequence[TreeItem], outcome: EraseOutcome) -> list[TreeItem]:
    """The items that may go now; the held and the shared ones are counted as kept, with their records."""
    holds = target.holds()
    free: list[TreeItem] = []
    for item in items:
        if held(holds, item):
            outcome.keep(Reason.LEGAL_HOLD, records=item.records)
        else:
            free.append(item)
    shared = target.shared([i.path for i in free]) if free else frozenset()
    todo: list[TreeItem] = []
    for item in free:
        if item.path in shared:
            outcome.keep(Reason.SHARED_WITH_NOT_DUE, records=item.records)
        else:
            todo.append(item)
    return todo


def count_present(target: TreeTarget, present: Iterable[TreeItem], chunk: int = 500) -> VerifyOutcome:
    """Looking again: present items are remaining, unless held or shared (then kept)."""
    holds = target.holds()
    remaining = kept = 0
    batch: list[TreeItem] = []

    def settle() -> None:
        nonlocal remaining, kept
        free = [i for i in batch if not held(holds, i)]
        shared = target.shared([i.path for i in free]) if free else frozenset()
        still = sum(1 for i in free if i.path not in shared)
        remaining += still
        kept += len(batch) - still
        batch.clear()

    for item in present:
        batch.append(item)
        if len(batch) == chunk:
            settle()
    settle()
    return VerifyOutcome(remaining=remaining, kept=kept)
