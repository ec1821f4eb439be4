"""The ground truth of a generated world: each row's fate, file counts, and per-customer inventories.

It is computed from the fates the generator chose, never by querying the stores, so tests can
compare what the retention engine did with what it should have done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import NamedTuple

from harness.world_personas import Personas
from harness.world_rules import RULES, TABLES
from harness.world_size import WorldSize


class Fate(IntEnum):
    """What a row's anchor was chosen to be, relative to its rule's cutoff."""

    NOT_DUE = 0
    DUE = 1
    NULL = 2


class Profile(IntEnum):
    """A customer's shape: all rows due (dormant), none due (active), or each row by chance (mixed)."""

    MIXED = 0
    DORMANT = 1
    ACTIVE = 2


@dataclass(frozen=True)
class Canaries:
    """Values unique to one customer, to search for anywhere they must not be."""

    name: str
    email: str
    phone: str
    phrase: str
    """A distinctive phrase that occurs only in this customer's document texts."""


@dataclass(frozen=True)
class TableCounts:
    """Rows of one table by fate; ``due_held`` of the ``due`` rows belong to held customers."""

    total: int
    due: int
    not_due: int
    null: int
    due_held: int


@dataclass(frozen=True)
class FileCounts:
    """Document files: objects and versions in S3, archive files; ``*_gone`` after the nightly run."""

    objects: int
    versions: int
    archive_files: int
    objects_gone: int
    versions_gone: int
    archive_files_gone: int


@dataclass(frozen=True)
class CustomerInventory:
    """Everything the world holds about one customer."""

    rows: dict[str, frozenset[int]]
    """Row ids per table (the customer's own row under ``customers``)."""
    s3_objects: dict[str, int]
    """Document S3 key -> number of versions."""
    archive_paths: frozenset[str]
    """Archive paths relative to the archive root."""


class DocFiles(NamedTuple):
    """A document's files: its S3 key, how many versions it has, its archive path (if archived)."""

    key: str
    versions: int
    archive_path: str | None


class Truth:
    """Records each row's fate as it is generated; keeps the ids only when asked to."""

    def __init__(self, keep: bool, held: frozenset[int]) -> None:
        self.keep = keep
        self.held = held
        self.counts: dict[str, list[int]] = {t: [0, 0, 0, 0] for t in TABLES}
        """Per table: rows counted by ``Fate`` value (0, 1, 2), then due rows of held customers."""
        self.rows: dict[str, dict[int, tuple[int, Fate]]] = {t: {} for t in TABLES}
        self.docs: dict[int, DocFiles] = {}
        self.files = dict.fromkeys(
            ("objects", "versions", "archive_files", "objects_gone", "versions_gone", "archive_files_gone"), 0
        )

    def record(self, table: str, row_id: int, customer_id: int, fate: Fate) -> None:
        counts = self.counts[table]
        counts[fate] += 1
        if fate is Fate.DUE and customer_id in self.held:
            counts[3] += 1
        if self.keep:
            self.rows[table][row_id] = (customer_id, fate)

    def record_files(self, doc_id: int, customer_id: int, fate: Fate, files: DocFiles) -> None:
        archived = int(files.archive_path is not None)
        gone = fate is Fate.DUE and customer_id not in self.held
        for name, n in (("objects", 1), ("versions", files.versions), ("archive_files", archived)):
            self.files[name] += n
            self.files[f"{name}_gone"] += n if gone else 0
        if self.keep:
            self.docs[doc_id] = files


