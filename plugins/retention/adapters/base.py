"""The contract every store adapter keeps.

An adapter takes a ready client (SQLAlchemy ``Engine``, boto3 S3 client, paramiko
``SFTPClient``) and a *target* built by the planner from a policy location. It never
decides what is due: the target says so. It streams, so memory stays flat however
many items are due, and it returns counts and digests, never lists of items.

- ``locate(target)`` yields the items the target selects, in batches; touches nothing.
- ``erase(target, batch)`` erases exactly the batch's items that are not held at that
  moment and returns what happened; per-item failures are reported, not swallowed.
- ``verify(target)`` looks again and counts what the target still selects.
- ``named(target)`` yields a real run's batches from the
  index alone (keys, paths or key ranges) without looking in the store: ``erase``
  looks anyway, so locating first would read every item twice. Dry runs locate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from retention.journal import JournalTag
from retention.results import Reason

Record = Mapping[str, Any]
"""One row of a policy's primary table (or of a table its records reach through a path): the
columns its templates use, and the record's key and subject."""

RecordSource = Callable[[], Iterator[Sequence[Record]]]
"""Streams the selected records in batches; called again (from the start) to verify."""

PATH_KEY = "@record"
PATH_SUBJECT = "@subject"
"""For a location reached through a path, the fields of a streamed row that carry the key and the
subject of the record reaching it (not column names: the row's own columns may share them)."""


@dataclass(frozen=True)
class HoldSet:
    """Legal holds in force at one moment: whole subjects, or key/path prefixes."""

    subjects: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def subject_held(self, subject: object) -> bool:
        return subject is not None and str(subject) in self.subjects

    def path_held(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.prefixes)


HoldSource = Callable[[], HoldSet]
"""Reads the holds in force now; adapters call it immediately before each erase."""

SharedCheck = Callable[[Sequence[str]], frozenset[str]]
"""Of these keys or paths, the ones that a record which may not be erased now also names
(exactly or through a prefix, in any category): they stay. Adapters call it before each erase."""


def not_shared(_keys: Sequence[str]) -> frozenset[str]:
    """The check of a target whose items no other record can name (tests of single stores)."""
    return frozenset()


def no_holds() -> HoldSet:
    return HoldSet()


T = TypeVar("T")


@dataclass(frozen=True)
class Batch(Generic[T]):
    """Items located together and erased together (a key range, up to 1,000 versions, ...)."""

    items: Sequence[T]
    keys: Sequence[str]
    """One stable text key per item, for the ledger digest (never personal data in clear)."""
    span: str | None = None
    """For a batch named by a key range rather than by keys (``keys`` empty): that range, as text
    for the ledger digest; how many items it holds is known once it is erased."""
    observe: Callable[[int], None] | None = None
    """Called by ``erase`` with the number of items the batch turned out to hold (sizes the next)."""
    tag: JournalTag | None = None
    """Set by the engine on a database batch: the store writes its outcome to the erase journal in
    the batch's own transaction (``retention.journal``)."""

    @property
    def count(self) -> int:
        return len(self.keys)


@dataclass
class EraseOutcome:
    """What one ``erase`` call did. ``kept`` maps a reason (a hold, a storage lock) to a count."""

    erased: int = 0
    anonymised: int = 0
    kept: dict[Reason, int] = field(default_factory=dict)
    kept_until: dict[Reason, str] = field(default_factory=dict)
    """Latest until-date (ISO 8601) per kept reason, where the store knows one."""
    kept_records: dict[Reason, set[str]] = field(default_factory=dict)
    """Per kept reason, the keys of the records that named the kept items: their rows must stay."""
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    """Short, non-personal error descriptions (error codes), at most a few."""
    absent: list[str] = field(default_factory=list)
    """Keys of the batch's items the store found already gone (a file tree reports them; S3
    cannot tell, but lists only versions that exist): a resumed step counts those as erased by
    the attempt that stopped (``retention.intents``)."""

    def keep(self, reason: Reason, n: int = 1, until: str | None = None, records: Iterable[str] = ()) -> None:
        """Count ``n`` items kept for ``reason``, with their until-date and the records that named them."""
        self.kept[reason] = self.kept.get(reason, 0) + n
        if until and until > self.kept_until.get(reason, ""):
            self.kept_until[reason] = until
        if records:
            self.kept_records.setdefault(reason, set()).update(records)

    def add(self, other: EraseOutcome) -> None:
        self.erased += other.erased
        self.anonymised += other.anonymised
        for reason, n in other.kept.items():
            self.keep(reason, n, other.kept_until.get(reason), other.kept_records.get(reason, ()))
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, 10 - len(self.errors))])
        self.absent.extend(other.absent)


@dataclass(frozen=True)
class VerifyOutcome:
    """What looking again found: ``remaining`` must be 0; ``kept`` items are present on purpose."""

    remaining: int
    kept: int = 0
    referenced: int = 0
    """Rows kept because rows outside their category still reference them (database only)."""
    shared: int = 0
    """Rows of a join path kept because records not erased now reach them too (database only)."""


TargetT = TypeVar("TargetT", contravariant=True)


class StoreAdapter(Protocol[TargetT]):
    """Locate, erase, verify. Implementations hold a client, never credentials."""

    store: str

    def locate(self, target: TargetT) -> Iterator[Batch[Any]]:
        """Yield the items the target selects, in batches; touch nothing."""
        ...

    def named(self, target: TargetT) -> Iterator[Batch[Any]]:
        """Yield a real run's batches from what the index names, without looking in the store
        (an adapter with no such shortcut locates)."""
        ...

    def erase(self, target: TargetT, batch: Batch[Any]) -> EraseOutcome:
        """Erase the batch's items not held now; report every item not erased."""
        ...

    def verify(self, target: TargetT) -> VerifyOutcome:
        """Look again: count the items the target still selects (held/locked ones as kept)."""
        ...


class KeyDigest:
    """SHA-256 over item keys in the order seen: a fingerprint of what was touched."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def update(self, keys: Iterable[str]) -> None:
        for k in keys:
            self._h.update(k.encode("utf-8"))
            self._h.update(b"\n")
            self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()
