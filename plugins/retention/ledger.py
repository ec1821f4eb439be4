"""The accountability ledger: append-only and tamper-evident.

Entries (``retention.ledger_entry``, re-exported here) form a hash chain. Each entry's
hash covers all its stored fields, including its sequence number, time and the previous
entry's hash; a one-row *head* table holds the last sequence number and hash. Editing,
deleting, inserting or reordering entries breaks the chain, and deleting the last entries
disagrees with the head. On PostgreSQL a trigger also refuses UPDATE, DELETE and TRUNCATE
of the ledger table, so append-only is enforced by the database and not only by this code.
(SQLite, used by the demo, has no such trigger; there the chain alone makes tampering
evident.)

Appends are serialised on the head row (``SELECT ... FOR UPDATE`` on PostgreSQL, the
database write lock on SQLite), so appenders in separate processes extend one chain.

The chain cannot stop someone who rewrites every later entry *and* the head, or deletes the last
entries and rewrites the head; the head anchored outside this database by every run
(``retention.anchor``) makes that evident too.

A ledger opened for a run with its ``key_period`` (``retention.keyring``) writes that period into
every entry that names none. ``ensure_schema`` adds the ``key_period`` column to a ledger created
before it existed; until then entries are read without it (the old entries hash without it anyway).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, check_table_name, create_tables
from retention.errors import TerminalError
from retention.ledger_entry import (
    HASHED_FIELDS,
    KEY_PERIOD,
    OUTCOMES,
    LedgerEntry,
    check_key_period,
    entry_hash,
    stored_fields,
)

__all__ = [
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "KEY_PERIOD",
    "MAX_PAGE",
    "OUTCOMES",
    "AppendedEntry",
    "ChainStatus",
    "Ledger",
    "LedgerEntry",
    "entry_hash",
    "stored_fields",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""

MAX_PAGE = 1000
POLICY_SET = "policy_set"
"""The action of the entries that decide on a policy set; ``approved`` puts its hash in force."""


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
        sa.Column(KEY_PERIOD, sa.Text),
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

    def __init__(
        self, engine: Engine, table_name: str = "retention_ledger", *, key_period: str | None = None
    ) -> None:
        metadata = sa.MetaData()
        self._engine = engine
        self._table = _ledger_table(metadata, check_table_name(table_name))
        self._head = _head_table(metadata, table_name)
        self._key_period = check_key_period(key_period)
        """Written into every appended entry that names no key period (the run's period)."""
        self._has_key_period = False
        """Whether the table is known to have the ``key_period`` column (checked until it has)."""

    def ensure_schema(self) -> None:
        """Create the ledger, its head and (on PostgreSQL) the append-only trigger if missing; idempotent."""
        with db_errors("ledger schema"), self._engine.begin() as conn:
            create_tables(conn, (self._table, self._head))
            self._add_key_period(conn)
            if conn.dialect.name == "postgresql":
                self._install_append_only_trigger(conn)
            if self._locked_head(conn) is None:
                if conn.execute(sa.select(self._table.c.seq).limit(1)).first() is not None:
                    raise TerminalError("ledger has entries but its head row is missing: possible tampering")
                conn.execute(sa.insert(self._head).values(id=1, last_seq=0, last_hash=GENESIS_HASH))

    def _add_key_period(self, conn: Connection) -> None:
        """Add the ``key_period`` column to a ledger created before it existed (NULL in old entries)."""
        if self._knows_key_period(conn):
            return
        quote = conn.dialect.identifier_preparer.quote
        conn.execute(sa.text(f"ALTER TABLE {quote(self._table.name)} ADD COLUMN {KEY_PERIOD} TEXT"))
        self._has_key_period = True

    def _knows_key_period(self, conn: Connection) -> bool:
        """Whether the table has the ``key_period`` column (asked again until it has)."""
        if not self._has_key_period:
            names = {c["name"] for c in sa.inspect(conn).get_columns(self._table.name)}
            self._has_key_period = KEY_PERIOD in names
        return self._has_key_period

    def _stored_columns(self, conn: Connection) -> list[sa.Column[Any]]:
        """The table's columns that exist in the database: all but ``key_period`` in an old ledger."""
        known = self._knows_key_period(conn)
        return [c for c in self._table.c if known or c.name != KEY_PERIOD]

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
        for stored in fields:
            if stored[KEY_PERIOD] is None:
                stored[KEY_PERIOD] = self._key_period
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
            self._fit_old_table(conn, rows)
            conn.execute(sa.insert(self._table), rows)
            conn.execute(
                sa.update(self._head).where(self._head.c.id == 1).values(last_seq=seq, last_hash=prev)
            )
        return [AppendedEntry(row["seq"], row["entry_hash"]) for row in rows]

    def _fit_old_table(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Leave ``key_period`` out of rows for a ledger not yet given the column; refuse a period there."""
        if self._knows_key_period(conn):
            return
        if any(row[KEY_PERIOD] is not None for row in rows):
            raise TerminalError("the ledger has no key_period column yet: call ensure_schema() first")
        for row in rows:
            del row[KEY_PERIOD]

    def head(self) -> tuple[int, str] | None:
        """The head's (last_seq, last_hash) as stored, unlocked; None if there is no head row."""
        h = self._head
        with db_errors("ledger read"), self._engine.connect() as conn:
            row = conn.execute(sa.select(h.c.last_seq, h.c.last_hash).where(h.c.id == 1)).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def approved_policy_set(self) -> str | None:
        """The hash of the newest policy set approved for erasing runs (action ``policy_set``, outcome
        ``approved``); None if none was ever recorded."""
        t = self._table
        query = (
            sa.select(t.c.policy_set_hash)
            .where(t.c.action == POLICY_SET, t.c.outcome == "approved")
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        with db_errors("ledger read"), self._engine.connect() as conn:
            if not sa.inspect(conn).has_table(t.name):
                return None  # no ledger yet: nothing was ever approved
            found = conn.execute(query).scalar_one_or_none()
        return None if found is None else str(found)

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of entry ``seq`` (None if there is none): what an anchor is compared with."""
        t = self._table
        with db_errors("ledger read"), self._engine.connect() as conn:
            found = conn.execute(sa.select(t.c.entry_hash).where(t.c.seq == seq)).scalar_one_or_none()
        return None if found is None else str(found)

    def verify_chain(self, *, batch_size: int = 10_000, after: tuple[int, str] | None = None) -> ChainStatus:
        """Walk the chain in ``seq`` order, ``batch_size`` rows at a time; report the first break.

        ``after`` = ``(seq, entry_hash)`` of an entry an earlier walk found good: only the newer
        entries are walked, so the cost follows what was appended since (the monitoring page).
        """
        if batch_size < 1:
            raise TerminalError("batch_size must be at least 1")
        with db_errors("ledger verify"), self._engine.connect() as conn:
            snapshot = self._head_snapshot(conn)
            if snapshot is None:
                return ChainStatus(False, 0, GENESIS_HASH, None, "the head row is missing")
            last_seq, last_hash, max_seq = snapshot
            walk = _ChainWalk()
            if after is not None:
                walk.checked, walk.prev_hash = after
            for row in self._rows_up_to(conn, last_seq, batch_size, walk.checked):
                if not walk.accept(row):
                    return walk.status()
            return walk.finish(last_seq, last_hash, max_seq)

    def _head_snapshot(self, conn: Connection) -> tuple[int, str, int | None] | None:
        # one statement, one snapshot: a concurrent append changes both or neither
        max_seq = sa.select(sa.func.max(self._table.c.seq)).scalar_subquery()
        query = sa.select(self._head.c.last_seq, self._head.c.last_hash, max_seq).where(self._head.c.id == 1)
        row = conn.execute(query).first()
        return None if row is None else (int(row[0]), str(row[1]), None if row[2] is None else int(row[2]))

    def _rows_up_to(
        self, conn: Connection, last_seq: int, batch_size: int, first_after: int = 0
    ) -> Iterator[RowMapping]:
        # keyset pages: each query is bounded, so memory stays flat however long the chain
        seq = self._table.c.seq
        query = sa.select(*self._stored_columns(conn)).where(seq <= last_seq).order_by(seq).limit(batch_size)
        page = query.where(seq > first_after) if first_after else query
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
        with db_errors("ledger read"), self._engine.connect() as conn:
            query = (
                sa.select(*self._stored_columns(conn))
                .where(*self._filters(run_id, category))
                .order_by(self._table.c.seq.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_decoded(row) for row in conn.execute(query).mappings()]

    def count(self, run_id: str | None = None, category: str | None = None) -> int:
        """How many entries there are, optionally of one run and/or category."""
        query = sa.select(sa.func.count()).select_from(self._table).where(*self._filters(run_id, category))
        with db_errors("ledger read"), self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def summaries(self, limit: int, *, mode: str) -> list[dict[str, Any]]:
        """The ``detail`` of the newest ``limit`` real (not dry) run summaries of ``mode``, newest first."""
        t = self._table
        query = (
            sa.select(t.c.detail)
            .where(t.c.action == "run", t.c.outcome == "summary")
            .order_by(t.c.seq.desc())
            .limit(max(limit, 0) * 4 + 10)
        )
        out: list[dict[str, Any]] = []
        with db_errors("ledger read"), self._engine.connect() as conn:
            for (detail,) in conn.execute(query):
                decoded = json.loads(detail) if detail else {}
                if decoded.get("mode") == mode and decoded.get("dry_run") is False:
                    out.append(decoded)
                if len(out) == limit:
                    break
        return out

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
