"""The accountability ledger: append-only and tamper-evident.

Every planned, erased, kept or failed piece of work leaves one entry: counts, a digest
of the keys touched (or, for a database batch named by a key range, of that range: its
``planned`` entry has count 0 and ``detail.named_by = key_range``, and its outcome entry the
rows it held), at most a pseudonym, never a list of items or personal data.

Entries form a hash chain. Each entry's hash covers all its stored fields, including
its sequence number, time and the previous entry's hash; a one-row *head* table holds
the last sequence number and hash. Editing, deleting, inserting or reordering entries
breaks the chain, and deleting the last entries disagrees with the head. On PostgreSQL
a trigger also refuses UPDATE, DELETE and TRUNCATE of the ledger table, so append-only
is enforced by the database and not only by this code. (SQLite, used by the demo, has
no such trigger; there the chain alone makes tampering evident.)

Appends are serialised on the head row (``SELECT ... FOR UPDATE`` on PostgreSQL, the
database write lock on SQLite), so appenders in separate processes extend one chain.

The chain cannot stop someone who rewrites every later entry *and* the head; keeping
``ChainStatus.head_hash`` somewhere else (a run's log) makes that evident too.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine, RowMapping
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.schema import CreateIndex, CreateTable

from retention.errors import TerminalError, TransientError
from retention.pseudonym import is_pseudonym

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""

OUTCOMES = frozenset(
    {
        "planned",
        "erased",
        "anonymised",
        "kept",
        "failed",
        "verified",
        "verify_failed",
        "approval_requested",
        "approved",
        "rejected",
        "skipped",
        "summary",
    }
)

HASHED_FIELDS = (
    "seq",
    "entry_id",
    "recorded_at",
    "run_id",
    "category",
    "store",
    "location",
    "action",
    "outcome",
    "count",
    "items_digest",
    "subject_ref",
    "reason",
    "until",
    "policy_set_hash",
    "detail",
    "prev_hash",
)
"""Every stored column but ``entry_hash`` itself."""

MAX_TEXT = 1000
MAX_DETAIL = 4096
MAX_PAGE = 1000

_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_ACTION = re.compile(r"[a-z][a-z0-9_]{0,39}")
_HEX = re.compile(r"[0-9a-f]{16,128}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 8 to 15 digits, optionally separated by spaces, dots, dashes or parentheses: Danish
# phone numbers ("12 34 56 78", "+45 12345678") and CPR numbers ("010190-1234").
_PHONE = re.compile(r"(?<![0-9A-Za-z])\+?\d(?:[ ().-]{0,2}\d){7,14}(?![0-9A-Za-z])")
# Dates and times (Airflow run ids carry them) would otherwise look like phone numbers.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


# --- database helpers shared with retention.holds -------------------------------------------


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware in UTC (naive values are refused)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = aware_utc("timestamp", value)
        # SQLite keeps no offset; naive UTC text compares correctly as text
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def aware_utc(name: str, value: datetime) -> datetime:
    """``value`` converted to UTC; TerminalError if it is not a timezone-aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise TerminalError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def check_table_name(name: str) -> str:
    """Return ``name`` if it is a plain lower-case identifier (it is used in DDL); TerminalError otherwise."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise TerminalError("table name must be a lower-case identifier of at most 48 characters")
    return name


@contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Map database errors to TransientError (connection, locks) or TerminalError (refused).

    Only the error class and code are kept, and the original is not chained: the
    driver's message and SQLAlchemy's text carry statement parameters, which may be
    personal data (a held subject) and must not reach logs.
    """
    try:
        yield
    except DBAPIError as exc:
        if _retryable(exc):
            raise TransientError(f"{what}: database unavailable ({_error_code(exc)})") from None
        raise TerminalError(f"{what}: database refused the statement ({_error_code(exc)})") from None


def _retryable(exc: DBAPIError) -> bool:
    # SQLite reports a missing table or a syntax error as an OperationalError too, with
    # the generic SQLITE_ERROR code; only busy, locked and I/O conditions can pass
    if getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_ERROR":
        return False
    return isinstance(exc, OperationalError) or exc.connection_invalidated