class World:
    """Ground truth of one generated world, computed from the fates, never by querying the stores."""

    def __init__(
        self,
        *,
        seed: int,
        size: WorldSize,
        now: datetime,
        profiles: bytes,
        truth: Truth,
        personas: Personas,
        bucket: str | None,
        archive_root: str | None,
        unrelated_objects: dict[str, int],
    ) -> None:
        self.seed = seed
        self.size = size
        self.now = now
        self.bucket = bucket
        self.archive_root = archive_root
        self.held_customers: frozenset[int] = truth.held
        self.unrelated_objects: dict[str, int] = unrelated_objects
        """S3 keys no policy touches -> number of versions."""
        self.files = FileCounts(**truth.files)
        self._profiles = profiles
        self._truth = truth
        self._personas = personas

    # counts: always available

    def counts(self, table: str) -> TableCounts:
        """Rows of ``table`` by fate."""
        not_due, due, null, due_held = self._truth.counts[table]
        return TableCounts(total=not_due + due + null, due=due, not_due=not_due, null=null, due_held=due_held)

    def expected_counts_after_nightly(self) -> dict[str, dict[str, int]]:
        """Per table, how many rows the nightly run deletes, anonymises and keeps for a legal hold."""
        result: dict[str, dict[str, int]] = {}
        for rule in RULES:
            c = self.counts(rule.table)
            erased = c.due - c.due_held
            result[rule.table] = {
                "deleted": erased if rule.action == "delete" else 0,
                "anonymised": erased if rule.action == "anonymise" else 0,
                "kept_hold": c.due_held,
            }
        return result

    def profile(self, customer_id: int) -> Profile:
        """The shape chosen for a customer."""
        return Profile(self._profiles[customer_id - 1])

    def customers_with(self, profile: Profile, *, held: bool = False) -> list[int]:
        """Customer ids of one profile, held or not held, ascending."""
        return [
            cid
            for cid in range(1, self.size.customers + 1)
            if self._profiles[cid - 1] == profile and (cid in self.held_customers) == held
        ]

    def canaries(self, customer_id: int) -> Canaries:
        """The customer's unique name, e-mail, phone number and document phrase."""
        if not 1 <= customer_id <= self.size.customers:
            raise KeyError(f"no customer {customer_id} in this world")
        p = self._personas.customer(customer_id)
        return Canaries(name=p.name, email=p.email, phone=p.phone, phrase=p.phrase)

    # ids: only with keep_truth

    def ids(self, table: str, *fates: Fate) -> set[int]:
        """Ids of ``table``'s rows with one of ``fates`` (all rows when none is given)."""
        wanted = set(fates or Fate)
        return {rid for rid, (_, fate) in self._rows(table).items() if fate in wanted}

    def due_ids(self, table: str) -> set[int]:
        """Ids of the rows of ``table`` that are due, held or not."""
        return self.ids(table, Fate.DUE)

    def expected_after_nightly(self) -> dict[str, dict[str, set[int]]]:
        """Per table, the ids the nightly run must delete, anonymise, and keep because of a legal hold."""
        result: dict[str, dict[str, set[int]]] = {}
        for rule in RULES:
            erased: set[int] = set()
            kept: set[int] = set()
            for rid, (cid, fate) in self._rows(rule.table).items():
                if fate is Fate.DUE:
                    (kept if cid in self.held_customers else erased).add(rid)
            result[rule.table] = {
                "deleted": erased if rule.action == "delete" else set(),
                "anonymised": erased if rule.action == "anonymise" else set(),
                "kept_hold": kept,
            }
        return result

    def customer_inventory(self, customer_id: int) -> CustomerInventory:
        """Row ids per table, S3 keys with version counts and archive paths of one customer."""
        rows = {
            t: frozenset(rid for rid, (cid, _) in self._rows(t).items() if cid == customer_id) for t in TABLES
        }
        docs = [self._docs()[d] for d in sorted(rows["documents"])]
        return CustomerInventory(
            rows=rows,
            s3_objects={d.key: d.versions for d in docs},
            archive_paths=frozenset(d.archive_path for d in docs if d.archive_path),
        )

    def s3_objects(self) -> dict[str, int]:
        """Every document's S3 key -> number of versions."""
        return {d.key: d.versions for d in self._docs().values()}

    def archive_paths(self) -> set[str]:
        """Every archive path (relative to the archive root)."""
        return {d.archive_path for d in self._docs().values() if d.archive_path}

    def s3_keys_expected_gone(self) -> set[str]:
        """Document keys whose every version the nightly run must delete."""
        return {self._docs()[d].key for d in self.expected_after_nightly()["documents"]["deleted"]}

    def archive_paths_expected_gone(self) -> set[str]:
        """Archive paths the nightly run must delete."""
        docs = (self._docs()[d] for d in self.expected_after_nightly()["documents"]["deleted"])
        return {d.archive_path for d in docs if d.archive_path}

    def _rows(self, table: str) -> dict[int, tuple[int, Fate]]:
        self._require_truth()
        return self._truth.rows[table]

    def _docs(self) -> dict[int, DocFiles]:
        self._require_truth()
        return self._truth.docs

    def _require_truth(self) -> None:
        if not self._truth.keep:
            raise RuntimeError("this world was generated with keep_truth=False: only counts are available")
