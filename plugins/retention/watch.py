"""The daily deadline watch: which open items of a table are overdue, due soon, or unclear.

``check_deadlines`` applies one ``DeadlineRule`` (``retention.deadlines``) to one table with
SQLAlchemy Core, on any engine (PostgreSQL in production, SQLite for the demo):

- it reflects only the columns it needs and refuses, naming the table and the column, a rule
  whose columns the table lacks (``UnknownLocationError``);
- it streams the OPEN items only (``WHERE <done> IS NULL``), so its cost follows the open items,
  not the table: an index on the done column (or a partial index ``WHERE <done> IS NULL``)
  serves the query;
- it reads nothing but the key, the received time and, with an extension, the time the
  extension was recorded and *whether* its reason is non-empty (computed in SQL: the reason's
  text never leaves the database). No other column, no personal data;
- an item whose received time is NULL, unreadable, or naive (a timestamp without time zone, as
  SQLite stores every timestamp) cannot be judged: it is counted as ``unclear`` and a human must
  look (so is one whose extension time is unreadable or naive). Pass ``naive_tz`` when the
  database is known to store naive times in one zone (UTC for SQLite written through SQLAlchemy
  from UTC values, as the reference world and the demo are) to judge them in that zone instead.

The report holds counts, the earliest open deadline and the internal keys of the overdue, soon
due and unclear items (the most urgent ``KEYS_CAP`` of each; memory stays bounded however many
there are). ``DeadlineReport.summary()`` is its JSON form; ``raise_for_attention`` raises
``DeadlineBreach`` (terminal) when anything is overdue or unclear, for a task that must fail and alert.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import NoSuchTableError

from retention.dberrors import db_errors
from retention.deadlines import BUSINESS_TZ, ClosedDay, Deadline, DeadlineRule, Status, event_day
from retention.errors import ClockError, TerminalError, UnknownLocationError
from retention.locations import IDENT

KEYS_CAP = 50
"""At most this many keys of each kind in a report (the counts are always complete)."""

_BATCH = 1000
"""Rows fetched per round trip while streaming (a server-side cursor on PostgreSQL)."""

_BLANK = " \t\r\n"
"""A reason made of these characters only counts as no reason."""

Key = int | str
"""An item's internal key as reported: an integer key as it is, any other as text."""


class DeadlineBreach(TerminalError):
    """Items are overdue or cannot be judged: a human must look (the message holds counts only)."""


@dataclass(frozen=True)
class DeadlineReport:
    """What one watch found at ``now``: counts and internal keys, never personal data.

    ``open`` counts every item whose done column is NULL; each of them is exactly one of
    ``overdue``, ``due_soon``, ``unclear`` or within time (``open`` minus the other three).
    """

    table: str
    kind: str
    now: datetime
    warn_before: int
    open: int
    overdue: int
    due_soon: int
    unclear: int
    extended: int
    """Open items whose extension counts (recorded in time, with a reason)."""
    extensions_ignored: int
    """Open items with an extension recorded too late or without a reason: the original deadline holds."""
    earliest_deadline: datetime | None
    """The earliest deadline of an open item that could be judged (Copenhagen time); None if none."""
    overdue_keys: tuple[Key, ...]
    """The most overdue first (earliest deadline, then key), at most ``KEYS_CAP``."""
    due_soon_keys: tuple[Key, ...]
    """The earliest deadline first, at most ``KEYS_CAP``."""
    unclear_keys: tuple[Key, ...]
    """In key order, at most ``KEYS_CAP``."""
    done_late: int | None = None
    """Items done at or after ``done_since`` but after their deadline; None if not asked for."""
    done_since: datetime | None = None

    @property
    def needs_attention(self) -> bool:
        """Whether anything is overdue or unclear (due soon is a warning, not a failure)."""
        return self.overdue > 0 or self.unclear > 0

    def summary(self) -> dict[str, Any]:
        """The report as JSON-serialisable values (times as ISO-8601 text)."""
        return {
            "table": self.table,
            "kind": self.kind,
            "now": self.now.isoformat(),
            "warn_before": self.warn_before,
            "open": self.open,
            "overdue": self.overdue,
            "due_soon": self.due_soon,
            "unclear": self.unclear,
            "within_time": self.open - self.overdue - self.due_soon - self.unclear,
            "extended": self.extended,
            "extensions_ignored": self.extensions_ignored,
            "done_late": self.done_late,
            "done_since": _iso(self.done_since),
            "earliest_deadline": _iso(self.earliest_deadline),
            "overdue_keys": list(self.overdue_keys),
            "due_soon_keys": list(self.due_soon_keys),
            "unclear_keys": list(self.unclear_keys),
            "keys_cap": KEYS_CAP,
            "needs_attention": self.needs_attention,
        }

    def message(self) -> str:
        """One line of counts for a log or an alert (no keys, no personal data)."""
        late = "" if self.done_late is None else f", {self.done_late} done late"
        return (
            f"{self.table} ({self.kind}): {self.open} open, {self.overdue} overdue, "
            f"{self.due_soon} due within {self.warn_before} days, {self.unclear} unclear{late}; "
            f"earliest deadline {_iso(self.earliest_deadline) or 'none'}"
        )

    def raise_for_attention(self) -> None:
        """Raise ``DeadlineBreach`` if anything is overdue or unclear."""
        if self.needs_attention:
            raise DeadlineBreach(f"deadline watch: {self.message()}")


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat()