def _error_code(exc: DBAPIError) -> str:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "sqlite_errorname", None)
    name = type(exc.orig).__name__
    return f"{name}, {code}" if code else name


def create_tables(conn: Connection, tables: Iterable[sa.Table]) -> None:
    """Create the tables and their indexes if missing, safely against concurrent callers.

    On PostgreSQL a transaction-scoped advisory lock serialises callers, because
    ``IF NOT EXISTS`` alone still races there; SQLite runs each DDL statement atomically.
    When everything exists no DDL runs at all: ``CREATE INDEX IF NOT EXISTS`` still locks
    its table on PostgreSQL, which would deadlock with a concurrent append.
    """
    tables = list(tables)
    if conn.dialect.name == "postgresql":
        key = "retention schema " + ",".join(t.name for t in tables)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    inspector = sa.inspect(conn)
    for table in tables:
        if inspector.has_table(table.name):
            existing = {index["name"] for index in inspector.get_indexes(table.name)}
        else:
            conn.execute(CreateTable(table, if_not_exists=True))
            existing = set()
        for index in table.indexes:
            if index.name not in existing:
                conn.execute(CreateIndex(index, if_not_exists=True))


# --- personal-data guard ----------------------------------------------------------------------


def personal_data_kind(text: str) -> str | None:
    """Name the kind of contact data ``text`` seems to contain, or None.

    A cheap last line of defence, not a classifier: it catches e-mail addresses and
    phone- or CPR-number-like digit runs, nothing else (no names, no free text).
    """
    if _EMAIL.search(text):
        return "an e-mail address"
    if _PHONE.search(_TIMESTAMP.sub("/", text)):
        return "a phone-number-like digit sequence"
    return None


def check_text(name: str, value: str | None) -> str | None:
    """Return ``value`` if it is None or short, printable text without contact data; TerminalError otherwise.

    The message names the field and the problem, never the value.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TerminalError(f"{name} must be text")
    if len(value) > MAX_TEXT:
        raise TerminalError(f"{name} is longer than {MAX_TEXT} characters")
    if _CONTROL.search(value):
        raise TerminalError(f"{name} contains a control character")
    kind = personal_data_kind(value)
    if kind:
        raise TerminalError(f"{name} looks like it contains {kind}; personal data never goes in the ledger")
    return value


# --- entries ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One fact for the ledger; constructing it raises TerminalError if a field is malformed or personal."""

    action: str
    """What kind of work: ``delete``, ``anonymise``, ``approval``, ``run``, ..."""
    outcome: str
    """One of ``OUTCOMES``."""
    run_id: str | None = None
    category: str | None = None
    store: str | None = None
    location: str | None = None
    count: int = 0
    items_digest: str | None = None
    """Hex digest of the keys touched (``KeyDigest``)."""
    subject_ref: str | None = None
    """A pseudonym (``retention.pseudonym``), never a raw identifier."""
    reason: str | None = None
    until: str | None = None
    """ISO 8601 date or date-time."""
    policy_set_hash: str | None = None
    detail: Mapping[str, Any] | None = None
    """A small JSON-serialisable dict of counts and codes."""
    entry_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        stored_fields(self)


@dataclass(frozen=True)
class AppendedEntry:
    """Where an entry landed in the chain."""

    seq: int
    entry_hash: str


@dataclass(frozen=True)
class ChainStatus:
    """The result of walking the chain; ``head_hash`` is the hash of the last entry found good."""

    ok: bool
    checked: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


def stored_fields(entry: LedgerEntry) -> dict[str, Any]:
    """The entry's columns as stored (detail as canonical JSON text), validated; TerminalError if refused."""
    return {
        "entry_id": _entry_id(entry.entry_id),
        "run_id": check_text("run_id", entry.run_id),
        "category": check_text("category", entry.category),
        "store": check_text("store", entry.store),
        "location": check_text("location", entry.location),
        "action": _matching("action", entry.action, _ACTION),
        "outcome": _outcome(entry.outcome),
        "count": _count(entry.count),
        "items_digest": _optional_matching("items_digest", entry.items_digest, _HEX),
        "subject_ref": _subject_ref(entry.subject_ref),
        "reason": check_text("reason", entry.reason),
        "until": _until(entry.until),
        "policy_set_hash": _optional_matching("policy_set_hash", entry.policy_set_hash, _HEX),
        "detail": _detail(entry.detail),
    }


