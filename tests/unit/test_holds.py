"""The legal-hold registry on SQLite files: what is in force when, for which category."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.adapters.base import HoldSet
from retention.errors import TerminalError, UnsafeTargetError
from retention.holds import HoldRegistry

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'holds.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def holds(engine: Engine) -> HoldRegistry:
    registry = HoldRegistry(engine)
    registry.ensure_schema()
    return registry


def test_a_subject_hold_is_in_force_until_released(holds: HoldRegistry) -> None:
    hold = holds.add(reason="Retssag BS-1234/2026", subject="17", now=NOW)
    assert holds.current("invoices", NOW + DAY) == HoldSet(subjects=frozenset({"17"}))
    holds.release(hold, now=NOW + 2 * DAY)
    assert holds.current("invoices", NOW + 3 * DAY) == HoldSet()
    # evaluated at an instant before the release, the hold was still in force
    assert holds.current("invoices", NOW + DAY).subject_held("17")


def test_release_keeps_the_row_and_is_idempotent(holds: HoldRegistry) -> None:
    hold = holds.add(reason="audit", subject="17", now=NOW)
    holds.release(hold, now=NOW + DAY)
    holds.release(hold, now=NOW + 5 * DAY)
    [row] = holds.list(include_inactive=True)
    assert (row["id"], row["released_at"]) == (hold, NOW + DAY)
    assert holds.list(now=NOW + 2 * DAY) == []


def test_releasing_an_unknown_hold_fails(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError, match="no legal hold"):
        holds.release(42, now=NOW)


def test_until_in_the_future_holds_and_in_the_past_does_not(holds: HoldRegistry) -> None:
    holds.add(reason="tvist", subject="short", until=NOW + DAY, now=NOW)
    holds.add(reason="tvist", subject="long", until=NOW + 30 * DAY, now=NOW)
    assert holds.current("documents", NOW + DAY / 2).subjects == {"short", "long"}
    assert holds.current("documents", NOW + DAY).subjects == {"long"}  # until is exclusive
    assert holds.current("documents", NOW + 31 * DAY).subjects == frozenset()


def test_until_must_lie_after_creation(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError, match="until"):
        holds.add(reason="tvist", subject="17", until=NOW, now=NOW)
    with pytest.raises(TerminalError, match="until"):
        holds.add(reason="tvist", subject="17", until=NOW - DAY, now=NOW)


def test_timestamps_are_compared_as_instants_whatever_their_offset(holds: HoldRegistry) -> None:
    copenhagen_summer = timezone(timedelta(hours=2))
    until = datetime(2026, 6, 20, 14, 0, tzinfo=copenhagen_summer)  # 12:00 UTC
    holds.add(reason="tvist", subject="17", until=until, now=NOW)
    assert holds.current("x", datetime(2026, 6, 20, 11, 59, tzinfo=UTC)).subject_held("17")
    assert not holds.current("x", datetime(2026, 6, 20, 12, 0, tzinfo=UTC)).subject_held("17")
    [row] = holds.list(now=NOW)
    assert row["until"] == until and row["until"].tzinfo == UTC
    assert row["created_at"] == NOW


def test_naive_timestamps_are_refused(holds: HoldRegistry) -> None:
    naive = datetime(2026, 6, 15, 12, 0)
    with pytest.raises(TerminalError):
        holds.add(reason="tvist", subject="17", now=naive)
    with pytest.raises(TerminalError):
        holds.add(reason="tvist", subject="17", until=naive, now=NOW)
    with pytest.raises(TerminalError):
        holds.current("x", naive)


def test_category_holds_apply_to_their_category_and_global_holds_to_all(holds: HoldRegistry) -> None:
    holds.add(reason="revision", subject="inv", category="invoices", now=NOW)
    holds.add(reason="retssag", subject="all", now=NOW)
    holds.add(reason="klage", subject="doc", category="documents", now=NOW)
    holds.add(reason="klage", prefix="documents/17/", category="documents", now=NOW)
    assert holds.current("invoices", NOW) == HoldSet(subjects=frozenset({"inv", "all"}))
    assert holds.current("documents", NOW) == HoldSet(
        subjects=frozenset({"doc", "all"}), prefixes=("documents/17/",)
    )
    assert holds.current("emails", NOW) == HoldSet(subjects=frozenset({"all"}))


def test_a_prefix_hold_covers_everything_under_it(holds: HoldRegistry) -> None:
    holds.add(reason="klage", prefix="documents/17/", now=NOW)
    held = holds.current("documents", NOW)
    assert held.path_held("documents/17/contract.pdf")
    assert held.path_held("documents/17/2019/letter.pdf")
    assert not held.path_held("documents/171/contract.pdf")
    assert not held.subject_held("17")


@pytest.mark.parametrize(
    "prefix", ["", "/", "/etc/", "../documents/", "documents/../x/", "a//b/", "a\\b/", "a/\x00/"]
)
def test_unsafe_prefixes_are_refused(holds: HoldRegistry, prefix: str) -> None:
    with pytest.raises(UnsafeTargetError):
        holds.add(reason="klage", prefix=prefix, now=NOW)
    assert holds.list(include_inactive=True) == []


@pytest.mark.parametrize(
    ("subject", "prefix"),
    [(None, None), ("17", "documents/17/"), ("", None), (" 17", None), ("17\n", None)],
)
def test_a_hold_covers_exactly_one_clean_subject_or_prefix(
    holds: HoldRegistry, subject: str | None, prefix: str | None
) -> None:
    with pytest.raises(TerminalError):
        holds.add(reason="klage", subject=subject, prefix=prefix, now=NOW)


@pytest.mark.parametrize("reason", ["", "   ", "ring 12 34 56 78", "jens@example.dk"])
def test_a_hold_needs_a_reason_without_contact_data(holds: HoldRegistry, reason: str) -> None:
    with pytest.raises(TerminalError) as refused:
        holds.add(reason=reason, subject="17", now=NOW)
    assert reason.strip() == "" or reason not in str(refused.value)


@pytest.mark.parametrize("category", ["", " invoices"])
def test_a_category_must_be_a_clean_name(holds: HoldRegistry, category: str) -> None:
    with pytest.raises(TerminalError):
        holds.add(reason="klage", subject="17", category=category, now=NOW)
    with pytest.raises(TerminalError):
        holds.current(category, NOW)


def test_holds_in_force_are_read_for_one_category(holds: HoldRegistry) -> None:
    with pytest.raises(TerminalError):
        holds.current(None, NOW)  # type: ignore[arg-type]


def test_reports_name_subjects_only_when_asked(holds: HoldRegistry) -> None:
    first = holds.add(reason="retssag", subject="customer-17", category="invoices", until=NOW + DAY, now=NOW)
    second = holds.add(reason="klage", prefix="documents/17/", now=NOW)
    report = holds.list(now=NOW)
    assert [(r["id"], r["kind"], r["category"], r["reason"]) for r in report] == [
        (first, "subject", "invoices", "retssag"),
        (second, "prefix", None, "klage"),
    ]
    assert "customer-17" not in repr(report) and "documents/17/" not in repr(report)
    detailed = holds.list(now=NOW, include_subjects=True)
    assert [(r["subject"], r["prefix"]) for r in detailed] == [("customer-17", None), (None, "documents/17/")]
    assert [r["id"] for r in holds.list(now=NOW + 2 * DAY)] == [second]
    assert [r["id"] for r in holds.list(now=NOW + 2 * DAY, include_inactive=True)] == [first, second]


def test_ensure_schema_is_idempotent_and_the_table_name_is_configurable(engine: Engine) -> None:
    registry = HoldRegistry(engine, table_name="holds_demo")
    registry.ensure_schema()
    hold = registry.add(reason="klage", subject="17", now=NOW)
    registry.ensure_schema()
    assert [r["id"] for r in registry.list(now=NOW)] == [hold]
    assert sa.inspect(engine).get_table_names() == ["holds_demo"]
    with pytest.raises(TerminalError):
        HoldRegistry(engine, table_name="Holds-Demo")


def test_the_database_itself_refuses_a_row_with_both_subject_and_prefix(
    holds: HoldRegistry, engine: Engine
) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_legal_holds (subject, prefix, reason, created_at) "
                "VALUES ('17', 'documents/', 'x', '2026-06-15 12:00:00.000000')"
            )
        )