def check_deadlines(
    engine: Engine,
    table: str,
    key: str,
    rule: DeadlineRule,
    now: datetime,
    *,
    company_closed: Collection[ClosedDay] = (),
    naive_tz: tzinfo | None = None,
    done_since: datetime | None = None,
) -> DeadlineReport:
    """Watch ``rule`` on ``table`` (key column ``key``) at ``now`` (aware).

    ``company_closed``: extra closing days, see ``retention.deadlines``. ``naive_tz``: the zone in
    which naive stored times are read (default: a naive time is unclear). ``done_since``: also count
    the items done at or after this instant that were done after their deadline (a range on the
    done column: cheap only where that column is indexed; default: not counted).

    Raises ``UnknownLocationError`` for a missing table or column, ``ClockError`` for a naive ``now``
    or ``done_since``, ``TerminalError`` for a malformed name, and the classified database errors
    (``retention.dberrors``).
    """
    _check_names(table, key, rule)
    event_day(now)
    if done_since is not None:
        event_day(done_since)
    tally = _Tally(now, rule.warn_before)
    closed = frozenset(company_closed)
    with db_errors(f"deadline watch on table {table}"), engine.connect() as conn:
        t = _reflect(conn, table, key, rule)
        text_times = conn.dialect.name == "sqlite"
        for row in _stream(conn, open_items_query(t, key, rule, text_times=text_times)):
            tally.add(row.key, _judged(row, rule, naive_tz, closed))
        done_late = None
        if done_since is not None:
            done_late = _count_done_late(conn, t, key, rule, done_since, naive_tz, closed, text_times)
    return tally.report(table, rule.kind, done_late, done_since)


def open_items_query(
    t: sa.Table, key: str, rule: DeadlineRule, *, text_times: bool = False
) -> sa.Select[Any]:
    """The one query the watch runs over ``t``: the open items (done IS NULL), only the columns it needs.

    ``text_times`` reads the time columns as text, parsed in Python (SQLite, whose stored text
    SQLAlchemy would otherwise parse and fail on when malformed).
    """
    return sa.select(*_selected(t, key, rule, text_times)).where(t.c[rule.done].is_(None))


# reading the table


def _check_names(table: str, key: str, rule: DeadlineRule) -> None:
    for what, name in (("table", table), ("key", key)):
        if not isinstance(name, str) or not re.fullmatch(IDENT, name):
            raise TerminalError(f"deadline watch: the {what} name must be an identifier")
    if key in rule.columns():
        raise TerminalError(f"deadline watch on table {table}: the key {key!r} is also a column of the rule")


def _needed(key: str, rule: DeadlineRule) -> dict[str, str]:
    """Column -> the field that names it."""
    needed = {key: "records.key", rule.received: "deadline.received", rule.done: "deadline.done"}
    if rule.extension is not None:
        needed[rule.extension.at] = "deadline.extension.at"
        needed[rule.extension.reason] = "deadline.extension.reason"
    return needed


def _reflect(conn: Connection, table: str, key: str, rule: DeadlineRule) -> sa.Table:
    """The table with only the columns the rule needs; ``UnknownLocationError`` naming what is missing."""
    needed = _needed(key, rule)
    try:
        t = sa.Table(table, sa.MetaData(), autoload_with=conn, include_columns=list(needed))
    except NoSuchTableError:
        raise UnknownLocationError(f"deadline watch: table {table!r} does not exist") from None
    missing = [f"{col!r} (named by {field})" for col, field in needed.items() if col not in t.c]
    if missing:
        raise UnknownLocationError(f"deadline watch: table {table!r} has no column {', '.join(missing)}")
    return t


def _selected(t: sa.Table, key: str, rule: DeadlineRule, text_times: bool) -> list[sa.ColumnElement[Any]]:
    def as_time(name: str) -> sa.ColumnElement[Any]:
        col = t.c[name]
        return sa.type_coerce(col, sa.Text()) if text_times else col

    cols: list[sa.ColumnElement[Any]] = [t.c[key].label("key"), as_time(rule.received).label("received")]
    if rule.extension is not None:
        reason = sa.func.trim(sa.cast(t.c[rule.extension.reason], sa.Text()), _BLANK)
        cols.append(as_time(rule.extension.at).label("extended_at"))
        cols.append(sa.case((sa.func.length(reason) > 0, 1), else_=0).label("has_reason"))
    return cols


def _stream(conn: Connection, stmt: sa.Select[Any]) -> Iterator[Row[Any]]:
    yield from conn.execute(stmt.execution_options(yield_per=_BATCH))


