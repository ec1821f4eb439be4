"""What each database batch erased, written in the batch's own transaction in the business database.

A database batch (a key range) deletes or anonymises its rows in one transaction, and its
outcome reaches the ledger afterwards, in another database. Between the two, the rows can be
gone and counted by nobody: the worker killed after the COMMIT, or the COMMIT's answer lost
with the connection (the server committed; the client only saw the connection drop). The
retry finds nothing left to erase, and the ledger and the receipt would under-report.

So the batch writes one row here inside its own transaction: the run, the category, the
location, the batch's digest (the ledger's ``items_digest`` of its ``planned`` entry) and how
many rows it erased and anonymised. The row exists exactly when the batch committed. A resumed
step of the same run looks up the batches it announced without an outcome (``unfinished``): a
journal row means the stopped attempt committed them, and its counts go into the ledger as
erased by that attempt; no row means nothing was committed, and this attempt erases the rows
itself. A step that ends clears its rows (and rows of runs older than ``STALE_AFTER``).

No personal data: ids of runs and categories, a digest of a key range, counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, check_table_name, create_tables

STALE_AFTER = timedelta(days=2)
TABLE = "retention_erase_journal"


@dataclass(frozen=True)
class JournalTag:
    """Which announced batch a transaction belongs to (the engine sets it on the batch)."""

    run_id: str
    category: str
    location: str
    batch_digest: str


@dataclass(frozen=True)
class Committed:
    """What the committed transactions of one announced batch did."""

    erased: int
    anonymised: int


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("batch_digest", sa.Text, nullable=False),
        sa.Column("erased", sa.Integer, nullable=False),
        sa.Column("anonymised", sa.Integer, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Index(f"ix_{name}_step", "run_id", "category"),
    )


class EraseJournal:
    """One row per committed database batch transaction, in the business database."""

    def __init__(self, engine: Engine, table_name: str = TABLE) -> None:
        self._engine = engine
        self._table = _table(sa.MetaData(), check_table_name(table_name))

    @property
    def name(self) -> str:
        return self._table.name

    def ensure_schema(self) -> None:
        with db_errors("erase journal schema"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def write(self, conn: Connection, tag: JournalTag, erased: int, anonymised: int) -> None:
        """Inside the batch's own transaction (``conn``): what it erased, so it commits with it."""
        conn.execute(
            sa.insert(self._table).values(
                run_id=tag.run_id,
                category=tag.category,
                location=tag.location,
                batch_digest=tag.batch_digest,
                erased=erased,
                anonymised=anonymised,
                recorded_at=datetime.now(UTC),
            )
        )

    def of(
        self, run_id: str, category: str, batches: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], Committed]:
        """(location, digest) -> what its committed transactions did, for the given batches of one step."""
        wanted = set(batches)
        if not wanted:
            return {}
        t = self._table
        digests = sorted({digest for _, digest in wanted})
        query = (
            sa.select(t.c.location, t.c.batch_digest, sa.func.sum(t.c.erased), sa.func.sum(t.c.anonymised))
            .where(t.c.run_id == run_id, t.c.category == category, t.c.batch_digest.in_(digests))
            .group_by(t.c.location, t.c.batch_digest)
        )
        with db_errors("erase journal read"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            (loc, digest): Committed(int(erased), int(anonymised))
            for loc, digest, erased, anonymised in rows
            if (loc, digest) in wanted
        }

    def forget(self, run_id: str, category: str) -> None:
        """Forget a finished step's rows, and every row of runs older than ``STALE_AFTER``."""
        t = self._table
        with db_errors("erase journal clear"), self._engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.run_id == run_id, t.c.category == category))
            conn.execute(sa.delete(t).where(t.c.recorded_at < datetime.now(UTC) - STALE_AFTER))


def unfinished_ranges(entries: Iterable[Mapping[str, object]]) -> dict[tuple[str, str], str]:
    """(location, digest) -> action of the database batches announced (``planned``) with no outcome.

    ``entries`` are one run's ledger entries of one category. Keyed by location too: the key
    ranges of two tables of one category can have the same text.
    """
    planned: dict[tuple[str, str], str] = {}
    done: set[tuple[str, str]] = set()
    for e in entries:
        digest = e.get("items_digest")
        if e.get("store") != "database" or not isinstance(digest, str):
            continue
        batch = (str(e.get("location") or ""), digest)
        if e.get("outcome") == "planned":
            planned[batch] = str(e.get("action") or "delete")
        else:
            done.add(batch)
    return {batch: action for batch, action in planned.items() if batch not in done}
