"""The deadline watch (issue #12) on real PostgreSQL and on SQLite, over the reference world's tables.

Items are placed at the edges of the 10-day notice and the one-month answer (with and without
an extension); the watch runs at chosen moments and must report exactly these counts and keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, event

from harness.world_schema import metadata as world
from retention.deadlines import DeadlineRule
from retention.errors import ClockError, TerminalError, UnknownLocationError
from retention.watch import KEYS_CAP, DeadlineBreach, check_deadlines, open_items_query

CPH = ZoneInfo("Europe/Copenhagen")
NOTICE = DeadlineRule(kind="notice", within="P10D", received="received_at", done="customer_notified_at")
ANSWER = DeadlineRule.model_validate(
    {
        "kind": "answer",
        "within": "P1M",
        "received": "received_at",
        "done": "completed_at",
        "extension": {"at": "extended_at", "reason": "extension_reason", "by": "P2M"},
    }
)
TABLES = [world.tables[name] for name in ("customers", "third_party_data", "privacy_requests")]


def cph(*args: int) -> datetime:
    return datetime(*args, tzinfo=CPH)  # type: ignore[misc]


def stored(instant: datetime | None) -> datetime | None:
    """As the harness stores a time: UTC (SQLite keeps the wall clock it is given, so give it UTC)."""
    return None if instant is None else instant.astimezone(UTC)


EXTENSION = {"extended_at": sa.DateTime(timezone=True), "extension_reason": sa.Text()}
"""The Art. 12(3) extension columns of privacy_requests, added here while the world's schema lacks them."""


def world_tables(engine: Engine) -> Engine:
    """The world's customers, third_party_data and privacy_requests tables, with one customer."""
    world.create_all(engine, tables=TABLES)
    at = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for name, type_ in EXTENSION.items():
            if name not in world.tables["privacy_requests"].c:
                ddl = f"ALTER TABLE privacy_requests ADD COLUMN {name} {type_.compile(engine.dialect)}"
                conn.execute(sa.text(ddl))
        conn.execute(
            world.tables["customers"].insert(),
            [{"id": 1, "customer_no": "K-1", "name": "Kunde", "address": "Vej 1",
              "created_at": at, "last_activity_at": at}],
        )  # fmt: skip
    return engine


@pytest.fixture
def db(empty_db: Engine) -> Engine:
    """``world_tables`` on PostgreSQL and on SQLite."""
    return world_tables(empty_db)


def third_party(engine: Engine, rows: list[tuple[int, datetime, datetime | None]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            world.tables["third_party_data"].insert(),
            [{"id": i, "customer_id": 1, "source": "Leverandør A/S", "description": "adresse",
              "received_at": stored(received), "customer_notified_at": stored(notified)}
             for i, received, notified in rows],
        )  # fmt: skip


def requests(
    engine: Engine, rows: list[tuple[int, datetime, datetime | None, datetime | None, str | None]]
) -> None:
    table = sa.Table("privacy_requests", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": i, "customer_id": 1, "request_ref": f"PR-{i}", "kind": "access",
              "received_at": stored(received), "completed_at": stored(completed),
              "extended_at": stored(extended), "extension_reason": reason}
             for i, received, completed, extended, reason in rows],
        )  # fmt: skip


# the 10-day notice

NOTICE_ROWS = [
    (1, cph(2025, 9, 1, 14, 0), None),  # day 10 = Thursday 11 September
    (2, cph(2025, 9, 1, 14, 0), cph(2025, 9, 3, 10, 0)),  # notified: not watched
    (3, cph(2025, 9, 3, 9, 0), None),  # day 10 = Saturday 13th -> Monday 15th
    (4, cph(2025, 8, 20, 23, 30), None),  # day 10 = Saturday 30 August -> Monday 1 September
    (5, cph(2025, 9, 5, 0, 5), None),  # day 10 = Monday 15th
]