def entry_hash(stored: Mapping[str, Any] | RowMapping) -> str:
    """SHA-256 over the canonical JSON of an entry's ``HASHED_FIELDS`` as stored."""
    payload = {name: stored[name] for name in HASHED_FIELDS}
    payload["recorded_at"] = aware_utc("recorded_at", stored["recorded_at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _entry_id(value: str) -> str:
    try:
        canonical = str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise TerminalError("entry_id must be a UUID") from None
    if canonical != value:
        raise TerminalError("entry_id must be a UUID in canonical lower-case form")
    return value


def _matching(name: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise TerminalError(f"{name} has an invalid form")
    return value


def _optional_matching(name: str, value: str | None, pattern: re.Pattern[str]) -> str | None:
    return None if value is None else _matching(name, value, pattern)


def _outcome(value: str) -> str:
    if value not in OUTCOMES:
        raise TerminalError(f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
    return value


def _count(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TerminalError("count must be a non-negative integer")
    return value


def _subject_ref(value: str | None) -> str | None:
    if value is not None and not (isinstance(value, str) and is_pseudonym(value)):
        raise TerminalError("subject_ref must be a pseudonym (psn:...), never a raw identifier")
    return value


def _until(value: str | None) -> str | None:
    if value is None:
        return None
    _matching("until", value, _ISO_DATE)
    try:
        (datetime if "T" in value else date).fromisoformat(value)
    except ValueError:
        raise TerminalError("until is not a valid ISO 8601 date") from None
    return value


def _detail(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TerminalError("detail must be a dict with text keys")
    try:
        text = _canonical_json(dict(value))
    except (TypeError, ValueError):
        raise TerminalError("detail must be JSON-serialisable (finite numbers, text, lists, dicts)") from None
    if len(text) > MAX_DETAIL:
        raise TerminalError(f"detail is longer than {MAX_DETAIL} characters: counts and codes only")
    for piece in _strings(value):
        check_text("detail", piece)
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


# --- the ledger -------------------------------------------------------------------------------


def _ledger_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("entry_id", sa.String(36), nullable=False, unique=True),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("run_id", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("store", sa.Text),
        sa.Column("location", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("items_digest", sa.Text),
        sa.Column("subject_ref", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("until", sa.Text),
        sa.Column("policy_set_hash", sa.Text),
        sa.Column("detail", sa.Text),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Index(f"ix_{name}_run_id", "run_id", "seq"),
        sa.Index(f"ix_{name}_category", "category", "seq"),
    )


def _head_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        f"{name}_head",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name=f"ck_{name}_head_single_row"),
    )


class Ledger:
    """The append-only, hash-chained ledger in one table (plus its head) of ``engine``'s database."""

    def __init__(self, engine: Engine, table_name: str = "retention_ledger") -> None:
        metadata = sa.MetaData()
        self._engine = engine
        self._table = _ledger_table(metadata, check_table_name(table_name))
        self._head = _head_table(metadata, table_name)

    def ensure_schema(self) -> None:
        """Create the ledger, its head and (on PostgreSQL) the append-only trigger if missing; idempotent."""
        with db_errors("ledger schema"), self._engine.begin() as conn:
            create_tables(conn, (self._table, self._head))
            if conn.dialect.name == "postgresql":
                self._install_append_only_trigger(conn)
            if self._locked_head(conn) is None:
                if conn.execute(sa.select(self._table.c.seq).limit(1)).first() is not None:
                    raise TerminalError("ledger has entries but its head row is missing: possible tampering")
                conn.execute(sa.insert(self._head).values(id=1, last_seq=0, last_hash=GENESIS_HASH))

    def _install_append_only_trigger(self, conn: Connection) -> None:
        quote = conn.dialect.identifier_preparer.quote
        table, name = self._table.name, f"{self._table.name}_append_only"
        state = conn.execute(
            sa.text("SELECT tgenabled FROM pg_trigger WHERE tgrelid = to_regclass(:t) AND tgname = :n"),
            {"t": quote(table), "n": name},
        ).scalar_one_or_none()
        if state is None:
            conn.execute(
                sa.text(
                    f"CREATE OR REPLACE FUNCTION {quote(name)}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$"
                )
            )
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER {quote(name)} BEFORE UPDATE OR DELETE OR TRUNCATE ON {quote(table)} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {quote(name)}()"
                )
            )
        elif state not in ("O", "A"):
            # someone switched it off (or to replica-only); append-only is not optional
            conn.execute(sa.text(f"ALTER TABLE {quote(table)} ENABLE TRIGGER {quote(name)}"))

    def _locked_head(self, conn: Connection) -> tuple[int, str] | None:
        """The head's (last_seq, last_hash), locked until the transaction ends; None if there is no head."""
        head = self._head
        query = sa.select(head.c.last_seq, head.c.last_hash).where(head.c.id == 1)
        if conn.dialect.name == "sqlite":
            # a no-op write takes SQLite's write lock before the read (BEGIN IMMEDIATE semantics)
            conn.execute(sa.update(head).where(head.c.id == 1).values(last_seq=head.c.last_seq))
        else:
            query = query.with_for_update()
        row = conn.execute(query).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def append(self, entry: LedgerEntry) -> AppendedEntry:
        """Append one entry at the end of the chain."""
        return self.append_many([entry])[0]

    def append_many(self, entries: Iterable[LedgerEntry]) -> list[AppendedEntry]:
        """Append entries in order, in one transaction: all of them or none."""
        fields = [stored_fields(e) for e in entries]
        if not fields:
            return []
        with db_errors("ledger append"), self._engine.begin() as conn:
            head = self._locked_head(conn)
            if head is None:
                raise TerminalError("ledger is not initialised: call ensure_schema() first")
            seq, prev = head
            recorded_at = datetime.now(UTC)
            rows = []
            for stored in fields:
                seq += 1
                row = {**stored, "seq": seq, "recorded_at": recorded_at, "prev_hash": prev}
                prev = row["entry_hash"] = entry_hash(row)
                rows.append(row)
            conn.execute(sa.insert(self._table), rows)
            conn.execute(
                sa.update(self._head).where(self._head.c.id == 1).values(last_seq=seq, last_hash=prev)
            )
        return [AppendedEntry(row["seq"], row["entry_hash"]) for row in rows]

    def verify_chain(self, *, batch_size: int = 10_000) -> ChainStatus:
        """Walk the whole chain in ``seq`` order, ``batch_size`` rows at a time; report the first break."""
        if batch_size < 1:
            raise TerminalError("batch_size must be at least 1")
        with db_errors("ledger verify"), self._engine.connect() as conn:
            snapshot = self._head_snapshot(conn)
            if snapshot is None:
                return ChainStatus(False, 0, GENESIS_HASH, None, "the head row is missing")
            last_seq, last_hash, max_seq = snapshot
            walk = _ChainWalk()
            for row in self._rows_up_to(conn, last_seq, batch_size):
                if not walk.accept(row):
                    return walk.status()
            return walk.finish(last_seq, last_hash, max_seq)

    def _head_snapshot(self, conn: Connection) -> tuple[int, str, int | None] | None:
        # one statement, one snapshot: a concurrent append changes both or neither
        max_seq = sa.select(sa.func.max(self._table.c.seq)).scalar_subquery()
        query = sa.select(self._head.c.last_seq, self._head.c.last_hash, max_seq).where(self._head.c.id == 1)
        row = conn.execute(query).first()
        return None if row is None else (int(row[0]), str(row[1]), None if row[2] is None else int(row[2]))

    def _rows_up_to(self, conn: Connection, last_seq: int, batch_size: int) -> Iterator[RowMapping]:
        # keyset pages: each query is bounded, so memory stays flat however long the chain
        seq = self._table.c.seq
        query = sa.select(self._table).where(seq <= last_seq).order_by(seq).limit(batch_size)
        page = query
        while batch := conn.execute(page).mappings().all():
            page = query.where(seq > batch[-1]["seq"])
            yield from batch
            batch = []  # free this page before the next one is fetched

    def entries(
        self, *, run_id: str | None = None, category: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """One page of entries, newest first, optionally of one run and/or category (detail decoded)."""
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise TerminalError(f"offset must be >= 0 and limit between 1 and {MAX_PAGE}")
        query = (
            sa.select(self._table)
            .where(*self._filters(run_id, category))
            .order_by(self._table.c.seq.desc())
            .offset(offset)
            .limit(limit)
        )
        with db_errors("ledger read"), self._engine.connect() as conn:
            return [_decoded(row) for row in conn.execute(query).mappings()]

    def count(self, run_id: str | None = None, category: str | None = None) -> int:
        """How many entries there are, optionally of one run and/or category."""
        query = sa.select(sa.func.count()).select_from(self._table).where(*self._filters(run_id, category))
        with db_errors("ledger read"), self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def outcomes_for_run(self, run_id: str) -> dict[tuple[str | None, str | None, str], int]:
        """Summed ``count`` per (category, store, outcome) of one run."""
        t = self._table
        query = (
            sa.select(t.c.category, t.c.store, t.c.outcome, sa.func.sum(t.c.count))
            .where(t.c.run_id == run_id)
            .group_by(t.c.category, t.c.store, t.c.outcome)
        )
        with db_errors("ledger read"), self._engine.connect() as conn:
            return {(c, s, o): int(total) for c, s, o, total in conn.execute(query)}

    def _filters(self, run_id: str | None, category: str | None) -> list[sa.ColumnElement[bool]]:
        t = self._table
        conditions = [(run_id, t.c.run_id == run_id), (category, t.c.category == category)]
        return [cond for value, cond in conditions if value is not None]


def _decoded(row: RowMapping) -> dict[str, Any]:
    entry = dict(row)
    if entry["detail"] is not None:
        entry["detail"] = json.loads(entry["detail"])
    return entry


class _ChainWalk:
    """The state of one verification pass: where the chain stands after the rows seen so far."""

    def __init__(self) -> None:
        self.checked = 0
        self.prev_hash = GENESIS_HASH
        self.bad_seq: int | None = None
        self.problem: str | None = None

    def accept(self, row: RowMapping) -> bool:
        """Check the next row; False (and remember the problem) if the chain breaks there."""
        expected, seq = self.checked + 1, int(row["seq"])
        if seq < expected:
            return self._break(seq, f"an entry numbered {seq} lies before the chain (inserted)")
        if seq != expected:
            return self._break(expected, f"entry {expected} is missing (deleted or renumbered)")
        if entry_hash(row) != row["entry_hash"]:
            return self._break(seq, f"entry {seq} does not match its hash (edited or moved)")
        if row["prev_hash"] != self.prev_hash:
            return self._break(seq, f"entry {seq} does not follow entry {seq - 1} (chain broken)")
        self.checked, self.prev_hash = seq, str(row["entry_hash"])
        return True

    def _break(self, seq: int, problem: str) -> bool:
        self.bad_seq, self.problem = seq, problem
        return False

    def finish(self, last_seq: int, last_hash: str, max_seq: int | None) -> ChainStatus:
        """Compare the walk's end with the head: catches deleted last entries and entries past the head."""
        first_missing = self.checked + 1
        if self.checked < last_seq:
            self._break(
                first_missing,
                f"entries {first_missing} to {last_seq} are missing (the head ends at {last_seq})",
            )
        elif self.prev_hash != last_hash:
            self._break(last_seq, f"entry {last_seq} does not match the head")
        elif max_seq is not None and max_seq > last_seq:
            self._break(last_seq + 1, f"entries after {last_seq} were added outside the ledger")
        return self.status()

    def status(self) -> ChainStatus:
        return ChainStatus(self.problem is None, self.checked, self.prev_hash, self.bad_seq, self.problem)
