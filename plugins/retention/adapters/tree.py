"""What the two file-tree stores (the SFTP archive and the mounted share) share: their target, their
items, and the rules for paths under a root.

A tree target names files under a root by a path template filled from each record; a
template ending in ``/`` names a whole directory. Both adapters keep the same contract:
paths stay under the root, a symlink on the way is never followed, holds are checked per item.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from retention.adapters.base import Batch, HoldSet, HoldSource, RecordSource, no_holds
from retention.errors import UnsafeTargetError
from retention.locations import FilesystemLocation, SftpLocation
from retention.paths import placeholders
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


@dataclass(frozen=True)
class TreeItem:
    """One file or link, by its path relative to the root, and the subject whose data it is.

    A path ending in ``/`` is a directory template's directory that a symlink blocks.
    """

    path: str
    subject: str | None


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
