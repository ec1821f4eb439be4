"""One classification of database errors into transient (retry) and terminal (a human must look).

Every module that talks to a database (the ledger, the hold registry, the database adapter,
the monitoring page) maps SQLAlchemy's ``DBAPIError`` through ``classify``, first rule that
matches wins:

=====================================================================  =========
Condition                                                              Result
=====================================================================  =========
the connection was invalidated (SQLAlchemy saw a disconnect)           transient
PostgreSQL SQLSTATE class ``08``: connection exception                 transient
SQLSTATE ``40001`` serialization failure, ``40P01`` deadlock detected  transient
SQLSTATE ``55P03`` lock not available (``lock_timeout``, ``NOWAIT``)   transient
SQLSTATE ``57014`` query canceled (``statement_timeout``, a cancel)    transient
SQLSTATE ``57P01`` / ``57P02`` / ``57P03`` admin shutdown, crash
shutdown, cannot connect now                                           transient
SQLite ``SQLITE_ERROR`` (a missing table or a syntax error, which
SQLite reports as an ``OperationalError`` too)                         terminal
any other ``OperationalError`` (SQLite busy, locked, I/O; the
server's operational conditions)                                       transient
anything else: integrity (a foreign key), programming (a missing
table, a trigger's ``RAISE``), data, internal, not supported           terminal
=====================================================================  =========

psycopg already maps the SQLSTATEs above to ``OperationalError``; they are listed so that
they stay transient whichever class a driver gives them.

The error's text names only what was being done, the driver's exception class and the
SQLSTATE or SQLite error name. The driver's message and SQLAlchemy's text carry statement
parameters, which may be personal data (a held subject, a customer's key), so they never
reach the text, and the original exception is not chained (``from None``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, OperationalError

from retention.errors import RetentionError, TerminalError, TransientError

TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})
"""PostgreSQL SQLSTATEs worth retrying whatever exception class the driver maps them to."""

TRANSIENT_SQLSTATE_CLASSES = frozenset({"08"})
"""SQLSTATE classes (the first two characters) worth retrying: connection exceptions."""

_SAFE_CODE = re.compile(r"[0-9A-Z_]{1,40}")


def classify(exc: DBAPIError, what: str) -> RetentionError:
    """The TransientError or TerminalError for ``exc``, raised while doing ``what`` (see the module's table).

    The text is ``what``, then the driver's exception class and its code; never the driver's message.
    """
    if _transient(exc):
        return TransientError(f"{what}: database unavailable ({_describe(exc)})")
    return TerminalError(f"{what}: database refused the statement ({_describe(exc)})")


@contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Raise ``classify(exc, what)`` in place of any ``DBAPIError`` from the block, not chained."""
    try:
        yield
    except DBAPIError as exc:
        raise classify(exc, what) from None


def _transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    sqlstate = _code(exc, "sqlstate") or ""
    if sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES:
        return True
    if _code(exc, "sqlite_errorname") == "SQLITE_ERROR":
        return False
    return isinstance(exc, OperationalError)


def _code(exc: DBAPIError, attribute: str) -> str | None:
    """The driver's error code, only if it has the form of one (it goes into logs)."""
    value = getattr(exc.orig, attribute, None)
    return value if isinstance(value, str) and _SAFE_CODE.fullmatch(value) else None


def _describe(exc: DBAPIError) -> str:
    name = type(exc.orig).__name__
    code = _code(exc, "sqlstate") or _code(exc, "sqlite_errorname")
    return f"{name}, {code}" if code else name