@pytest.mark.parametrize(
    ("now", "overdue", "due_soon"),
    [
        (cph(2025, 9, 7, 12, 0), [4], []),  # item 1's day 6
        (cph(2025, 9, 8, 0, 0), [4], [1]),  # its day 7: three days left
        (cph(2025, 9, 11, 23, 59, 59), [4], [1]),  # its day 10, the last second
        (cph(2025, 9, 12, 0, 0), [4, 1], [3, 5]),  # its day 11
        (cph(2025, 9, 15, 23, 59), [4, 1], [3, 5]),
        (cph(2025, 9, 16, 0, 0), [4, 1, 3, 5], []),
    ],
)
def test_notice_at_the_edges(db: Engine, now: datetime, overdue: list[int], due_soon: list[int]) -> None:
    third_party(db, NOTICE_ROWS)
    report = check_deadlines(db, "third_party_data", "id", NOTICE, now, naive_tz=UTC)
    assert (report.open, report.overdue, report.due_soon, report.unclear) == (
        4,
        len(overdue),
        len(due_soon),
        0,
    )
    assert list(report.overdue_keys) == overdue
    assert list(report.due_soon_keys) == due_soon
    assert report.earliest_deadline == cph(2025, 9, 2, 0, 0)
    assert report.needs_attention == bool(overdue)
    assert (report.extended, report.extensions_ignored, report.done_late) == (0, 0, None)


# the one-month answer, with the extension

ANSWER_ROWS = [
    (10, cph(2025, 1, 31, 10, 0), None, None, None),  # ends with 28 February
    (11, cph(2025, 1, 31, 10, 0), None, cph(2025, 2, 28, 23, 59), "Mange samtidige anmodninger"),  # 30 April
    (12, cph(2025, 1, 31, 10, 0), None, cph(2025, 3, 1, 0, 0), "For sent"),  # too late: 28 February
    (13, cph(2025, 1, 31, 10, 0), None, cph(2025, 2, 10, 9, 0), "  \t "),  # no reason: 28 February
    (14, cph(2025, 3, 31, 16, 0), None, None, None),  # ends with 30 April
    (15, cph(2025, 1, 31, 10, 0), cph(2025, 3, 5, 12, 0), None, None),  # done, late
    (16, cph(2025, 1, 20, 10, 0), cph(2025, 2, 10, 12, 0), None, None),  # done in time
]


@pytest.mark.parametrize(
    ("now", "overdue", "due_soon"),
    [
        (cph(2025, 2, 24, 12, 0), [], []),
        (cph(2025, 2, 28, 23, 59, 59), [], [10, 12, 13]),
        (cph(2025, 3, 1, 0, 0), [10, 12, 13], []),
        (cph(2025, 4, 27, 0, 0), [10, 12, 13], [11, 14]),
        (cph(2025, 5, 1, 0, 0), [10, 12, 13, 11, 14], []),
    ],
)
def test_answer_at_month_end_with_extensions(
    db: Engine, now: datetime, overdue: list[int], due_soon: list[int]
) -> None:
    requests(db, ANSWER_ROWS)
    report = check_deadlines(db, "privacy_requests", "id", ANSWER, now, naive_tz=UTC)
    assert (report.open, report.overdue, report.due_soon, report.unclear) == (
        5,
        len(overdue),
        len(due_soon),
        0,
    )
    assert (list(report.overdue_keys), list(report.due_soon_keys)) == (overdue, due_soon)
    assert (report.extended, report.extensions_ignored) == (1, 2)
    assert report.earliest_deadline == cph(2025, 3, 1, 0, 0)


@pytest.mark.parametrize(
    ("since", "late"), [(cph(2025, 3, 1, 0, 0), 1), (cph(2025, 1, 1, 0, 0), 1), (cph(2025, 3, 6, 0, 0), 0)]
)
def test_done_late_counts_the_items_done_since(db: Engine, since: datetime, late: int) -> None:
    requests(db, ANSWER_ROWS)
    report = check_deadlines(
        db, "privacy_requests", "id", ANSWER, cph(2025, 3, 10), naive_tz=UTC, done_since=since
    )
    assert (report.done_late, report.done_since) == (late, since)


