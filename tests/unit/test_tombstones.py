"""The tombstone store on SQLite: sealed customer ids, bound to their rows, listed and purged by time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.errors import TerminalError
from retention.tombstones import Tombstones, expired_before, tombstone_key

SECRET = b"unit-test-tombstone-secret-0123456789"
T0 = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")


def _store(engine: sa.Engine, key: bytes | None = SECRET) -> Tombstones:
    store = Tombstones(engine, key)
    store.ensure_schema()
    return store


def _record(store: Tombstones, n: int, subject: str, at: datetime) -> bool:
    return store.record(
        run_id=f"manual__run-{n}",
        request_ref=f"PR-2026-0004{n}",
        reason="erasure_request",
        subject=subject,
        completed_at=at,
    )


def test_a_sealed_customer_id_opens_with_the_key_and_is_not_stored_in_the_clear(engine: sa.Engine) -> None:
    store = _store(engine)
    assert _record(store, 1, "4711", T0)
    (ref,) = store.since(T0 - timedelta(seconds=1))
    opened = store.open(ref.id)
    assert opened.subject == "4711" and opened.ref == ref
    assert (ref.request_ref, ref.reason, ref.completed_at) == ("PR-2026-00041", "erasure_request", T0)
    with engine.connect() as conn:
        raw = b"".join(
            repr(tuple(r)).encode() for r in conn.execute(sa.text("select * from retention_tombstones"))
        )
    assert b"4711" not in raw


def test_the_same_id_seals_differently_every_time(engine: sa.Engine) -> None:
    store = _store(engine)
    _record(store, 1, "4711", T0)
    _record(store, 2, "4711", T0)
    with engine.connect() as conn:
        sealed = [bytes(r[0]) for r in conn.execute(sa.text("select sealed from retention_tombstones"))]
    assert len(set(sealed)) == 2


def test_another_key_cannot_open_a_tombstone(engine: sa.Engine) -> None:
    _record(_store(engine), 1, "4711", T0)
    other = _store(engine, b"another-secret-of-enough-length")
    (ref,) = other.since(T0 - timedelta(days=1))
    with pytest.raises(TerminalError, match="does not decrypt"):
        other.open(ref.id)


def test_a_ciphertext_moved_to_another_row_does_not_open(engine: sa.Engine) -> None:
    store = _store(engine)
    _record(store, 1, "4711", T0)
    _record(store, 2, "815", T0 + timedelta(hours=1))
    first, second = store.since(T0 - timedelta(days=1))
    with engine.begin() as conn:
        row = conn.execute(
            sa.text("select nonce, sealed from retention_tombstones where id = :i"), {"i": first.id}
        ).one()
        conn.execute(
            sa.text("update retention_tombstones set nonce = :n, sealed = :s where id = :i"),
            {"n": row.nonce, "s": row.sealed, "i": second.id},
        )
    assert store.open(first.id).subject == "4711"
    with pytest.raises(TerminalError, match="does not decrypt"):
        store.open(second.id)


def test_a_retried_run_records_its_tombstone_once(engine: sa.Engine) -> None:
    store = _store(engine)
    assert _record(store, 1, "4711", T0)
    assert not _record(store, 1, "4711", T0 + timedelta(minutes=5))
    assert store.count() == 1


def test_since_lists_only_later_erasures_oldest_first(engine: sa.Engine) -> None:
    store = _store(engine)
    for n, hours in ((1, 5), (2, -3), (3, 1)):
        _record(store, n, f"10{n}", T0 + timedelta(hours=hours))
    assert [r.request_ref for r in store.since(T0)] == ["PR-2026-00043", "PR-2026-00041"]
    assert store.since(T0 + timedelta(hours=5)) == []


def test_purge_deletes_only_what_its_retention_has_ended_for(engine: sa.Engine) -> None:
    store = _store(engine)
    now = datetime(2026, 9, 20, 12, 0, tzinfo=UTC)
    cutoff = expired_before(now, "P90D")
    _record(store, 1, "1", cutoff - timedelta(seconds=1))
    _record(store, 2, "2", cutoff + timedelta(seconds=1))
    assert store.purge(cutoff) == 1
    assert [r.request_ref for r in store.since(cutoff - timedelta(days=365))] == ["PR-2026-00042"]
    assert store.purge(cutoff) == 0


def test_the_retention_counts_calendar_days_in_copenhagen() -> None:
    # 90 days before 2026-09-20 14:00 Copenhagen (summer time) is 2026-06-22 14:00 Copenhagen: 12:00 UTC.
    assert expired_before(datetime(2026, 9, 20, 12, 0, tzinfo=UTC), "P90D") == datetime(
        2026, 6, 22, 12, 0, tzinfo=UTC
    )


def test_listing_and_purging_need_no_key_but_reading_and_writing_do(engine: sa.Engine) -> None:
    _record(_store(engine), 1, "4711", T0)
    keyless = _store(engine, None)
    (ref,) = keyless.since(T0 - timedelta(days=1))
    with pytest.raises(TerminalError, match="not configured"):
        keyless.open(ref.id)
    with pytest.raises(TerminalError, match="not configured"):
        _record(keyless, 2, "4712", T0)
    assert keyless.purge(T0 + timedelta(days=1)) == 1


def test_short_secrets_and_personal_text_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(TerminalError, match="at least 16 bytes"):
        tombstone_key(b"short")
    store = _store(engine)
    with pytest.raises(TerminalError, match="request_ref must look like"):
        store.record(
            run_id="r1",
            request_ref="jane@example.com",
            reason="erasure_request",
            subject="1",
            completed_at=T0,
        )
    with pytest.raises(TerminalError, match="timezone-aware"):
        store.record(
            run_id="r1",
            request_ref="PR-2026-00042",
            reason="erasure_request",
            subject="1",
            completed_at=T0.replace(tzinfo=None),
        )
    assert store.count() == 0


def test_a_purged_tombstone_cannot_be_opened(engine: sa.Engine) -> None:
    store = _store(engine)
    _record(store, 1, "4711", T0)
    (ref,) = store.since(T0 - timedelta(days=1))
    store.purge(T0 + timedelta(days=1))
    with pytest.raises(TerminalError, match="does not exist"):
        store.open(ref.id)


@pytest.mark.parametrize(
    ("mode", "dry_run", "purged"), [("due", False, 1), ("due", True, 0), ("subject", False, 0)]
)
def test_only_a_real_nightly_run_purges_and_records_only_a_count(
    engine: sa.Engine, mode: str, dry_run: bool, purged: int
) -> None:
    from retention.adapters.database import DatabaseAdapter
    from retention.engine import RunContext
    from retention.flow import purge_tombstones
    from retention.ledger import Ledger
    from retention.policy import PolicySet
    from retention.results import RunInfo

    now = datetime(2026, 9, 20, 12, 0, tzinfo=UTC)
    store = _store(engine)
    _record(store, 1, "4711", now - timedelta(days=91))
    _record(store, 2, "4712", now - timedelta(days=89))
    ledger = Ledger(engine)
    ledger.ensure_schema()
    policies = PolicySet((), {})
    ctx = RunContext(
        run_id="nightly-1",
        now=now,
        policies=policies,
        database=DatabaseAdapter(engine),
        pseudonym_key=b"k" * 32,
        ledger=ledger,
        mode=mode,  # type: ignore[arg-type]
        dry_run=dry_run,
    )
    run = RunInfo("nightly-1", mode, now, dry_run, policies.hash, (), {})  # type: ignore[arg-type]
    assert purge_tombstones(ctx, run, store) == purged
    assert store.count() == 2 - purged
    entries = ledger.entries(run_id="nightly-1")
    assert [(e["action"], e["outcome"], e["count"], e["subject_ref"]) for e in entries] == (
        [("tombstone", "erased", 1, None)] if purged else []
    )
