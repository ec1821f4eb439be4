"""The one classification of database errors: transient or terminal, and nothing personal in the text."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import (
    DatabaseError,
    DataError,
    DBAPIError,
    IntegrityError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

from retention.adapters.database import DatabaseAdapter
from retention.dberrors import classify, db_errors
from retention.errors import TerminalError, TransientError

PERSONAL = "jens.hansen@example.dk"
STATEMENT = "DELETE FROM customers WHERE email = %(email)s"
PARAMS = {"email": PERSONAL}


class FakeDriverError(Exception):
    """A driver exception as psycopg or sqlite3 raise it: a message with data, and a code attribute."""

    def __init__(self, *, sqlstate: str | None = None, sqlite_errorname: str | None = None) -> None:
        super().__init__(f"duplicate key value violates unique constraint: Key (email)=({PERSONAL})")
        if sqlstate is not None:
            self.sqlstate = sqlstate
        if sqlite_errorname is not None:
            self.sqlite_errorname = sqlite_errorname


def wrapped(
    cls: type[DBAPIError],
    *,
    sqlstate: str | None = None,
    sqlite_errorname: str | None = None,
    invalidated: bool = False,
) -> DBAPIError:
    orig = FakeDriverError(sqlstate=sqlstate, sqlite_errorname=sqlite_errorname)
    return cls(STATEMENT, PARAMS, orig, connection_invalidated=invalidated)


TRANSIENT = [
    pytest.param(wrapped(ProgrammingError, invalidated=True), id="connection invalidated"),
    pytest.param(wrapped(DatabaseError, sqlstate="08006"), id="08006 connection failure"),
    pytest.param(wrapped(DatabaseError, sqlstate="08001"), id="08001 cannot establish"),
    pytest.param(wrapped(InternalError, sqlstate="40001"), id="40001 serialization failure"),
    pytest.param(wrapped(InternalError, sqlstate="40P01"), id="40P01 deadlock"),
    pytest.param(wrapped(DatabaseError, sqlstate="55P03"), id="55P03 lock not available"),
    pytest.param(wrapped(DatabaseError, sqlstate="57014"), id="57014 query canceled"),
    pytest.param(wrapped(DatabaseError, sqlstate="57P01"), id="57P01 admin shutdown"),
    pytest.param(wrapped(DatabaseError, sqlstate="57P02"), id="57P02 crash shutdown"),
    pytest.param(wrapped(DatabaseError, sqlstate="57P03"), id="57P03 cannot connect now"),
    pytest.param(wrapped(OperationalError, sqlstate="53300"), id="other operational (PostgreSQL)"),
    pytest.param(wrapped(OperationalError), id="operational without a code"),
    pytest.param(wrapped(OperationalError, sqlite_errorname="SQLITE_BUSY"), id="SQLITE_BUSY"),
    pytest.param(wrapped(OperationalError, sqlite_errorname="SQLITE_LOCKED"), id="SQLITE_LOCKED"),
    pytest.param(wrapped(OperationalError, sqlite_errorname="SQLITE_IOERR"), id="SQLITE_IOERR"),
    pytest.param(
        wrapped(OperationalError, sqlite_errorname="SQLITE_ERROR", invalidated=True),
        id="SQLITE_ERROR on a lost connection",
    ),
]

TERMINAL = [
    pytest.param(wrapped(OperationalError, sqlite_errorname="SQLITE_ERROR"), id="SQLITE_ERROR"),
    pytest.param(wrapped(IntegrityError, sqlstate="23503"), id="23503 foreign key"),
    pytest.param(wrapped(IntegrityError, sqlstate="23505"), id="23505 unique"),
    pytest.param(wrapped(ProgrammingError, sqlstate="42P01"), id="42P01 undefined table"),
    pytest.param(wrapped(ProgrammingError, sqlstate="P0001"), id="P0001 trigger RAISE"),
    pytest.param(wrapped(DataError, sqlstate="22003"), id="22003 out of range"),
    pytest.param(wrapped(InternalError, sqlstate="XX000"), id="XX000 internal"),
    pytest.param(wrapped(NotSupportedError, sqlstate="0A000"), id="0A000 not supported"),
    pytest.param(wrapped(DatabaseError), id="database error without a code"),
    pytest.param(wrapped(IntegrityError, sqlite_errorname="SQLITE_CONSTRAINT_FOREIGNKEY"), id="SQLite FK"),
]


@pytest.mark.parametrize("exc", TRANSIENT)
def test_transient_conditions(exc: DBAPIError) -> None:
    error = classify(exc, "ledger append")
    assert type(error) is TransientError
    assert not error.terminal
    assert str(error).startswith("ledger append: database unavailable (FakeDriverError")


@pytest.mark.parametrize("exc", TERMINAL)
def test_terminal_conditions(exc: DBAPIError) -> None:
    error = classify(exc, "ledger append")
    assert type(error) is TerminalError
    assert error.terminal
    assert str(error).startswith("ledger append: database refused the statement (FakeDriverError")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (wrapped(IntegrityError, sqlstate="23503"), "refused the statement (FakeDriverError, 23503)"),
        (
            wrapped(OperationalError, sqlite_errorname="SQLITE_LOCKED"),
            "unavailable (FakeDriverError, SQLITE_LOCKED)",
        ),
        (wrapped(OperationalError), "unavailable (FakeDriverError)"),
    ],
)
def test_the_text_names_the_work_the_driver_class_and_the_code(exc: DBAPIError, expected: str) -> None:
    assert str(classify(exc, "holds read")) == f"holds read: database {expected}"


@pytest.mark.parametrize("exc", [*TRANSIENT, *TERMINAL])
def test_no_driver_message_statement_or_parameter_reaches_the_text(exc: DBAPIError) -> None:
    assert PERSONAL in str(exc)  # SQLAlchemy's own text does carry them
    text = str(classify(exc, "ledger append"))
    assert PERSONAL not in text
    assert "duplicate key" not in text
    assert "customers" not in text


@pytest.mark.parametrize("code", [f"23505 {PERSONAL}", "<b>x</b>", "40001\n", "", "a" * 41])
def test_a_code_that_is_not_a_code_is_left_out(code: str) -> None:
    text = str(classify(wrapped(IntegrityError, sqlstate=code), "ledger append"))
    assert text == "ledger append: database refused the statement (FakeDriverError)"


def test_db_errors_raises_the_classified_error_without_chaining() -> None:
    original = wrapped(OperationalError, sqlstate="40001")
    with pytest.raises(TransientError) as raised, db_errors("ledger append"):
        raise original
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert str(raised.value) == "ledger append: database unavailable (FakeDriverError, 40001)"


def test_db_errors_lets_other_exceptions_through() -> None:
    refused = TerminalError("ledger is not initialised")
    with pytest.raises(TerminalError) as raised, db_errors("ledger append"):
        raise refused
    assert raised.value is refused
    with pytest.raises(KeyError), db_errors("ledger append"):
        raise KeyError("x")


# --- real drivers -----------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", connect_args={"timeout": 0})
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)"))
    yield engine
    engine.dispose()


def test_a_missing_sqlite_table_is_terminal(engine: Engine) -> None:
    with pytest.raises(TerminalError) as raised, db_errors("ledger read"), engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM nowhere WHERE email = :email"), {"email": PERSONAL})
    assert str(raised.value) == "ledger read: database refused the statement (OperationalError, SQLITE_ERROR)"


def test_a_locked_sqlite_database_is_transient(engine: Engine, tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientError) as raised, db_errors("ledger append"), engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO customers (email) VALUES (:email)"), {"email": PERSONAL})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(raised.value).startswith("ledger append: database unavailable (OperationalError, SQLITE_BUSY")
    assert PERSONAL not in str(raised.value)


def test_the_database_adapter_classifies_the_same_way(engine: Engine) -> None:
    adapter = DatabaseAdapter(engine)
    with pytest.raises(TerminalError) as refused:
        adapter._run(lambda conn: conn.execute(sa.text("SELECT * FROM nowhere")))
    expected = "database adapter: database refused the statement (OperationalError, SQLITE_ERROR)"
    assert str(refused.value) == expected
    assert adapter.statements == 0
