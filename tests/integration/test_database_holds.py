"""How the database adapter writes legal holds and keys into SQL, on PostgreSQL and on SQLite.

Held subjects are written into the statement as constants (not one bound parameter each),
a subject-mode selection carries only the selected subject's hold, and located keys come
back in key order; none of this may change which rows are erased or kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.adapters.base import HoldSet, VerifyOutcome
from retention.adapters.database import DatabaseAdapter, RowSelection, TableTarget
from retention.clock import Cutoff

NOW = datetime(2026, 6, 15, tzinfo=UTC)
CUTOFF = Cutoff(
    instant=NOW - timedelta(days=30), inclusive=True, date_bound=(NOW - timedelta(days=30)).date()
)
ROWS = 2000

meta = sa.MetaData()
items = sa.Table(
    "items",
    meta,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("owner", sa.BigInteger, index=True),
    sa.Column("tag", sa.Text, index=True),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
)
TAGS = ("O'Brien", "plain", "x') OR ('1'='1", "æøå")


def populate(engine: Engine) -> None:
    meta.create_all(engine)
    rows = [
        {
            "id": i,
            "owner": i % 100,
            "tag": TAGS[i % len(TAGS)],
            # every third row is recent (not due)
            "seen_at": NOW - timedelta(days=1 if i % 3 == 0 else 60),
        }
        for i in range(1, ROWS + 1)
    ]
    with engine.begin() as c:
        c.execute(items.insert(), rows)


@pytest.fixture
def db(empty_db: Engine) -> Engine:
    populate(empty_db)
    return empty_db


def selection(subject_column: str = "owner", **kw: Any) -> RowSelection:
    return RowSelection(
        table="items", key="id", subject_column=subject_column, anchor="seen_at", cutoff=CUTOFF, **kw
    )


def remaining_ids(engine: Engine) -> set[int]:
    with engine.connect() as c:
        return set(c.execute(sa.select(items.c.id)).scalars())


class Parameters:
    """The largest number of bound parameters any statement on ``engine`` carried."""

    def __init__(self, engine: Engine) -> None:
        self.most = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if isinstance(params, dict):
            self.most = max(self.most, len(params))
        elif isinstance(params, list | tuple) and not many:
            self.most = max(self.most, len(params))


def test_thousands_of_held_subjects_are_constants_and_keep_exactly_their_rows(db: Engine) -> None:
    # 3,000 holds: owners 0..49 exist in the table, the rest do not; some are not even numbers.
    held = {str(n) for n in range(0, 50)} | {str(n) for n in range(1000, 3950)} | {"not-a-number", " 7 "}
    holds = HoldSet(subjects=frozenset(held))
    target = TableTarget("c", selection(), table="items", action="delete", holds=lambda: holds)
    adapter = DatabaseAdapter(db, batch_size=97)
    adapter.table("items")  # reflected before counting: the catalogue queries are not ours
    seen = Parameters(db)

    located: list[int] = []
    erased = 0
    for batch in adapter.locate(target):
        keys = [int(k) for k in batch.keys]
        assert keys == sorted(keys)
        located += keys
        erased += adapter.erase(target, batch).erased
    check = adapter.verify(target)

    due_not_held = {i for i in range(1, ROWS + 1) if i % 3 and i % 100 >= 50}
    assert located == sorted(due_not_held)
    assert erased == len(due_not_held) and check.remaining == 0
    assert check.kept == sum(1 for i in range(1, ROWS + 1) if i % 3 and i % 100 < 50)
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - due_not_held
    assert seen.most < 10


def test_held_subjects_leave_the_others_erased_in_key_order(db: Engine) -> None:
    held = frozenset(str(n) for n in range(0, 100, 2)) | frozenset({"", "-1", "x"})
    target = TableTarget(
        "c", selection(), table="items", action="delete", holds=lambda: HoldSet(subjects=held)
    )
    adapter = DatabaseAdapter(db, batch_size=50)
    adapter.table("items")
    seen = Parameters(db)

    located: list[int] = []
    for batch in adapter.locate(target):
        located += [int(k) for k in batch.keys]
        adapter.erase(target, batch)

    due_not_held = [i for i in range(1, ROWS + 1) if i % 3 and (i % 100) % 2]
    assert located == due_not_held
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - set(due_not_held)
    assert adapter.verify(target).remaining == 0
    assert seen.most < 10


def test_text_subjects_with_quotes_are_held_safely(db: Engine) -> None:
    held = frozenset({"O'Brien", "x') OR ('1'='1"})
    target = TableTarget(
        "c", selection("tag"), table="items", action="delete", holds=lambda: HoldSet(subjects=held)
    )
    adapter = DatabaseAdapter(db, batch_size=300)

    erased = sum(adapter.erase(target, batch).erased for batch in adapter.locate(target))

    expected = {i for i in range(1, ROWS + 1) if i % 3 and TAGS[i % len(TAGS)] not in held}
    assert erased == len(expected)
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - expected
    check = adapter.verify(target)
    assert check.remaining == 0
    assert check.kept == sum(1 for i in range(1, ROWS + 1) if i % 3 and TAGS[i % len(TAGS)] in held)


@pytest.mark.parametrize("subject_held", [False, True])
def test_a_subject_selection_carries_only_that_subjects_hold(db: Engine, subject_held: bool) -> None:
    others = frozenset(str(n) for n in range(100, 5000))
    holds = HoldSet(subjects=others | ({"7"} if subject_held else set()))
    target = TableTarget("c", selection(subject="7"), table="items", action="delete", holds=lambda: holds)
    adapter = DatabaseAdapter(db)
    adapter.table("items")
    statements: list[str] = []
    sa.event.listen(db, "before_cursor_execute", lambda *a: statements.append(a[2]))

    erased = sum(adapter.erase(target, batch).erased for batch in adapter.locate(target))
    check = adapter.verify(target)

    owned_due = {i for i in range(1, ROWS + 1) if i % 100 == 7 and i % 3}
    assert erased == (0 if subject_held else len(owned_due))
    assert (check.remaining, check.kept) == (0, len(owned_due) if subject_held else 0)
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - (set() if subject_held else owned_due)
    # No statement spells out the thousands of other held subjects.
    assert max(len(s) for s in statements) < 2000


def test_the_registry_reads_the_same_holds_on_postgresql_and_sqlite(empty_db: Engine) -> None:
    """PostgreSQL reads the holds in force as two arrays; what is in force must not depend on it."""
    from retention.holds import HoldRegistry

    engine = empty_db
    registry = HoldRegistry(engine)
    registry.ensure_schema()
    day = timedelta(days=1)
    assert registry.current("invoices", NOW) == HoldSet()
    registry.add(reason="Retssag A", subject="17", now=NOW - day)
    known = ("invoices", "documents")
    registry.add(reason="Retssag B", subject="18", category="invoices", categories=known, now=NOW - day)
    registry.add(reason="Retssag C", subject="19", category="documents", categories=known, now=NOW - day)
    registry.add(reason="Tilsyn", prefix="12/34", now=NOW - day)
    registry.add(reason="Tilsyn", prefix="56", category="invoices", categories=known, now=NOW - day)
    registry.add(reason="Udløbet", subject="20", until=NOW - day / 2, now=NOW - day)
    registry.release(registry.add(reason="Frigivet", subject="21", now=NOW - day), now=NOW - day / 2)
    assert registry.current("invoices", NOW) == HoldSet(
        subjects=frozenset({"17", "18"}), prefixes=("12/34", "56")
    )
    documents = HoldSet(subjects=frozenset({"17", "19"}), prefixes=("12/34",))
    assert registry.current("documents", NOW) == documents


def test_every_change_to_the_holds_table_is_read_at_the_next_look(empty_db: Engine) -> None:
    """PostgreSQL keeps the holds read last and reads one row while the table has not changed;
    an added, released, edited or deleted hold must still be seen by the very next read."""
    from retention.holds import HoldRegistry

    engine = empty_db
    registry = HoldRegistry(engine)
    registry.ensure_schema()
    day = timedelta(days=1)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    def read() -> frozenset[str]:
        statements.clear()
        return registry.current("invoices", NOW).subjects

    registry.add(reason="Retssag", subject="17", now=NOW - day)
    assert read() == {"17"}
    assert read() == {"17"}
    if engine.dialect.name == "postgresql":
        assert len(statements) == 1, "an unchanged table: only its mark is read"
    eighteen = registry.add(reason="Retssag", subject="18", now=NOW - day)
    assert read() == {"17", "18"}
    registry.add(reason="Andet", subject="30", category="documents", categories=("invoices", "documents"))
    assert read() == {"17", "18"}
    registry.release(eighteen, now=NOW - day / 2)
    assert read() == {"17"}
    with engine.begin() as c:
        c.execute(sa.text("UPDATE retention_legal_holds SET subject = '19' WHERE subject = '17'"))
    assert read() == {"19"}
    with engine.begin() as c:
        c.execute(
            sa.text("UPDATE retention_legal_holds SET released_at = NULL WHERE id = :id"), {"id": eighteen}
        )
    assert read() == {"18", "19"}
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM retention_legal_holds WHERE subject = '19'"))
    assert read() == {"18"}
    assert registry.current("documents", NOW).subjects == {"18", "30"}


# -- issue #10.3: holds validated when added, checked when read, one canonical form --------------


def _insert_hold(engine: Engine, subject: str | None = None, prefix: str | None = None, **values: Any) -> int:
    """A hold written by hand with SQL, past every check of ``HoldRegistry.add``."""
    from retention.holds import HoldRegistry

    HoldRegistry(engine).ensure_schema()
    row = {"subject": subject, "prefix": prefix, "category": None, "reason": "by hand", **values}
    with engine.begin() as c:
        return int(
            c.execute(
                sa.text(
                    "INSERT INTO retention_legal_holds (subject, prefix, category, reason, created_at) "
                    "VALUES (:subject, :prefix, :category, :reason, :created_at) RETURNING id"
                ).bindparams(sa.bindparam("created_at", type_=sa.DateTime(timezone=True))),
                {**row, "created_at": NOW - timedelta(days=1)},
            ).scalar_one()
        )


def _erase_all(adapter: DatabaseAdapter, target: TableTarget) -> int:
    return sum(adapter.erase(target, batch).erased for batch in adapter.locate(target))


@pytest.mark.parametrize("written", ["042", "٤٢"])
def test_the_forms_the_stores_read_differently_are_refused_when_a_hold_is_added(
    db: Engine, written: str
) -> None:
    """The bug: the database read "042" and "٤٢" as customer 42 and kept its rows, while S3 and SFTP
    compare the record's subject as text ("42") and erased its files. Now every store reads a hold as
    written (it names nobody), and such a hold is refused when it is added."""
    from retention.errors import TerminalError
    from retention.holds import HoldRegistry

    as_written = HoldSet(subjects=frozenset({written}))
    adapter = DatabaseAdapter(db)
    target = TableTarget("c", selection(), table="items", action="delete", holds=lambda: as_written)
    assert adapter.verify(target).kept == 0  # the rows: not held, as in the file stores
    assert not as_written.subject_held(str(42))  # the files of the same customer: not held

    registry = HoldRegistry(db)
    registry.ensure_schema()
    with pytest.raises(TerminalError, match="hold subject must be the internal customer id") as refused:
        registry.add(reason="Retssag BS-1234/2026", subject=written, now=NOW)
    assert written not in str(refused.value)
    assert registry.check_stored(["c"], NOW) == 0


def test_a_canonical_hold_keeps_the_customer_in_the_database_and_in_the_file_stores(db: Engine) -> None:
    from retention.adapters.s3 import S3Version, _held
    from retention.adapters.tree import TreeItem, held, subject_of
    from retention.holds import HoldRegistry

    registry = HoldRegistry(db)
    registry.ensure_schema()
    registry.add(reason="Retssag BS-1234/2026", subject="42", now=NOW - timedelta(days=1))
    target = TableTarget(
        "c", selection(), table="items", action="delete", holds=lambda: registry.current("c", NOW)
    )
    adapter = DatabaseAdapter(db, batch_size=500)

    records = {i: {"id": i, "owner": i % 100} for i in range(1, ROWS + 1)}
    erased = _erase_all(adapter, target)

    due = {i for i in records if i % 3}
    owner_42 = {i for i in due if records[i]["owner"] == 42}
    assert erased == len(due - owner_42)
    assert remaining_ids(db) >= owner_42 and adapter.verify(target) == VerifyOutcome(0, len(owner_42))
    holds = registry.current("c", NOW)
    for i in due:
        subject = subject_of(records[i], "owner")  # the record's subject as the file stores read it
        in_files = held(holds, TreeItem(f"{i}.pdf", subject)) or _held(
            S3Version(f"documents/{i}.pdf", "v1", False, frozenset({str(subject)})), holds
        )
        assert in_files == (i in owner_42) == (i in remaining_ids(db))


@pytest.mark.parametrize("stored", ["042", "²", "٤٢", "42 "])
def test_a_bad_stored_subject_fails_before_anything_is_erased(db: Engine, stored: str) -> None:
    """ "²" passes str.isdigit() and then int() raised ValueError deep in the adapter, on every run."""
    from retention.errors import TerminalError
    from retention.holds import HoldRegistry

    registry = HoldRegistry(db)
    registry.ensure_schema()
    registry.add(reason="Retssag A", subject="17", now=NOW - timedelta(days=1))
    bad = _insert_hold(db, subject=stored)
    target = TableTarget(
        "c", selection(), table="items", action="delete", holds=lambda: registry.current("c", NOW)
    )
    adapter = DatabaseAdapter(db)

    with pytest.raises(TerminalError, match=f"^legal hold {bad} is invalid: its subject") as read:
        registry.current("c", NOW)
    with pytest.raises(TerminalError, match=f"^legal hold {bad} is invalid: its subject") as checked:
        registry.check_stored(["c"], NOW)
    with pytest.raises(TerminalError, match=f"legal hold {bad}"):
        _erase_all(adapter, target)
    assert stored.strip() not in str(read.value) + str(checked.value)
    assert remaining_ids(db) == set(range(1, ROWS + 1))


@pytest.mark.parametrize(
    ("hand_written", "problem"),
    [
        ({"subject": "17", "category": "invoice"}, "not one of the policy set's categories"),
        ({"prefix": "/etc/"}, "absolute"),
        ({"prefix": "documents/17/ "}, "whitespace"),
        ({"subject": "17", "reason": ""}, "needs a reason"),
    ],
)
def test_check_stored_refuses_a_hand_written_hold_that_can_never_match(
    empty_db: Engine, hand_written: dict[str, Any], problem: str
) -> None:
    from retention.errors import TerminalError
    from retention.holds import HoldRegistry

    registry = HoldRegistry(empty_db)
    registry.ensure_schema()
    registry.add(reason="Retssag A", subject="17", category="invoices", categories=["invoices"], now=NOW)
    assert registry.check_stored(["invoices", "documents"], NOW) == 1
    bad = _insert_hold(empty_db, **hand_written)
    with pytest.raises(TerminalError, match=problem) as refused:
        registry.check_stored(["invoices", "documents"], NOW)
    assert str(refused.value).startswith(f"legal hold {bad} is invalid")
    registry.release(bad, now=NOW)
    assert registry.check_stored(["invoices", "documents"], NOW + timedelta(seconds=1)) == 1


def test_prepare_fails_the_run_on_an_invalid_hold_before_anything_is_erased(empty_db: Engine) -> None:
    from harness.context import engine_context
    from harness.world_schema import create_schema
    from retention import flow
    from retention.errors import TerminalError
    from retention.holds import HoldRegistry
    from retention.policy import load_policies
    from tests.integration.conftest import POLICY_DIR, PSEUDONYM_KEY

    create_schema(empty_db)
    registry = HoldRegistry(empty_db)
    registry.ensure_schema()
    ctx = engine_context(empty_db, load_policies(POLICY_DIR), now=NOW, pseudonym_key=PSEUDONYM_KEY)
    categories = ctx.policies.ids
    registry.add(reason="Retssag A", subject="17", category=categories[0], categories=categories, now=NOW)
    checked: list[int] = []

    run = flow.prepare(ctx, holds_check=lambda: checked.append(registry.check_stored(categories, NOW)))
    assert checked == [1] and run.categories == tuple(categories)

    bad = _insert_hold(empty_db, subject="17", category="invoice")
    with pytest.raises(TerminalError, match=f"legal hold {bad} is invalid"):
        flow.prepare(ctx, holds_check=lambda: registry.check_stored(categories, NOW))
    assert flow.prepare(ctx).run_id == ctx.run_id  # without a check (run_all), as before


def test_the_airflow_task_checks_the_registry_of_the_ledger_connection(
    empty_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from retention.errors import TerminalError
    from retention.holds import HoldRegistry
    from retention.subject import DEFAULT_SUBJECT
    from retention_airflow import clients

    url = empty_db.url
    if url.get_backend_name() == "sqlite":
        conn: dict[str, Any] = {"conn_type": "sqlite", "host": url.database}
    else:
        conn = {"conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username}
        conn |= {"schema": url.database, "password": url.password}
    monkeypatch.setenv("AIRFLOW_CONN_RETENTION_LEDGER", json.dumps(conn))
    registry = HoldRegistry(empty_db)
    registry.ensure_schema()
    registry.add(reason="Retssag A", prefix="documents/17/", now=NOW - timedelta(days=1))
    assert clients.check_holds(["documents"], NOW, DEFAULT_SUBJECT) == 1
    bad = _insert_hold(empty_db, subject="0042")
    with pytest.raises(TerminalError, match=f"legal hold {bad} is invalid: its subject .* leading zero"):
        clients.check_holds(["documents"], NOW, DEFAULT_SUBJECT)