def _count_done_late(
    conn: Connection,
    t: sa.Table,
    key: str,
    rule: DeadlineRule,
    since: datetime,
    naive_tz: tzinfo | None,
    closed: frozenset[ClosedDay],
    text_times: bool,
) -> int:
    """Items done at or after ``since`` at or after their deadline (items that cannot be judged skipped)."""
    done = t.c[rule.done]
    done_as = sa.type_coerce(done, sa.Text()) if text_times else done
    stmt = sa.select(*_selected(t, key, rule, text_times), done_as.label("done")).where(
        done.is_not(None), done >= _bound(done, since, naive_tz)
    )
    late = 0
    for row in _stream(conn, stmt):
        deadline = _judged(row, rule, naive_tz, closed)
        try:
            finished = _instant(row.done, naive_tz)
        except _Unclear:
            continue
        late += deadline is not None and finished.astimezone(UTC) >= deadline.at.astimezone(UTC)
    return late


def _bound(column: sa.Column[Any], instant: datetime, naive_tz: tzinfo | None) -> datetime:
    """``instant`` as the column stores it: aware for a timestamp with time zone, naive otherwise."""
    if getattr(column.type, "timezone", False):
        return instant
    return instant.astimezone(naive_tz or UTC).replace(tzinfo=None)


# judging one item


class _Unclear(Exception):
    """A stored time that cannot be judged."""


def _instant(value: object, naive_tz: tzinfo | None) -> datetime:
    """A stored time as an aware datetime; ``_Unclear`` if it is unreadable, or naive without ``naive_tz``.

    A date (no time of day) is noon of that Copenhagen day: its day is all that counts.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise _Unclear from None
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time(12), tzinfo=BUSINESS_TZ)
    if not isinstance(value, datetime):
        raise _Unclear
    if value.utcoffset() is not None:
        return value
    if naive_tz is None:
        raise _Unclear
    return value.replace(tzinfo=naive_tz)


def _judged(
    row: Row[Any], rule: DeadlineRule, naive_tz: tzinfo | None, closed: frozenset[ClosedDay]
) -> Deadline | None:
    """The item's deadline, or None if it cannot be judged (unclear)."""
    values = row._mapping
    try:
        if values["received"] is None:
            return None
        received = _instant(values["received"], naive_tz)
        extended_at = values.get("extended_at")
        if extended_at is not None:
            extended_at = _instant(extended_at, naive_tz)
        return rule.deadline(
            received,
            extended_at=extended_at,
            with_reason=bool(values.get("has_reason")),
            company_closed=closed,
        )
    except (_Unclear, ClockError):
        return None


def _key(value: object) -> Key:
    return value if isinstance(value, int | str) and not isinstance(value, bool) else str(value)


def _key_order(key: Key) -> tuple[int, int, str]:
    return (0, key, "") if isinstance(key, int) else (1, 0, key)


@dataclass
class _Smallest:
    """The ``KEYS_CAP`` smallest keys by an order; memory stays bounded by twice the cap."""

    items: list[tuple[tuple[Any, ...], Key]] = field(default_factory=list)

    def add(self, order: tuple[Any, ...], key: Key) -> None:
        self.items.append((order, key))
        if len(self.items) >= 2 * KEYS_CAP:
            self._trim()

    def _trim(self) -> None:
        self.items.sort(key=lambda item: item[0])
        del self.items[KEYS_CAP:]

    def keys(self) -> tuple[Key, ...]:
        self._trim()
        return tuple(key for _, key in self.items)


@dataclass
class _Tally:
    now: datetime
    warn_before: int
    counts: dict[str, int] = field(default_factory=dict)
    earliest: Deadline | None = None
    keys: dict[str, _Smallest] = field(default_factory=dict)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def _keep(self, name: str, order: tuple[Any, ...], key: Key) -> None:
        self.keys.setdefault(name, _Smallest()).add(order, key)

    def add(self, raw_key: object, deadline: Deadline | None) -> None:
        key = _key(raw_key)
        self._count("open")
        if deadline is None:
            self._count("unclear")
            self._keep("unclear", _key_order(key), key)
            return
        if deadline.extension != "none":
            self._count("extended" if deadline.extension == "counted" else "extensions_ignored")
        if self.earliest is None or deadline.last_day < self.earliest.last_day:
            self.earliest = deadline
        status: Status = deadline.status(self.now, self.warn_before)
        if status != "open":
            self._count(status)
            self._keep(status, (deadline.last_day, *_key_order(key)), key)

    def report(
        self, table: str, kind: str, done_late: int | None, done_since: datetime | None
    ) -> DeadlineReport:
        def keys(name: str) -> tuple[Key, ...]:
            return self.keys[name].keys() if name in self.keys else ()

        c = self.counts.get
        return DeadlineReport(
            table=table,
            kind=kind,
            now=self.now,
            warn_before=self.warn_before,
            open=c("open", 0),
            overdue=c("overdue", 0),
            due_soon=c("due_soon", 0),
            unclear=c("unclear", 0),
            extended=c("extended", 0),
            extensions_ignored=c("extensions_ignored", 0),
            earliest_deadline=None if self.earliest is None else self.earliest.at,
            overdue_keys=keys("overdue"),
            due_soon_keys=keys("due_soon"),
            unclear_keys=keys("unclear"),
            done_late=done_late,
            done_since=done_since,
        )