def test_summary_is_json_and_the_breach_names_counts_only(db: Engine) -> None:
    requests(db, ANSWER_ROWS)
    report = check_deadlines(db, "privacy_requests", "id", ANSWER, cph(2025, 3, 1, 0, 0), naive_tz=UTC)
    summary = json.loads(json.dumps(report.summary()))
    assert summary["overdue_keys"] == [10, 12, 13]
    assert summary["within_time"] == 2 and summary["needs_attention"] is True
    assert summary["earliest_deadline"] == "2025-03-01T00:00:00+01:00"
    with pytest.raises(DeadlineBreach, match=r"privacy_requests \(answer\): 5 open, 3 overdue") as e:
        report.raise_for_attention()
    assert "PR-" not in str(e.value) and "Mange" not in str(e.value)
    assert e.value.terminal


# items that cannot be judged

odd = sa.MetaData()
odd_items = sa.Table(
    "odd_items",
    odd,
    sa.Column("ref", sa.Text, primary_key=True),
    sa.Column("got", sa.DateTime(timezone=False), nullable=True),
    sa.Column("answered", sa.DateTime(timezone=True), nullable=True),
    sa.Column("secret", sa.Text),
)
ODD = DeadlineRule(kind="notice", within="P10D", received="got", done="answered")


def test_null_and_naive_received_are_unclear_not_a_crash(empty_db: Engine) -> None:
    odd.create_all(empty_db)
    with empty_db.begin() as conn:
        conn.execute(
            odd_items.insert(),
            [{"ref": "b", "got": None, "answered": None, "secret": "x"},
             {"ref": "a", "got": datetime(2025, 9, 1, 12), "answered": None, "secret": "x"},
             {"ref": "c", "got": datetime(2025, 9, 1, 12), "answered": datetime(2025, 9, 2, tzinfo=UTC),
              "secret": "x"}],
        )  # fmt: skip
    now = cph(2025, 9, 20)
    report = check_deadlines(empty_db, "odd_items", "ref", ODD, now)
    assert (report.open, report.unclear, report.overdue, report.unclear_keys) == (2, 2, 0, ("a", "b"))
    assert report.needs_attention and report.earliest_deadline is None
    judged = check_deadlines(empty_db, "odd_items", "ref", ODD, now, naive_tz=CPH)
    assert (judged.unclear, judged.overdue, judged.overdue_keys) == (1, 1, ("a",))


def test_sqlite_text_times_unreadable_or_with_an_offset(tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'odd.db'}")
    odd.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO odd_items (ref, got, secret) VALUES ('x', 'not a time', ''), "
                    "('y', '2025-09-01T23:30:00+02:00', ''), ('z', '2025-09-01', '')"),
        )  # fmt: skip
    report = check_deadlines(engine, "odd_items", "ref", ODD, cph(2025, 9, 12, 0, 0))
    # y has an offset: received on 1 September, overdue from the 12th; z is a date: its day is all that counts
    assert (report.unclear_keys, report.overdue_keys) == (("x",), ("y", "z"))
    engine.dispose()


# errors


