"""The pseudonym keyring (#13): one random key per year, stored wrapped, destroyed for good."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.errors import TerminalError
from retention.keyring import TABLE, Keyring, destruction_due, period_of, shred_expired
from retention.pseudonym import pseudonymise

MASTER = b"the-master-key-of-this-test-0123"
NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def keyring(engine: sa.Engine) -> Keyring:
    keyring = Keyring(engine, MASTER)
    keyring.ensure_schema()
    return keyring


KEYS = sa.table(TABLE, sa.column("period"), sa.column("wrapped"), sa.column("destroyed_by"))


def stored(engine: sa.Engine, period: str) -> tuple[bytes | None, str | None]:
    """The raw row of ``period``: its wrapped key and the run that destroyed it."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(KEYS.c.wrapped, KEYS.c.destroyed_by).where(KEYS.c.period == period)
        ).one()
    return row[0], row[1]


def test_a_year_has_one_random_key_whoever_asks_first(url: str, keyring: Keyring) -> None:
    other_engine = sa.create_engine(url)
    try:
        other = Keyring(other_engine, MASTER)
        first = other.key("2026")
        assert keyring.key("2026") == first == other.key("2026")
    finally:
        other_engine.dispose()
    assert len(first) == 32
    assert keyring.key("2025") != first, "each year has a key of its own"
    assert first != MASTER and pseudonymise(first, "42") != pseudonymise(MASTER, "42")


def test_the_table_holds_the_key_wrapped_never_in_clear(engine: sa.Engine, keyring: Keyring) -> None:
    key = keyring.key("2026")
    wrapped, destroyed_by = stored(engine, "2026")
    assert wrapped is not None and destroyed_by is None
    assert key not in bytes(wrapped) and MASTER not in bytes(wrapped)
    assert len(wrapped) == 12 + 32 + 16, "nonce, ciphertext and tag"


def test_another_master_key_cannot_open_a_key(engine: sa.Engine, keyring: Keyring) -> None:
    keyring.key("2026")
    with pytest.raises(TerminalError, match="master key does not open"):
        Keyring(engine, b"another-master-key-0123456789ab").key("2026")
    with pytest.raises(TerminalError, match="at least 16 bytes"):
        Keyring(engine, b"short")
    with pytest.raises(TerminalError, match="without the master key"):
        Keyring(engine).key("2026")


def test_a_wrapped_key_moved_to_another_year_does_not_open(engine: sa.Engine, keyring: Keyring) -> None:
    keyring.key("2025")
    keyring.key("2026")
    with engine.begin() as conn:
        moved = sa.select(KEYS.c.wrapped).where(KEYS.c.period == "2026").scalar_subquery()
        conn.execute(sa.update(KEYS).where(KEYS.c.period == "2025").values(wrapped=moved))
    with pytest.raises(TerminalError, match="period 2025"):
        keyring.key("2025")


def test_a_destroyed_key_is_gone_and_never_made_again(url: str, engine: sa.Engine, keyring: Keyring) -> None:
    old = keyring.key("2020")
    assert keyring.destroy("2020", now=NOW, keep="P5Y", run_id="housekeeping_a") is True
    assert stored(engine, "2020") == (None, "housekeeping_a")
    assert [(p.period, p.destroyed_at) for p in keyring.periods()] == [("2020", NOW)]
    assert keyring.destroyed("2020")
    fresh = Keyring(sa.create_engine(url), MASTER)
    for ring in (keyring, fresh):
        with pytest.raises(TerminalError, match="2020 was destroyed"):
            ring.key("2020")
    assert keyring.destroy("2020", now=NOW, keep="P5Y", run_id="housekeeping_b") is False, "idempotent"
    assert stored(engine, "2020")[1] == "housekeeping_a"
    with engine.connect() as conn:
        blobs = [bytes(b) for b in conn.execute(sa.select(KEYS.c.wrapped)).scalars() if b is not None]
    assert blobs == [] and old
    assert [(p.period, p.linkable) for p in keyring.periods()] == [("2020", False)]


def test_the_current_year_and_a_year_not_yet_due_are_refused(keyring: Keyring) -> None:
    keyring.key("2026")
    keyring.key("2021")
    with pytest.raises(TerminalError, match="current period 2026"):
        keyring.destroy("2026", now=NOW, keep="P5Y", run_id="hk")
    with pytest.raises(TerminalError, match="current period 2027"):
        keyring.destroy("2027", now=NOW, keep="P5Y", run_id="hk")
    with pytest.raises(TerminalError, match="2021 is not due"):
        keyring.destroy("2021", now=NOW, keep="P5Y", run_id="hk")
    assert all(p.linkable for p in keyring.periods())


def test_a_year_is_due_keep_after_it_ends() -> None:
    assert destruction_due("2020", "P5Y") == datetime(2026, 1, 1, tzinfo=UTC)
    assert destruction_due("2024", "P18M") == datetime(2026, 7, 1, tzinfo=UTC)
    assert period_of(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == "2026"
    with pytest.raises(TerminalError):
        period_of(datetime(2026, 1, 1))  # noqa: DTZ001 - a naive time is refused
    with pytest.raises(TerminalError, match="four-digit year"):
        destruction_due("20", "P5Y")


def test_shredding_destroys_what_is_due_looks_again_and_a_retry_reports_the_same(
    engine: sa.Engine, keyring: Keyring
) -> None:
    for year in ("2019", "2020", "2021", "2026"):
        keyring.key(year)
    planned = shred_expired(keyring, now=NOW, keep="P5Y", run_id="hk_dry", dry_run=True)
    assert (planned.due, planned.destroyed) == (("2019", "2020"), ())
    assert [e.outcome for e in planned.entries("hk_dry", "ab" * 32)] == ["planned", "planned"]
    assert all(p.linkable for p in keyring.periods()), "a dry run destroys nothing"

    done = shred_expired(keyring, now=NOW, keep="P5Y", run_id="hk_real", dry_run=False)
    assert (done.due, done.destroyed, done.left) == (("2019", "2020"), ("2019", "2020"), ())
    entries = done.entries("hk_real", "ab" * 32)
    assert [(e.outcome, (e.detail or {})["destroyed_period"]) for e in entries] == [
        ("erased", "2019"),
        ("erased", "2020"),
    ]
    assert {p.period: p.linkable for p in keyring.periods()} == {
        "2019": False,
        "2020": False,
        "2021": True,
        "2026": True,
    }
    retry = shred_expired(keyring, now=NOW, keep="P5Y", run_id="hk_real", dry_run=False)
    assert (retry.due, retry.destroyed) == ((), ("2019", "2020"))
    assert keyring.key("2021") and keyring.key("2026")
