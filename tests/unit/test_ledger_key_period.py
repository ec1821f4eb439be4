"""Each ledger entry names its pseudonym key's period (#13); a ledger written before that still verifies.

The old ledger is built here in the old code's shape: the table without ``key_period`` and hashes
computed the old way (every stored column but ``entry_hash``), independently of ``entry_hash``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.errors import TerminalError
from retention.ledger import GENESIS_HASH, Ledger, LedgerEntry
from retention.pseudonym import pseudonymise

OLD_COLUMNS = (
    "seq entry_id recorded_at run_id category store location action outcome count items_digest "
    "subject_ref reason until policy_set_hash detail prev_hash entry_hash"
).split()
KEY = b"an-old-unversioned-key-0123456789"


def old_ledger(engine: sa.Engine, n: int) -> None:
    """A ledger as the code before key periods wrote it: ``n`` chained entries, and its head."""
    postgres = engine.dialect.name == "postgresql"
    timestamp = "TIMESTAMP WITH TIME ZONE" if postgres else "DATETIME"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE retention_ledger (seq BIGINT PRIMARY KEY, "
                f"entry_id VARCHAR(36) NOT NULL UNIQUE, recorded_at {timestamp} NOT NULL, "
                "run_id TEXT, category TEXT, store TEXT, location TEXT, "
                "action TEXT NOT NULL, outcome TEXT NOT NULL, count BIGINT NOT NULL, items_digest TEXT, "
                "subject_ref TEXT, reason TEXT, until TEXT, policy_set_hash TEXT, detail TEXT, "
                "prev_hash VARCHAR(64) NOT NULL, entry_hash VARCHAR(64) NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE retention_ledger_head (id INTEGER PRIMARY KEY, last_seq BIGINT NOT NULL, "
                "last_hash VARCHAR(64) NOT NULL)"
            )
        )
        prev, start = GENESIS_HASH, datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
        for seq in range(1, n + 1):
            at = start + timedelta(days=seq)
            row = {
                "seq": seq,
                "entry_id": str(uuid.UUID(int=seq)),
                "recorded_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "run_id": f"old_run_{'abcdefgh'[seq % 8]}",
                "category": "customer_master_data",
                "store": "database",
                "location": "table:customers",
                "action": "delete",
                "outcome": "erased",
                "count": seq,
                "items_digest": None,
                "subject_ref": pseudonymise(KEY, f"{seq}"),
                "reason": None,
                "until": None,
                "policy_set_hash": None,
                "detail": json.dumps({"batches": 1}, sort_keys=True, separators=(",", ":")),
                "prev_hash": prev,
            }
            canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            prev = row["entry_hash"] = hashlib.sha256(canonical.encode()).hexdigest()
            row["recorded_at"] = at if postgres else at.replace(tzinfo=None).isoformat(sep=" ")
            names = ", ".join(OLD_COLUMNS)
            values = ", ".join(f":{c}" for c in OLD_COLUMNS)
            conn.execute(sa.text(f"INSERT INTO retention_ledger ({names}) VALUES ({values})"), row)  # noqa: S608
        conn.execute(sa.text("INSERT INTO retention_ledger_head VALUES (1, :s, :h)"), {"s": n, "h": prev})


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")


def columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("retention_ledger")}


def test_an_old_ledger_is_read_gains_the_column_and_its_old_entries_still_verify(engine: sa.Engine) -> None:
    old_ledger(engine, 4)
    ledger = Ledger(engine, key_period="2026")
    before = ledger.verify_chain()
    assert (before.ok, before.checked) == (True, 4), before.problem
    assert [e["seq"] for e in ledger.entries()] == [4, 3, 2, 1]
    with pytest.raises(TerminalError, match="ensure_schema"):
        ledger.append(LedgerEntry(action="run", outcome="summary"))
    assert "key_period" not in columns(engine)

    ledger.ensure_schema()
    ledger.ensure_schema()  # idempotent
    assert "key_period" in columns(engine)
    ledger.append(LedgerEntry(action="run", outcome="summary", run_id="new_run"))
    ledger.append(LedgerEntry(action="run", outcome="summary", run_id="other", key_period="2025"))
    after = Ledger(engine).verify_chain()
    assert (after.ok, after.checked) == (True, 6), after.problem
    periods = [(e["seq"], e["key_period"]) for e in Ledger(engine).entries()]
    assert periods == [(6, "2025"), (5, "2026"), (4, None), (3, None), (2, None), (1, None)]


def test_the_key_period_is_covered_by_the_hash(engine: sa.Engine) -> None:
    ledger = Ledger(engine, key_period="2026")
    ledger.ensure_schema()
    ledger.append_many([LedgerEntry(action="run", outcome="summary") for _ in range(3)])
    assert ledger.verify_chain().ok
    with engine.begin() as conn:  # SQLite has no append-only trigger: the chain must notice
        conn.execute(sa.text("UPDATE retention_ledger SET key_period = '2020' WHERE seq = 2"))
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq) == (False, 2)


def test_a_key_period_is_a_year() -> None:
    for bad in ("26", "2026-01", "year", "20260101"):
        with pytest.raises(TerminalError, match="key_period"):
            LedgerEntry(action="run", outcome="summary", key_period=bad)
    with pytest.raises(TerminalError, match="key_period"):
        Ledger(sa.create_engine("sqlite://"), key_period="last year")