def test_missing_columns_and_tables_are_named(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE privacy_requests DROP COLUMN extension_reason"))
    with pytest.raises(UnknownLocationError) as e:
        check_deadlines(db, "privacy_requests", "id", ANSWER, cph(2025, 3, 1))
    assert str(e.value) == (
        "deadline watch: table 'privacy_requests' has no column 'extension_reason' "
        "(named by deadline.extension.reason)"
    )
    with pytest.raises(UnknownLocationError, match="table 'third_party_data' has no column 'completed_at'"):
        check_deadlines(
            db, "third_party_data", "id", ANSWER.model_copy(update={"extension": None}), cph(2025, 3, 1)
        )
    with pytest.raises(UnknownLocationError, match="table 'requests' does not exist"):
        check_deadlines(db, "requests", "id", ANSWER, cph(2025, 3, 1))
    with pytest.raises(UnknownLocationError, match=r"no column 'rid' \(named by records.key\)"):
        check_deadlines(db, "third_party_data", "rid", NOTICE, cph(2025, 3, 1))


def test_bad_names_and_a_naive_now_are_refused(db: Engine) -> None:
    with pytest.raises(TerminalError, match="table name must be an identifier"):
        check_deadlines(db, "privacy_requests; drop", "id", ANSWER, cph(2025, 3, 1))
    with pytest.raises(TerminalError, match="the key 'received_at' is also a column"):
        check_deadlines(db, "privacy_requests", "received_at", ANSWER, cph(2025, 3, 1))
    with pytest.raises(ClockError, match="timezone-aware"):
        check_deadlines(db, "privacy_requests", "id", ANSWER, datetime(2025, 3, 1))


# cost follows the open items


@pytest.fixture
def statements(fresh_db: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(fresh_db, "before_cursor_execute", record)
    yield seen
    event.remove(fresh_db, "before_cursor_execute", record)


def test_only_open_items_are_read_and_only_the_rule_columns(fresh_db: Engine, statements: list[str]) -> None:
    db = world_tables(fresh_db)
    requests(db, ANSWER_ROWS)
    now = cph(2025, 4, 27, 0, 0)
    before = check_deadlines(db, "privacy_requests", "id", ANSWER, now, done_since=cph(2025, 1, 1)).summary()
    with db.begin() as conn:  # 20,000 answered requests, received long ago: none may change the report
        conn.execute(
            sa.text(
                "INSERT INTO privacy_requests "
                "(id, customer_id, request_ref, kind, received_at, completed_at) "
                "SELECT 1000 + g, 1, 'PR-' || (1000 + g), 'access', "
                "timestamptz '2020-01-01 10:00+01' + g * interval '1 minute', "
                "timestamptz '2020-01-02 10:00+01' + g * interval '1 minute' FROM generate_series(1, 20000) g"
            )
        )
        conn.execute(sa.text("ANALYZE privacy_requests"))
    statements.clear()
    after = check_deadlines(db, "privacy_requests", "id", ANSWER, now, done_since=cph(2025, 1, 1)).summary()
    assert after == before
    assert (after["open"], after["done_late"]) == (5, 1)

    reads = [s for s in statements if "FROM privacy_requests" in s and "pg_" not in s]
    assert len(reads) == 2  # the open items, and the items done since done_since
    open_read = reads[0]
    assert "WHERE privacy_requests.completed_at IS NULL" in open_read
    assert "completed_at >=" in reads[1]
    # only the key, the times and whether the reason is blank (computed in SQL) are selected
    assert open_read.startswith(
        "SELECT privacy_requests.id AS key, privacy_requests.received_at AS received, "
        "privacy_requests.extended_at AS extended_at, "
        "CASE WHEN (length(trim(CAST(privacy_requests.extension_reason AS TEXT), "
    )
    assert open_read.split("FROM privacy_requests")[0].rstrip().endswith(" END AS has_reason")
    for personal in ("request_ref", "kind", "customer_id"):
        assert all(personal not in s for s in reads)

    t = sa.Table("privacy_requests", sa.MetaData(), autoload_with=db)
    query = open_items_query(t, "id", ANSWER)
    with db.connect() as conn:
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                sa.text(f"EXPLAIN {query.compile(db, compile_kwargs={'literal_binds': True})}")
            )
        )
    # the plan uses the index on completed_at (NULLs are in a btree) instead of reading 20,005 rows
    assert "ix_privacy_requests_completed_at" in plan
    assert "Seq Scan" not in plan


def test_keys_are_capped_most_overdue_first(fresh_db: Engine) -> None:
    db = world_tables(fresh_db)
    n = 3 * KEYS_CAP
    # key i received i days before 1 June 2025: higher keys are more overdue
    rows = [(i, cph(2025, 6, 1, 9, 0) - timedelta(days=i), None) for i in range(1, n + 1)]
    third_party(db, rows)
    report = check_deadlines(db, "third_party_data", "id", NOTICE, cph(2025, 6, 1, 12, 0))
    expected = sorted(
        (NOTICE.deadline(received).last_day, i)
        for i, received, _ in rows
        if NOTICE.deadline(received).at <= cph(2025, 6, 1, 12, 0)
    )
    assert report.overdue == len(expected) > KEYS_CAP
    assert list(report.overdue_keys) == [i for _, i in expected[:KEYS_CAP]]
    assert report.open == n
