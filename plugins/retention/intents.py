"""What each announced batch was going to erase, so a resumed step can account for a crashed one.

A step writes a batch's intent (outcome ``planned``) to the ledger before it erases, and the
outcome after. A worker killed, or a connection lost, after the store erased but before the
outcome reached the ledger leaves the intent without an outcome; the retry then finds those
items gone and would never count them, and the receipt would under-report. So before erasing a
batch of named items (S3 versions, archive files), the step notes here which items the batch
names, as keyed pseudonyms of the item keys (never the keys: they may name a customer). A
resumed step (the same run) finds the intents without an outcome in the ledger, learns here
which of their items it still finds, and records the rest as erased by the attempt that
stopped (``reconcile``). A step that ends clears its notes; every run start clears notes of
runs older than two days.

Database batches are key ranges erased in one transaction: they commit whole or not at all,
so a failure before the outcome leaves nothing uncounted unless the commit's answer itself was
lost (then the rows are gone and counted by nobody; see the README's fault table).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, check_table_name, create_tables
from retention.pseudonym import pseudonymise

STALE_AFTER = timedelta(days=2)
_CHUNK = 1000
NAMESPACE = "intent item"


def item_refs(key: bytes, items: Iterable[str]) -> set[str]:
    """The keyed pseudonyms under which items are noted (never the item keys themselves)."""
    return {pseudonymise(key, item, namespace=NAMESPACE) for item in items}


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("store", sa.Text, nullable=False),
        sa.Column("batch_digest", sa.Text, nullable=False),
        sa.Column("item_ref", sa.Text, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Index(f"ix_{name}_step", "run_id", "category", "store"),
    )


class IntentItems:
    """The items of each announced batch of named items, per run, category and store."""

    def __init__(self, engine: Engine, table_name: str = "retention_intent_items") -> None:
        self._engine = engine
        self._table = _table(sa.MetaData(), check_table_name(table_name))

    def ensure_schema(self) -> None:
        with db_errors("intent items schema"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def add(self, run_id: str, category: str, store: str, batch_digest: str, refs: Iterable[str]) -> None:
        """Note a batch's items (their pseudonyms) before it is erased."""
        now = datetime.now(UTC)
        rows = [
            {
                "run_id": run_id,
                "category": category,
                "store": store,
                "batch_digest": batch_digest,
                "item_ref": ref,
                "recorded_at": now,
            }
            for ref in sorted(set(refs))
        ]
        with db_errors("intent items write"), self._engine.begin() as conn:
            for start in range(0, len(rows), _CHUNK):
                conn.execute(sa.insert(self._table), rows[start : start + _CHUNK])

    def of(self, run_id: str, category: str, store: str, digests: Iterable[str]) -> dict[str, set[str]]:
        """Batch digest -> its noted items, for the given batches of one step."""
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        t = self._table
        query = sa.select(t.c.batch_digest, t.c.item_ref).where(
            t.c.run_id == run_id, t.c.category == category, t.c.store == store, t.c.batch_digest.in_(wanted)
        )
        out: dict[str, set[str]] = {}
        with db_errors("intent items read"), self._engine.connect() as conn:
            for digest, ref in conn.execute(query):
                out.setdefault(digest, set()).add(ref)
        return out

    def clear(self, run_id: str, category: str, store: str) -> None:
        """Forget a finished step's notes (and every note of runs older than ``STALE_AFTER``)."""
        t = self._table
        with db_errors("intent items clear"), self._engine.begin() as conn:
            conn.execute(
                sa.delete(t).where(t.c.run_id == run_id, t.c.category == category, t.c.store == store)
            )
            conn.execute(sa.delete(t).where(t.c.recorded_at < datetime.now(UTC) - STALE_AFTER))


def unfinished(entries: Iterable[Mapping[str, object]], store: str) -> dict[str, str]:
    """Digest -> location of the named-item batches announced (``planned``) in ``store`` that have no
    outcome yet.

    ``entries`` are one run's ledger entries of one category. A key-range batch (whose intent
    has no count of its own) is left out: it commits whole or not at all.
    """
    planned: dict[str, str] = {}
    done: set[str] = set()
    for e in entries:
        digest = e.get("items_digest")
        if e.get("store") != store or not isinstance(digest, str):
            continue
        detail = e.get("detail")
        if e.get("outcome") == "planned":
            if not (isinstance(detail, dict) and detail.get("named_by") == "key_range"):
                planned[digest] = str(e.get("location") or "")
        else:
            done.add(digest)
    return {d: loc for d, loc in planned.items() if d not in done}
