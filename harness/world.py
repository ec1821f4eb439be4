"""The reference world: Alles-klar's business schema and a deterministic generator.

``generate`` fills a business database (PostgreSQL or SQLite), optionally a versioned S3
bucket and an SFTP archive, with a world in which every row was given a *fate* before it
was written: due, not due (each at least ``MARGIN`` away from its rule's cutoff at
``now``), or a NULL anchor (never due). The returned ``World`` is the ground truth computed
from those fates, never by querying the stores, so tests can compare what the retention
engine did with what it should have done.

Generation streams: rows are produced one at a time and bulk-loaded (``COPY`` on
PostgreSQL with psycopg 3, chunked ``executemany`` elsewhere); S3 puts run in a small
thread pool with a bounded queue. A fixed seed gives an identical world.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import random
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import IntEnum
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Connection

from harness import world_text as words
from retention.holds import HoldRegistry

COPENHAGEN = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2026, 6, 15, 2, 0, tzinfo=COPENHAGEN)
"""The fixed "now" of the reference world (the nightly run at 02:00 Danish time)."""

MARGIN = timedelta(days=2)
"""Every non-NULL anchor is at least this far from its rule's cutoff, on either side."""

# Anchors are placed a few hours further out than promised so that any reasonable reading
# of "anchor + P5Y" (UTC or Danish wall clock, across DST changes) keeps the promised margin.
_PLACEMENT_MARGIN = MARGIN + timedelta(hours=3)
_DUE_SPREAD = timedelta(days=4 * 365)
_LATEST = timedelta(hours=1)
"""Nothing happens in the last hour before ``now``."""

# --------------------------------------------------------------------------- schema

metadata = MetaData()
"""The agency's business schema; policies are written against these exact names."""

_ID = BigInteger().with_variant(Integer(), "sqlite")


def _pk() -> Column[Any]:
    return Column("id", _ID, primary_key=True, autoincrement=False)


def _customer_fk() -> Column[Any]:
    return Column("customer_id", _ID, ForeignKey("customers.id"), nullable=False, index=True)


def _ts(name: str, *, nullable: bool = False, index: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable, index=index)


def _text(name: str, *, nullable: bool = False, unique: bool = False) -> Column[Any]:
    return Column(name, Text(), nullable=nullable, unique=unique)


Table(
    "customers",
    metadata,
    _pk(),
    _text("customer_no", unique=True),
    _text("name"),
    _text("email", nullable=True),
    _text("phone", nullable=True),
    _text("address"),
    _ts("created_at"),
    _ts("last_activity_at", index=True),
)
Table(
    "contact_persons",
    metadata,
    _pk(),
    _customer_fk(),
    _text("name"),
    _text("email"),
    _text("phone"),
    _text("role"),
    _ts("created_at"),
    _ts("last_activity_at", index=True),
)
Table(
    "translation_jobs",
    metadata,
    _pk(),
    _customer_fk(),
    _text("title"),
    _text("source_lang"),
    _text("target_lang"),
    _ts("ordered_at"),
    _ts("delivered_at", nullable=True, index=True),
    _text("notes"),
)
Table(
    "documents",
    metadata,
    _pk(),
    Column("job_id", _ID, ForeignKey("translation_jobs.id"), nullable=False, index=True),
    _customer_fk(),
    _text("filename"),
    _text("s3_key"),
    _text("archive_path", nullable=True),
    _text("content_sha256"),
    _ts("created_at"),
    _ts("delivered_at", nullable=True, index=True),
)
Table(
    "interpreting_assignments",
    metadata,
    _pk(),
    _customer_fk(),
    _text("interpreter_name"),
    _text("venue", nullable=True),
    _text("topic"),
    _ts("assignment_at", index=True),
    _text("notes", nullable=True),
)
Table(
    "invoices",
    metadata,
    _pk(),
    _customer_fk(),
    _text("invoice_no", unique=True),
    Column("invoice_date", Date(), nullable=False, index=True),
    Column("amount_dkk", Numeric(12, 2), nullable=False),
    _text("billing_name"),
    _text("billing_address"),
)
Table(
    "marketing_consents",
    metadata,
    _pk(),
    _customer_fk(),
    _text("email"),
    _text("channel"),
    _ts("given_at"),
    _ts("withdrawn_at", nullable=True, index=True),
)
Table(
    "third_party_data",
    metadata,
    _pk(),
    _customer_fk(),
    _text("source"),
    _text("description"),
    _ts("received_at", index=True),
    _ts("customer_notified_at", nullable=True),
)
Table(
    "correspondence",
    metadata,
    _pk(),
    _customer_fk(),
    _text("subject"),
    _text("body"),
    _ts("sent_at", index=True),
    _text("direction"),
)
Table(
    "privacy_requests",
    metadata,
    _pk(),
    _customer_fk(),
    _text("request_ref", unique=True),
    _text("kind"),
    _ts("received_at"),
    _ts("completed_at", nullable=True, index=True),
)


def create_schema(engine: Engine) -> None:
    """Create the business tables and their indexes where they do not exist yet."""
    metadata.create_all(engine)


# --------------------------------------------------------------------------- rules

