"""The registry of stores: which location model belongs to which adapter module, in which order.

A store is an adapter module (``retention.adapters.<name>``) that keeps the contract of
``retention.adapters.base.StoreAdapter`` and offers ``build_target(location, inputs)``, plus
its location model in ``retention.locations``, plus one line in ``STORES`` below. The engine
finds everything through here: it never names a store.

Order matters: file stores come first and the database last, because a category's rows are
the index that names its files: they may go only once the files are proven gone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from retention.errors import TerminalError
from retention.locations import (
    AnyLocation,
    DatabaseLocation,
    FilesystemLocation,
    S3Location,
    SftpLocation,
)

if TYPE_CHECKING:
    from retention.adapters.base import HoldSource, RecordSource, SharedCheck
    from retention.adapters.database import RowSelection


@dataclass(frozen=True)
class StoreSpec:
    """One store: its name (the ``store:`` tag of its locations), its location model, its adapter module."""

    name: str
    location: type[AnyLocation]
    module: str
    """The adapter module; imported only when a target of this store is built."""


STORES: tuple[StoreSpec, ...] = (
    StoreSpec("s3", S3Location, "retention.adapters.s3"),
    StoreSpec("sftp", SftpLocation, "retention.adapters.sftp"),
    StoreSpec("filesystem", FilesystemLocation, "retention.adapters.filesystem"),
    StoreSpec("database", DatabaseLocation, "retention.adapters.database"),
)

DATABASE = "database"
ORDER: tuple[str, ...] = tuple(spec.name for spec in STORES)
FILE_STORES: tuple[str, ...] = tuple(name for name in ORDER if name != DATABASE)
"""Stores whose items the database's records name; each category erases them before its rows."""


@dataclass(frozen=True)
class TargetInputs:
    """What the engine hands an adapter module to build the target of one location."""

    category: str
    selection: RowSelection
    """The records the run acts on in this category."""
    records: Callable[[Sequence[str]], RecordSource]
    """Columns -> a source streaming the selected records with those columns (and their key and
    subject, under ``key_field`` and ``subject_field``)."""
    subject_field: str
    """The field of a streamed record that holds its subject."""
    key_field: str | None
    """The field of a streamed record that holds the record's key: a kept item keeps that record
    (None: a kept item keeps only itself)."""
    holds: HoldSource
    pseudonym_key: bytes
    shared: SharedCheck
    """Of an item batch's keys or paths, those another record that may not be erased now also names."""
    bucket_map: Mapping[str, str] = field(default_factory=dict)
    """Policy bucket name -> real bucket name in this environment (identity if absent)."""
    tables: frozenset[str] = frozenset()
    """Every database table of the category (the records table and its children)."""
    records_deleted: bool = False
    """The category deletes its records table's rows (rather than anonymising them)."""
    roots: Mapping[str, str] = field(default_factory=dict)
    """Store -> the root directory its paths are relative to (``sftp``, ``filesystem``)."""

    def root(self, store: str) -> str:
        """The configured root of ``store``; TerminalError if the environment has none."""
        root = self.roots.get(store)
        if not root:
            raise TerminalError(f"{self.category}: a {store} location needs its root directory configured")
        return root


class _AdapterModule(Protocol):
    def build_target(self, location: Any, inputs: TargetInputs) -> Any: ...


def spec(store: str) -> StoreSpec:
    """The registered store of that name; TerminalError for an unknown one."""
    for s in STORES:
        if s.name == store:
            return s
    raise TerminalError(f"unknown store {store!r}; known: {', '.join(ORDER)}")


def build_target(location: AnyLocation, inputs: TargetInputs) -> Any:
    """The adapter target of one policy location, built by its store's module."""
    module: _AdapterModule = importlib.import_module(spec(location.store).module)
    return module.build_target(location, inputs)


def ordered(stores: set[str]) -> list[str]:
    """``stores`` in erasure order (file stores first, the database last)."""
    return [name for name in ORDER if name in stores]