Action = Literal["delete", "anonymise"]
AnchorKind = Literal["timestamp", "financial_year_end"]
_PERIOD = re.compile(r"P(\d+)Y")


def _plus_years(moment: datetime, years: int) -> datetime:
    """Same wall-clock time ``years`` later (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def _utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values (as SQLite returns them) are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Rule:
    """A default retention rule: a row of ``table`` is due once ``anchor`` + ``period`` <= now."""

    table: str
    action: Action
    anchor: str
    period: str
    columns: tuple[str, ...] = ()
    """The columns an ``anonymise`` rule blanks."""
    files: tuple[str, ...] = ()
    """Columns naming files (S3 key, archive path) erased together with the row."""
    anchor_kind: AnchorKind = "timestamp"
    subject: str = "customer_id"
    """The column holding the customer a legal hold names."""

    @property
    def years(self) -> int:
        """The period in whole years (the only unit the default rules use)."""
        match = _PERIOD.fullmatch(self.period)
        if match is None:
            raise ValueError(f"{self.table}: period {self.period!r} is not whole years")
        return int(match.group(1))

    def deadline(self, anchor: datetime | date | None) -> datetime | None:
        """The UTC instant from which a row with this anchor value is due; None: never due."""
        if anchor is None:
            return None
        if self.anchor_kind == "financial_year_end":
            year_end = datetime(anchor.year + 1, 1, 1, tzinfo=COPENHAGEN)
            return _utc(_plus_years(year_end, self.years))
        if not isinstance(anchor, datetime):
            raise TypeError(f"{self.table}.{self.anchor} must be a datetime")
        return _utc(_plus_years(_utc(anchor).astimezone(COPENHAGEN), self.years))

    def is_due(self, anchor: datetime | date | None, now: datetime = NOW) -> bool:
        """Whether a row with this anchor value is due at ``now``."""
        deadline = self.deadline(anchor)
        return deadline is not None and deadline <= now

    def cutoff(self, now: datetime = NOW) -> datetime | date:
        """Timestamp rules: rows with anchor <= cutoff are due; financial year: invoice_date < cutoff."""
        local_now = _utc(now).astimezone(COPENHAGEN)
        if self.anchor_kind == "financial_year_end":
            return date(local_now.year - self.years, 1, 1)
        return _utc(_plus_years(local_now, -self.years))


RULES: tuple[Rule, ...] = (
    Rule(
        "customers",
        "anonymise",
        "last_activity_at",
        "P5Y",
        columns=("name", "email", "phone", "address"),
        subject="id",
    ),
    Rule("contact_persons", "delete", "last_activity_at", "P3Y"),
    Rule("translation_jobs", "delete", "delivered_at", "P5Y"),
    Rule("documents", "delete", "delivered_at", "P1Y", files=("s3_key", "archive_path")),
    Rule(
        "interpreting_assignments", "anonymise", "assignment_at", "P2Y", columns=("topic", "notes", "venue")
    ),
    Rule("invoices", "delete", "invoice_date", "P5Y", anchor_kind="financial_year_end"),
    Rule("marketing_consents", "delete", "withdrawn_at", "P2Y"),
    Rule("third_party_data", "delete", "received_at", "P1Y"),
    Rule("correspondence", "delete", "sent_at", "P3Y"),
    Rule("privacy_requests", "delete", "completed_at", "P5Y"),
)
"""What is due in the reference world; mirrors the default policies in include/retention_policies/."""

RULE_BY_TABLE: dict[str, Rule] = {rule.table: rule for rule in RULES}
TABLES: tuple[str, ...] = tuple(rule.table for rule in RULES)
"""Every business table, parents before children."""

# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class WorldSize:
    """How big a world to generate: row counts per table and the fractions that shape the fates."""

    customers: int
    jobs_per_customer: int
    documents: int
    contact_persons: int
    interpreting: int
    invoices: int
    consents: int
    third_party: int
    correspondence: int
    privacy_requests: int
    min_versions: int = 1
    max_versions: int = 3
    archive_fraction: float = 0.4
    """Share of documents that also have an archive file (exactly rounded)."""
    held_fraction: float = 0.1
    """Share of customers under legal hold (exactly rounded)."""
    due_fraction: float = 0.5
    """Share of rows (approximately) that are due."""
    null_fraction: float = 0.1
    """Share of rows with a nullable anchor (open job, consent, request) that have it NULL."""

    def __post_init__(self) -> None:
        if self.customers < 1 or self.jobs_per_customer < 0:
            raise ValueError("a world needs at least one customer and jobs_per_customer >= 0")
        if (
            min(
                self.documents,
                self.contact_persons,
                self.interpreting,
                self.invoices,
                self.consents,
                self.third_party,
                self.correspondence,
                self.privacy_requests,
            )
            < 0
        ):
            raise ValueError("row counts must not be negative")
        if self.documents and not self.jobs_per_customer:
            raise ValueError("documents need translation jobs")
        if not 1 <= self.min_versions <= self.max_versions:
            raise ValueError("need 1 <= min_versions <= max_versions")
        for name in ("archive_fraction", "held_fraction", "due_fraction", "null_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")

    @property
    def jobs(self) -> int:
        return self.customers * self.jobs_per_customer

    def rows(self, table: str) -> int:
        """How many rows ``table`` gets."""
        return {
            "customers": self.customers,
            "contact_persons": self.contact_persons,
            "translation_jobs": self.jobs,
            "documents": self.documents,
            "interpreting_assignments": self.interpreting,
            "invoices": self.invoices,
            "marketing_consents": self.consents,
            "third_party_data": self.third_party,
            "correspondence": self.correspondence,
            "privacy_requests": self.privacy_requests,
        }[table]

    @classmethod
    def small(cls) -> WorldSize:
        """For tests: 50 customers, every customer present in every table, ~100 documents."""
        return cls(
            customers=50,
            jobs_per_customer=2,
            documents=100,
            contact_persons=60,
            interpreting=60,
            invoices=100,
            consents=60,
            third_party=60,
            correspondence=150,
            privacy_requests=50,
        )

    @classmethod
    def demo(cls) -> WorldSize:
        """For the demo: a few thousand rows per table, 1,200 documents."""
        return cls(
            customers=400,
            jobs_per_customer=3,
            documents=1_200,
            contact_persons=600,
            interpreting=800,
            invoices=2_000,
            consents=500,
            third_party=600,
            correspondence=5_000,
            privacy_requests=400,
        )

    @classmethod
    def benchmark(
        cls,
        *,
        correspondence: int = 2_000_000,
        documents: int = 20_000,
        versions: int = 2,
        archive_files: int = 5_000,
        due_fraction: float = 0.5,
        customers: int = 20_000,
    ) -> WorldSize:
        """For the benchmark: many correspondence rows, documents with ``versions`` each, archive files."""
        if archive_files > documents:
            raise ValueError("archive_files cannot exceed documents")
        return cls(
            customers=customers,
            jobs_per_customer=max(1, math.ceil(documents / customers)),
            documents=documents,
            contact_persons=customers,
            interpreting=customers,
            invoices=2 * customers,
            consents=customers,
            third_party=customers,
            correspondence=correspondence,
            privacy_requests=customers // 4,
            min_versions=versions,
            max_versions=versions,
            archive_fraction=archive_files / documents if documents else 0.0,
            due_fraction=due_fraction,
        )


# --------------------------------------------------------------------------- truth


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


_PURE_PROFILE_SHARE = 0.4
"""Share of customers that are wholly dormant or wholly active (split by due_fraction)."""


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


class _DocFiles(NamedTuple):
    key: str
    versions: int
    archive_path: str | None


class _Truth:
    """Records each row's fate as it is generated; keeps the ids only when asked to."""

    def __init__(self, keep: bool, held: frozenset[int]) -> None:
        self.keep = keep
        self.held = held
        self.counts: dict[str, list[int]] = {t: [0, 0, 0, 0] for t in TABLES}
        """Per table: rows counted by ``Fate`` value (0, 1, 2), then due rows of held customers."""
        self.rows: dict[str, dict[int, tuple[int, Fate]]] = {t: {} for t in TABLES}
        self.docs: dict[int, _DocFiles] = {}
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

    def record_files(self, doc_id: int, customer_id: int, fate: Fate, files: _DocFiles) -> None:
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
        truth: _Truth,
        personas: _Personas,
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

    def _docs(self) -> dict[int, _DocFiles]:
        self._require_truth()
        return self._truth.docs

    def _require_truth(self) -> None:
        if not self._truth.keep:
            raise RuntimeError("this world was generated with keep_truth=False: only counts are available")


# --------------------------------------------------------------------------- personas

_NAME_SPACE = len(words.FIRST_NAMES) * len(words.MIDDLE_NAMES) * len(words.LAST_NAMES)
_NAME_STEP = 7919
"""Coprime with ``_NAME_SPACE``, so ids map to distinct name combinations."""
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE_SPACE = len(_CODE_ALPHABET) ** 6
_CODE_STEP = 1_000_003
_PHONE_SPACE = 30_000_000
_PHONE_STEP = 7919
_TRANSLITERATION = str.maketrans({"æ": "ae", "ø": "oe", "å": "aa", " ": "-", "'": ""})


class _Persona(NamedTuple):
    name: str
    email: str
    phone: str
    address: str
    phrase: str


def _mix(*parts: object) -> int:
    """A stable 64-bit hash (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def _ascii(word: str) -> str:
    return word.lower().translate(_TRANSLITERATION)


def _phone(base: int, n: int, offset: int) -> str:
    digits = str(base + (n * _PHONE_STEP + offset) % _PHONE_SPACE)
    return f"+45 {digits[0:2]} {digits[2:4]} {digits[4:6]} {digits[6:8]}"


def _address(h: int) -> str:
    postcode, city = words.CITIES[h % len(words.CITIES)]
    street = words.STREETS[(h >> 8) % len(words.STREETS)]
    return f"{street} {(h >> 16) % 120 + 1}, {postcode} {city}"


class _Personas:
    """Customer and contact identities, derived from the seed and the id alone (random access)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._name_offset = _mix(seed, "names") % _NAME_SPACE
        self._code_offset = _mix(seed, "codes") % _CODE_SPACE
        self._phone_offset = _mix(seed, "phones") % _PHONE_SPACE

    def customer(self, customer_id: int) -> _Persona:
        idx = (customer_id * _NAME_STEP + self._name_offset) % _NAME_SPACE
        nf, nm = len(words.FIRST_NAMES), len(words.MIDDLE_NAMES)
        parts = (
            words.FIRST_NAMES[idx % nf],
            words.MIDDLE_NAMES[idx // nf % nm],
            words.LAST_NAMES[idx // (nf * nm)],
        )
        h = _mix(self._seed, "customer", customer_id)
        domain = words.E_MAIL_DOMAINS[h % len(words.E_MAIL_DOMAINS)]
        phrase = (
            f"{words.SECRET_ADJECTIVES[(h >> 24) % len(words.SECRET_ADJECTIVES)]} "
            f"{words.SECRET_NOUNS[(h >> 32) % len(words.SECRET_NOUNS)]} (kode {self._code(customer_id)})"
        )
        return _Persona(
            name=" ".join(parts),
            email=f"{'.'.join(_ascii(p) for p in parts)}.{customer_id}@{domain}",
            phone=_phone(20_000_000, customer_id, self._phone_offset),
            address=_address(h >> 4),
            phrase=phrase,
        )

    def contact(self, contact_id: int) -> tuple[str, str, str]:
        """Name, e-mail and phone of a contact person (a two-part name: never a customer canary)."""
        h = _mix(self._seed, "contact", contact_id)
        first = words.FIRST_NAMES[h % len(words.FIRST_NAMES)]
        last = words.LAST_NAMES[(h >> 8) % len(words.LAST_NAMES)]
        email = f"{_ascii(first)}.{_ascii(last)}.k{contact_id}@{words.E_MAIL_DOMAINS[(h >> 16) % 4]}"
        return f"{first} {last}", email, _phone(50_000_000, contact_id, self._phone_offset)

    def _code(self, customer_id: int) -> str:
        n = (customer_id * _CODE_STEP + self._code_offset) % _CODE_SPACE
        chars = []
        for _ in range(6):
            n, r = divmod(n, len(_CODE_ALPHABET))
            chars.append(_CODE_ALPHABET[r])
        return "".join(chars)


# --------------------------------------------------------------------------- the plan (pure generation)


class _Spec(NamedTuple):
    row: tuple[Any, ...]
    customer_id: int
    fate: Fate


class _DocSpec(NamedTuple):
    row: tuple[Any, ...]
    customer_id: int
    fate: Fate
    bodies: list[bytes]
    files: _DocFiles


class _Job(NamedTuple):
    id: int
    customer_id: int
    fate: Fate
    docs_fate: Fate
    kind: str
    source_lang: str
    target_lang: str
    ordered_at: datetime
    delivered_at: datetime | None
    persona: _Persona


def _block(owner: int, n_rows: int, n_owners: int) -> range:
    """The row ids (of 1..n_rows) owned by ``owner`` (of 1..n_owners): contiguous, near-equal blocks."""
    return range((owner - 1) * n_rows // n_owners + 1, owner * n_rows // n_owners + 1)


class _Plan:
    """Everything decided up front (profiles, holds, cutoffs) and the pure per-table row streams."""

    def __init__(self, seed: int, size: WorldSize, now: datetime) -> None:
        if size.customers > _NAME_SPACE:
            raise ValueError(f"at most {_NAME_SPACE} customers have unique names")
        self.seed = seed
        self.size = size
        self.now = _utc(now)
        self.cutoffs = {r.table: c for r in RULES if isinstance(c := r.cutoff(now), datetime)}
        """Timestamp rules only: anchors at or before the cutoff are due."""
        self._invoice_years = _invoice_years(RULE_BY_TABLE["invoices"], self.now)
        self.personas = _Personas(seed)
        self.profiles = self._choose_profiles()
        self.held = self._choose_held()
        self._interpreters = self._choose_interpreters()

    def _rng(self, purpose: str) -> random.Random:
        # Reproducible test data, not secrets: a seeded PRNG is exactly what is wanted.
        return random.Random(f"{self.seed}:{purpose}")  # noqa: S311

    def _choose_profiles(self) -> bytes:
        n, df = self.size.customers, self.size.due_fraction
        dormant = round(n * df * _PURE_PROFILE_SHARE)
        active = round(n * (1 - df) * _PURE_PROFILE_SHARE)
        profiles = (
            [Profile.DORMANT] * dormant + [Profile.ACTIVE] * active + [Profile.MIXED] * (n - dormant - active)
        )
        self._rng("profiles").shuffle(profiles)
        return bytes(profiles)

    def _choose_held(self) -> frozenset[int]:
        """Half the holds on dormant customers (so every table has held due rows), the rest on mixed ones."""
        rng = self._rng("holds")
        wanted = round(self.size.customers * self.size.held_fraction)
        held: list[int] = []
        for profile, share in (
            (Profile.DORMANT, math.ceil(wanted / 2)),
            (Profile.MIXED, wanted),
            (Profile.ACTIVE, wanted),
        ):
            pool = [cid for cid, p in enumerate(self.profiles, 1) if p == profile]
            held += rng.sample(pool, min(len(pool), share, wanted - len(held)))
        return frozenset(held)

    def _choose_interpreters(self) -> list[str]:
        rng = self._rng("interpreters")
        return [f"{rng.choice(words.FIRST_NAMES)} {rng.choice(words.LAST_NAMES)}" for _ in range(12)]

    # fates and anchors

    def _fate(self, rng: random.Random, customer_id: int, nullable: bool = False) -> Fate:
        profile = self.profiles[customer_id - 1]
        if profile == Profile.DORMANT:
            return Fate.DUE
        if nullable and rng.random() < self.size.null_fraction:
            return Fate.NULL
        if profile == Profile.ACTIVE:
            return Fate.NOT_DUE
        return Fate.DUE if rng.random() < self.size.due_fraction else Fate.NOT_DUE

    def _anchor(self, rng: random.Random, table: str, fate: Fate) -> datetime | None:
        return None if fate is Fate.NULL else self._instant(rng, table, fate is Fate.DUE)

    def _instant(self, rng: random.Random, table: str, due: bool) -> datetime:
        """A timestamp clearly before (due) or after (not due) the table's cutoff, never after now."""
        cutoff = self.cutoffs[table]
        if due:
            return _between(rng, cutoff - _PLACEMENT_MARGIN - _DUE_SPREAD, cutoff - _PLACEMENT_MARGIN)
        return _between(rng, cutoff + _PLACEMENT_MARGIN, self.now - _LATEST)

    def _invoice_date(self, rng: random.Random, fate: Fate) -> date:
        last_due, first_open = self._invoice_years
        if fate is Fate.DUE:
            first = date(last_due - 3, 1, 1)
            return first + timedelta(days=rng.randrange((date(last_due + 1, 1, 1) - first).days))
        first = date(first_open, 1, 1)
        last = (self.now - _LATEST).astimezone(COPENHAGEN).date()
        return first + timedelta(days=rng.randrange((last - first).days + 1))

    def _rows_per_customer(self, table: str) -> Iterator[tuple[int, int, _Persona]]:
        n_rows = self.size.rows(table)
        for cid in range(1, self.size.customers + 1):
            ids = _block(cid, n_rows, self.size.customers)
            if not ids:
                continue
            persona = self.personas.customer(cid)
            for row_id in ids:
                yield row_id, cid, persona

    # per-table row streams; each row tuple follows its table's column order

    def specs(self, table: str) -> Iterator[_Spec]:
        """The rows of one table (not ``documents``), in id order, each with its customer and fate."""
        streams: dict[str, Callable[[], Iterator[_Spec]]] = {
            "customers": self._customers,
            "contact_persons": self._contact_persons,
            "translation_jobs": self._translation_jobs,
            "interpreting_assignments": self._interpreting_assignments,
            "invoices": self._invoices,
            "marketing_consents": self._marketing_consents,
            "third_party_data": self._third_party_data,
            "correspondence": self._correspondence,
            "privacy_requests": self._privacy_requests,
        }
        return streams[table]()

    def _customers(self) -> Iterator[_Spec]:
        rng = self._rng("customers")
        for cid in range(1, self.size.customers + 1):
            p = self.personas.customer(cid)
            fate = self._fate(rng, cid)
            last = self._instant(rng, "customers", fate is Fate.DUE)
            created = last - timedelta(seconds=rng.randrange(8 * 365 * 86400))
            yield _Spec((cid, f"AK-{cid:06d}", p.name, p.email, p.phone, p.address, created, last), cid, fate)

    def _contact_persons(self) -> Iterator[_Spec]:
        rng = self._rng("contact_persons")
        for row_id, cid, _ in self._rows_per_customer("contact_persons"):
            name, email, phone = self.personas.contact(row_id)
            fate = self._fate(rng, cid)
            last = self._instant(rng, "contact_persons", fate is Fate.DUE)
            created = last - timedelta(seconds=rng.randrange(5 * 365 * 86400))
            yield _Spec((row_id, cid, name, email, phone, rng.choice(words.ROLES), created, last), cid, fate)

    def jobs(self) -> Iterator[_Job]:
        """The translation jobs, identical on every call (the documents pass walks them again)."""
        rng = self._rng("translation_jobs")
        doc_cutoff, job_cutoff = self.cutoffs["documents"], self.cutoffs["translation_jobs"]
        for job_id, cid, persona in self._rows_per_customer("translation_jobs"):
            fate = self._fate(rng, cid, nullable=True)
            docs_fate = fate
            if fate is Fate.DUE:
                delivered = self._anchor(rng, "translation_jobs", fate)
            elif (
                fate is Fate.NOT_DUE
                and self.profiles[cid - 1] == Profile.MIXED
                and rng.random() < self.size.due_fraction
            ):
                docs_fate = Fate.DUE
                delivered = _between(rng, job_cutoff + _PLACEMENT_MARGIN, doc_cutoff - _PLACEMENT_MARGIN)
            else:
                delivered = self._anchor(rng, "documents", fate)
            ordered = (delivered or self.now) - timedelta(seconds=rng.randrange(86400, 30 * 86400))
            kind, src, tgt = rng.choice(words.DOCUMENT_KINDS), *rng.sample(words.LANGUAGES, 2)
            yield _Job(job_id, cid, fate, docs_fate, kind, src, tgt, ordered, delivered, persona)

    def _translation_jobs(self) -> Iterator[_Spec]:
        for j in self.jobs():
            title = f"Oversættelse af {j.kind} ({j.source_lang} → {j.target_lang})"
            notes = f"Bestilt af {j.persona.name} pr. e-mail; levering til {j.persona.email}."
            row = (
                j.id,
                j.customer_id,
                title,
                j.source_lang,
                j.target_lang,
                j.ordered_at,
                j.delivered_at,
                notes,
            )
            yield _Spec(row, j.customer_id, j.fate)

    def documents(self) -> Iterator[_DocSpec]:
        """The documents with their version texts and archive choice, in job order."""
        rng = self._rng("documents")
        n_docs = self.size.documents
        to_archive = round(n_docs * self.size.archive_fraction)
        for job in self.jobs() if n_docs else ():
            for doc_id in _block(job.id, n_docs, self.size.jobs):
                # Selection sampling: exactly ``to_archive`` documents, each equally likely.
                archived = rng.random() * (n_docs - doc_id + 1) < to_archive
                to_archive -= archived
                yield self._document(rng, doc_id, job, archived)

    def _document(self, rng: random.Random, doc_id: int, job: _Job, archived: bool) -> _DocSpec:
        rel = f"{job.customer_id}/{job.id}/{doc_id}.txt"
        n_versions = rng.randint(self.size.min_versions, self.size.max_versions)
        sentences = rng.sample(words.DOCUMENT_SENTENCES, 3)
        bodies = [
            _document_text(job, doc_id, v, n_versions, sentences).encode() for v in range(1, n_versions + 1)
        ]
        created = _between(rng, job.ordered_at, job.delivered_at or self.now - _LATEST)
        files = _DocFiles(f"documents/{rel}", n_versions, rel if archived else None)
        row = (
            doc_id,
            job.id,
            job.customer_id,
            f"{job.kind}_{job.target_lang}.txt",
            files.key,
            files.archive_path,
            hashlib.sha256(bodies[-1]).hexdigest(),
            created,
            job.delivered_at,
        )
        return _DocSpec(row, job.customer_id, job.docs_fate, bodies, files)

    def _interpreting_assignments(self) -> Iterator[_Spec]:
        rng = self._rng("interpreting_assignments")
        for row_id, cid, p in self._rows_per_customer("interpreting_assignments"):
            fate = self._fate(rng, cid)
            src, tgt = rng.sample(words.LANGUAGES, 2)
            notes = f"Bestilt af {p.name}, tlf. {p.phone}. Tolkning {src}-{tgt}."
            row = (
                row_id,
                cid,
                rng.choice(self._interpreters),
                rng.choice(words.INTERPRETER_VENUES),
                rng.choice(words.INTERPRETER_TOPICS),
                self._instant(rng, "interpreting_assignments", fate is Fate.DUE),
                notes,
            )
            yield _Spec(row, cid, fate)

    def _invoices(self) -> Iterator[_Spec]:
        rng = self._rng("invoices")
        for row_id, cid, p in self._rows_per_customer("invoices"):
            fate = self._fate(rng, cid)
            day = self._invoice_date(rng, fate)
            amount = Decimal(rng.randrange(40_000, 4_000_000)).scaleb(-2)
            yield _Spec((row_id, cid, f"F{day.year}-{row_id:07d}", day, amount, p.name, p.address), cid, fate)

    def _marketing_consents(self) -> Iterator[_Spec]:
        rng = self._rng("marketing_consents")
        for row_id, cid, p in self._rows_per_customer("marketing_consents"):
            fate = self._fate(rng, cid, nullable=True)
            withdrawn = self._anchor(rng, "marketing_consents", fate)
            given = (withdrawn or self.now) - timedelta(seconds=rng.randrange(86400, 6 * 365 * 86400))
            yield _Spec(
                (row_id, cid, p.email, rng.choice(words.CONSENT_CHANNELS), given, withdrawn), cid, fate
            )

    def _third_party_data(self) -> Iterator[_Spec]:
        rng = self._rng("third_party_data")
        for row_id, cid, p in self._rows_per_customer("third_party_data"):
            fate = self._fate(rng, cid)
            received = self._instant(rng, "third_party_data", fate is Fate.DUE)
            notified = received + timedelta(days=rng.randint(1, 30)) if rng.random() < 0.7 else None
            if notified is not None and notified > self.now - _LATEST:
                notified = None
            description = f"{rng.choice(words.THIRD_PARTY_FACTS).capitalize()} om {p.name}."
            yield _Spec(
                (row_id, cid, rng.choice(words.THIRD_PARTY_SOURCES), description, received, notified),
                cid,
                fate,
            )

    def _correspondence(self) -> Iterator[_Spec]:
        rng = self._rng("correspondence")
        for row_id, cid, p in self._rows_per_customer("correspondence"):
            fate = self._fate(rng, cid)
            body = rng.choice(words.CORRESPONDENCE_BODIES).format(
                name=p.name,
                phone=p.phone,
                email=p.email,
                kind=rng.choice(words.DOCUMENT_KINDS),
                lang=rng.choice(words.LANGUAGES),
                topic=rng.choice(words.INTERPRETER_TOPICS),
            )
            row = (
                row_id,
                cid,
                rng.choice(words.CORRESPONDENCE_SUBJECTS),
                body,
                self._instant(rng, "correspondence", fate is Fate.DUE),
                rng.choice(("ind", "ud")),
            )
            yield _Spec(row, cid, fate)

    def _privacy_requests(self) -> Iterator[_Spec]:
        rng = self._rng("privacy_requests")
        for row_id, cid, _ in self._rows_per_customer("privacy_requests"):
            fate = self._fate(rng, cid, nullable=True)
            completed = self._anchor(rng, "privacy_requests", fate)
            received = (completed or self.now) - timedelta(seconds=rng.randrange(3600, 30 * 86400))
            row = (
                row_id,
                cid,
                f"PR-{row_id:07d}",
                rng.choice(words.PRIVACY_REQUEST_KINDS),
                received,
                completed,
            )
            yield _Spec(row, cid, fate)


def _invoice_years(rule: Rule, now: datetime) -> tuple[int, int]:
    """The latest invoice year clearly due and the earliest clearly not due at ``now``."""
    last_due = now.astimezone(COPENHAGEN).year - rule.years - 1
    while not rule.is_due(date(last_due, 1, 1), now - _PLACEMENT_MARGIN):
        last_due -= 1
    first_open = last_due + 1
    while rule.is_due(date(first_open, 1, 1), now + _PLACEMENT_MARGIN):
        first_open += 1
    return last_due, first_open


def _between(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    """A whole-second instant in [lo, hi]."""
    span = int((hi - lo).total_seconds())
    if span < 0:
        raise ValueError("empty time window")
    return lo + timedelta(seconds=rng.randrange(span + 1))


def _document_text(job: _Job, doc_id: int, version: int, n_versions: int, sentences: Sequence[str]) -> str:
    p = job.persona
    notes = words.REVISION_NOTES
    note = notes[-1] if version == n_versions else notes[min(version - 1, len(notes) - 2)]
    return (
        f"Alles-klar Oversættelser\n{job.kind.capitalize()} ({job.source_lang} → {job.target_lang})\n"
        f"Dokument {doc_id}, version {version} af {n_versions}\n\n"
        f"Kunde: {p.name}\nAdresse: {p.address}\nTelefon: {p.phone}\n\n"
        + " ".join(sentences)
        + f"\n\nBilag: kundens {p.phrase}.\n{note}\n"
    )


# --------------------------------------------------------------------------- writing


class _Progress:
    """Rows per second on stderr, at most every two seconds, only when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def track(self, table: str, total: int, items: Iterable[Any]) -> Iterator[Any]:
        if not self.enabled:
            yield from items
            return
        start = last = time.monotonic()
        done = 0
        for item in items:
            yield item
            done += 1
            if done % 1000 == 0 and time.monotonic() - last >= 2.0:
                last = time.monotonic()
                self._say(table, done, total, last - start)
        self._say(table, done, total, time.monotonic() - start)

    @staticmethod
    def _say(table: str, done: int, total: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        print(f"world: {table}: {done:,}/{total:,} rows, {elapsed:.1f}s, {rate:,.0f} rows/s", file=sys.stderr)


class _S3Writer:
    """Puts objects from a small thread pool; at most ``max_pending`` documents in flight."""

    def __init__(self, client: Any, bucket: str, workers: int = 8, max_pending: int = 256) -> None:
        self._client = client
        self._bucket = bucket
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="world-s3")
        self._pending: deque[Future[None]] = deque()
        self._max_pending = max_pending

    def __enter__(self) -> _S3Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def ensure_versioned_bucket(self) -> None:
        """Create the bucket if it is missing and switch versioning on."""
        existing = {b["Name"] for b in self._client.list_buckets().get("Buckets", [])}
        if self._bucket not in existing:
            self._client.create_bucket(Bucket=self._bucket)
        self._client.put_bucket_versioning(Bucket=self._bucket, VersioningConfiguration={"Status": "Enabled"})

    def put_versions(self, key: str, bodies: Sequence[bytes]) -> None:
        """Queue ``bodies`` as successive versions of ``key`` (the last one becomes current)."""
        self._pending.append(self._pool.submit(self._put_all, key, bodies))
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def _put_all(self, key: str, bodies: Sequence[bytes]) -> None:
        for body in bodies:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=body, ContentType="text/plain; charset=utf-8"
            )


class _ArchiveWriter:
    """Writes files under an archive root through SFTP, creating directories as needed."""

    def __init__(self, sftp: Any, root: str) -> None:
        self._sftp = sftp
        self._root = root
        self._known_dirs: set[str] = set()

    def write(self, rel: str, data: bytes) -> None:
        path = posixpath.join(self._root, rel)
        self._make_dirs(posixpath.dirname(path))
        with self._sftp.open(path, "wb") as f:
            f.write(data)

    def _make_dirs(self, directory: str) -> None:
        if directory in self._known_dirs:
            return
        parent = posixpath.dirname(directory)
        if parent != directory:
            self._make_dirs(parent)
        try:
            self._sftp.stat(directory)
        except FileNotFoundError:
            self._sftp.mkdir(directory)
        # Documents arrive grouped by customer and job, so a small cache of directories suffices.
        if len(self._known_dirs) > 10_000:
            self._known_dirs.clear()
        self._known_dirs.add(directory)


def _uses_copy(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


def _load(engine: Engine, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
    """Bulk-insert ``rows`` (tuples in column order) into ``table`` in one transaction."""
    with engine.begin() as conn:
        if _uses_copy(engine):
            _copy(conn, table, rows)
        else:
            _insert_chunks(conn, table, rows)


def _copy(conn: Connection, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
    columns = ", ".join(c.name for c in table.columns)
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the database connection is closed")
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _insert_chunks(
    conn: Connection, table: Table, rows: Iterable[tuple[Any, ...]], chunk: int = 5_000
) -> None:
    names = [c.name for c in table.columns]
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(names, row, strict=True)))
        if len(batch) >= chunk:
            conn.execute(table.insert(), batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)


def _spec_rows(table: str, specs: Iterable[_Spec], truth: _Truth) -> Iterator[tuple[Any, ...]]:
    for spec in specs:
        truth.record(table, spec.row[0], spec.customer_id, spec.fate)
        yield spec.row


def _document_rows(
    specs: Iterable[_DocSpec], truth: _Truth, s3: _S3Writer | None, archive: _ArchiveWriter | None
) -> Iterator[tuple[Any, ...]]:
    for spec in specs:
        if s3 is not None:
            s3.put_versions(spec.files.key, spec.bodies)
        if archive is not None and spec.files.archive_path is not None:
            archive.write(spec.files.archive_path, spec.bodies[-1])
        truth.record("documents", spec.row[0], spec.customer_id, spec.fate)
        truth.record_files(spec.row[0], spec.customer_id, spec.fate, spec.files)
        yield spec.row


def _put_unrelated(s3: _S3Writer) -> dict[str, int]:
    for key, bodies in words.TEMPLATES:
        s3.put_versions(key, [b.encode() for b in bodies])
    s3.drain()
    return {key: len(bodies) for key, bodies in words.TEMPLATES}


def _place_holds(registry: HoldRegistry, held: Iterable[int], now: datetime) -> None:
    registry.ensure_schema()
    # Placed well before the world's "now", whatever the wall clock says, so a hold is in force
    # at the nightly run however the engine reads a hold's start.
    placed = _utc(now) - timedelta(days=30)
    for n, cid in enumerate(sorted(held), 1):
        reason = f"Verserende retssag, bevaringspligt (sag RS-{n:04d})"
        registry.add(reason=reason, subject=str(cid), now=placed)


def generate(
    engine: Engine,
    *,
    s3_client: Any = None,
    bucket: str | None = None,
    sftp_client: Any = None,
    archive_root: str | None = None,
    size: WorldSize,
    seed: int = 7,
    now: datetime = NOW,
    holds_engine: Engine | None = None,
    keep_truth: bool = True,
    progress: bool = False,
) -> World:
    """Create the schema in an empty database and fill it (and S3, the archive) with a deterministic world.

    Without ``s3_client``/``sftp_client`` only the database is filled (the document rows still
    name their keys and paths). Legal holds are registered on ``holds_engine or engine``.
    With ``keep_truth=False`` the returned world knows counts only, not ids.
    """
    if (s3_client is None) != (bucket is None):
        raise ValueError("s3_client and bucket go together")
    if (sftp_client is None) != (archive_root is None):
        raise ValueError("sftp_client and archive_root go together")
    plan = _Plan(seed, size, now)
    create_schema(engine)
    _place_holds(HoldRegistry(holds_engine or engine), plan.held, now)
    truth = _Truth(keep_truth, plan.held)
    report = _Progress(progress)
    unrelated: dict[str, int] = {}
    with ExitStack() as stack:
        s3 = stack.enter_context(_S3Writer(s3_client, bucket)) if s3_client is not None and bucket else None
        archive = (
            _ArchiveWriter(sftp_client, archive_root) if sftp_client is not None and archive_root else None
        )
        if s3 is not None:
            s3.ensure_versioned_bucket()
            unrelated = _put_unrelated(s3)
        for table in TABLES:
            rows: Iterable[tuple[Any, ...]] = (
                _document_rows(plan.documents(), truth, s3, archive)
                if table == "documents"
                else _spec_rows(table, plan.specs(table), truth)
            )
            _load(engine, metadata.tables[table], report.track(table, size.rows(table), rows))
            if s3 is not None:
                s3.drain()
    _analyze(engine)
    return World(
        seed=seed,
        size=size,
        now=now,
        profiles=plan.profiles,
        truth=truth,
        personas=plan.personas,
        bucket=bucket,
        archive_root=archive_root,
        unrelated_objects=unrelated,
    )


def _analyze(engine: Engine) -> None:
    """Fresh planner statistics, so queries against a just-loaded big world use the indexes."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(text(f"ANALYZE {table}"))
