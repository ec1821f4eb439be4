"""The legal-hold registry: customers (subjects) or key/path prefixes that must not be erased.

One table of holds. A hold covers one subject or one prefix, in one category or in all
of them (category NULL), from its creation until it is released or its ``until`` passes.
Rows are never deleted: releasing a hold stamps ``released_at``, so the registry is its
own history. Every timestamp is timezone-aware UTC.

A hold is checked when it is added, so that it can match what it names: its subject is
exactly a customer id of the deployment's format (``SubjectFormat.check`` of the policy set's
``_subject.yaml``, given to the registry: the form every store compares), its category one of
the policy set's, its prefix a clean relative path.
A hold that got into the table some other way (by hand, with SQL) is checked again when it
is read: ``check_stored`` fails a run before anything is erased, and ``current`` raises the
same ``TerminalError`` (naming the hold's id, never its value) rather than let a store
compare a value it cannot read.
"""

from __future__ import annotations

import builtins
import functools
import unicodedata
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from retention.adapters.base import HoldSet
from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, aware_utc, check_table_name, create_tables
from retention.errors import TerminalError, UnsafeTargetError
from retention.guard import check_text
from retention.paths import check_relative
from retention.subject import DEFAULT_SUBJECT, SubjectFormat

_READS_KEPT = 64
"""(category, instant) pairs whose holds ``current`` keeps with the table's mark (a run has one instant)."""


def _holds_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.Text),
        sa.Column("prefix", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("until", UtcDateTime),
        sa.Column("released_at", UtcDateTime),
        sa.CheckConstraint("(subject IS NULL) <> (prefix IS NULL)", name=f"ck_{name}_subject_xor_prefix"),
        sa.Index(f"ix_{name}_category", "category"),
    )


class HoldRegistry:
    """Legal holds in one table of ``engine``'s database: add, release, and read the holds in force.

    ``subject_format`` is the deployment's customer-id format (the policy set's ``subject``,
    from ``_subject.yaml``); every subject is checked against it when a hold is added and
    again when holds are read. The default is the digits-only default format.
    """

    def __init__(
        self,
        engine: Engine,
        table_name: str = "retention_legal_holds",
        *,
        subject_format: SubjectFormat = DEFAULT_SUBJECT,
    ) -> None:
        self._engine = engine
        self._table = _holds_table(sa.MetaData(), check_table_name(table_name))
        self._format = subject_format
        # Cached per registry (its format is part of the answer): the holds are read again before
        # every erase, and are nearly always the same set.
        self._all_valid: Callable[[frozenset[object], frozenset[object]], bool] = functools.lru_cache(
            maxsize=16
        )(functools.partial(_all_valid, subject_format))
        self._read: dict[tuple[str, datetime], tuple[tuple[Any, ...], HoldSet]] = {}
        """(category, instant) -> the table's mark and the holds in force read under it (PostgreSQL)."""

    def ensure_schema(self) -> None:
        """Create the holds table if it is missing; idempotent."""
        with db_errors("legal holds schema"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def add(
        self,
        *,
        reason: str,
        subject: str | None = None,
        prefix: str | None = None,
        category: str | None = None,
        categories: Collection[str] | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
    ) -> int:
        """Hold one subject or one prefix (in one category, or in all if None); return the hold's id.

        ``subject`` must be exactly a customer id of the registry's format, ``prefix`` a clean
        relative path; a ``category`` must be one of ``categories`` (the policy set's ids,
        required with a category). Anything else is refused (``TerminalError``): such a hold
        would protect nothing, or protect a record in one store and not in another.
        """
        created_at = _now(now)
        values = {
            "reason": _reason(reason),
            "subject": _subject(subject, prefix, self._format),
            "prefix": None if prefix is None else _prefix(prefix),
            "category": _known_category(category, categories),
            "until": _until(until, created_at),
            "created_at": created_at,
        }
        with db_errors("legal hold add"), self._engine.begin() as conn:
            return int(
                conn.execute(sa.insert(self._table).values(values).returning(self._table.c.id)).scalar_one()
            )

    def release(self, hold_id: int, now: datetime | None = None) -> None:
        """End a hold from ``now`` on; the row stays. Releasing a released hold changes nothing."""
        t = self._table
        released_at = _now(now)
        with db_errors("legal hold release"), self._engine.begin() as conn:
            stamp = (
                sa.update(t)
                .where(t.c.id == hold_id, t.c.released_at.is_(None))
                .values(released_at=released_at)
            )
            if conn.execute(stamp).rowcount == 0:
                if conn.execute(sa.select(t.c.id).where(t.c.id == hold_id)).first() is None:
                    raise TerminalError(f"there is no legal hold with id {hold_id}")

    def check_stored(self, categories: Collection[str], now: datetime) -> int:
        """Check every hold in force at ``now`` by the rules ``add`` applies; return how many there are.

        Raises ``TerminalError`` naming the first invalid hold's id and what is wrong with it
        (never its value): a run calls this before it erases anything, so a hold written by
        hand in a form no store can match stops the run instead of protecting nothing.
        """
        known = _category_names(categories)
        t = self._table
        query = sa.select(t).where(*self._in_force(aware_utc("now", now))).order_by(t.c.id)
        with db_errors("legal holds read"), self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        for row in rows:
            _check_row(row, known, self._format)
        return len(rows)

    def current(self, category: str, now: datetime) -> HoldSet:
        """The subjects and prefixes held at ``now`` in ``category``, by its own holds or global ones.

        A hold in force whose subject or prefix is not valid raises ``TerminalError`` naming
        its id: the adapters compare these values as they are, before every erase.
        """
        t = self._table
        wanted = _category(category)
        if wanted is None:
            raise TerminalError("holds in force are read for one category")
        in_force = [
            *self._in_force(aware_utc("now", now)),
            sa.or_(t.c.category.is_(None), t.c.category == wanted),
        ]
        query = sa.select(t.c.subject, t.c.prefix).where(*in_force)
        subjects: set[Any] = set()
        prefixes: set[Any] = set()
        mark: tuple[Any, ...] | None = None
        with db_errors("legal holds read"), self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                mark = tuple(conn.execute(self._mark()).one())
                known = self._read.get((wanted, now))
                if known is not None and known[0] == mark:
                    return known[1]
                # Read before every erase: two arrays in one row cost a fraction of thousands of rows.
                held = query.subquery()
                arrays = sa.select(sa.func.array_agg(held.c.subject), sa.func.array_agg(held.c.prefix))
                both = conn.execute(arrays).one()
                subjects.update(s for s in both[0] or () if s is not None)
                prefixes.update(p for p in both[1] or () if p is not None)
            else:
                for subject, prefix in conn.execute(query):
                    if subject is not None:
                        subjects.add(subject)
                    else:
                        prefixes.add(prefix)
            if not self._all_valid(frozenset(subjects), frozenset(prefixes)):
                # Rare: read the rows again to name the hold at fault.
                for row in conn.execute(sa.select(t).where(*in_force).order_by(t.c.id)).mappings():
                    _check_row(row, None, self._format)
                raise TerminalError("a legal hold in force is invalid (python -m retention.cli hold check)")
        holds = HoldSet(subjects=frozenset(subjects), prefixes=tuple(sorted(prefixes)))
        if mark is not None:
            if len(self._read) >= _READS_KEPT:
                self._read.clear()
            self._read[(wanted, now)] = (mark, holds)
        return holds

    def _mark(self) -> sa.Select[int, int, int]:
        """What changes whenever a row of the holds table does (PostgreSQL): its row count, and the
        largest and the sum of the rows' ``xmin``, the transaction that wrote each row version.

        ``current`` is called before every erase, and the holds are nearly always the same; this
        reads one row where the holds themselves are a row per held customer. A hold added,
        released, or edited or deleted by hand writes or removes a row version, whose new
        transaction id changes the mark (for a change to leave count, maximum and sum as they
        were, transaction ids would have to wrap around within one run).
        """
        xmin = sa.cast(sa.cast(sa.literal_column("xmin"), sa.Text), sa.BigInteger)
        return sa.select(sa.func.count(), sa.func.max(xmin), sa.func.sum(xmin)).select_from(self._table)

    def _in_force(self, now: datetime) -> list[sa.ColumnElement[bool]]:
        t = self._table
        # a hold released later than ``now`` was still in force at ``now``: evaluating a past
        # instant errs on the side of keeping
        return [
            sa.or_(t.c.released_at.is_(None), t.c.released_at > now),
            sa.or_(t.c.until.is_(None), t.c.until > now),
        ]

    def list(
        self, *, now: datetime | None = None, include_inactive: bool = False, include_subjects: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """Holds for reports, oldest first: in force at ``now`` unless ``include_inactive``.

        Each has id, kind (subject/prefix), category, reason, created_at, until and
        released_at; the held subject or prefix itself only with ``include_subjects``.
        """
        t = self._table
        query = sa.select(t).order_by(t.c.id)
        if not include_inactive:
            query = query.where(*self._in_force(_now(now)))
        with db_errors("legal holds read"), self._engine.connect() as conn:
            return [_report(row, include_subjects) for row in conn.execute(query).mappings()]


def _report(row: RowMapping, include_subjects: bool) -> dict[str, Any]:
    report = {
        "id": row["id"],
        "kind": "subject" if row["subject"] is not None else "prefix",
        "category": row["category"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "until": row["until"],
        "released_at": row["released_at"],
    }
    if include_subjects:
        report["subject"], report["prefix"] = row["subject"], row["prefix"]
    return report


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else aware_utc("now", now)


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise TerminalError("a legal hold needs a reason")
    stripped = reason.strip()
    check_text("hold reason", stripped)
    return stripped


def _subject(subject: str | None, prefix: str | None, subject_format: SubjectFormat) -> str | None:
    if (subject is None) == (prefix is None):
        raise TerminalError("a legal hold covers exactly one of subject or prefix")
    # Exactly the deployment's form: the database would read "042" or "٤٢" as customer 42 while
    # S3 and SFTP compare the text "42", so any other form holds rows but not files.
    return None if subject is None else subject_format.check(subject, "hold subject")


def _prefix(prefix: object) -> str:
    """A clean relative path: not empty, no surrounding whitespace, no control character."""
    if not isinstance(prefix, str):
        raise UnsafeTargetError("hold prefix must be text")
    if prefix != prefix.strip():
        # keys and paths are compared as they are: a padded prefix would match nothing
        raise UnsafeTargetError("hold prefix has surrounding whitespace")
    if any(unicodedata.category(c) == "Cc" for c in prefix):
        raise UnsafeTargetError("hold prefix contains a control character")
    return check_relative(prefix, "hold prefix")


def _category(category: str | None) -> str | None:
    if category is not None and (
        not isinstance(category, str) or not category or category != category.strip()
    ):
        raise TerminalError("hold category must be non-empty text without surrounding whitespace")
    return category


def _category_names(categories: Collection[str] | None) -> frozenset[str]:
    if categories is None:
        raise TerminalError("a hold in one category needs the policy set's categories to be checked against")
    if isinstance(categories, str | bytes) or not all(isinstance(c, str) for c in categories):
        raise TerminalError("categories must be a collection of category ids")
    return frozenset(categories)


def _known_category(category: str | None, categories: Collection[str] | None) -> str | None:
    """``category`` if None (all categories) or one of ``categories``; a hold elsewhere protects nothing."""
    category = _category(category)
    if category is not None:
        _check_known(category, _category_names(categories))
    return category


def _check_known(category: object, known: frozenset[str]) -> None:
    if category not in known:
        raise TerminalError(
            "hold category is not one of the policy set's categories "
            f"({', '.join(sorted(known)) or 'none'}): it would protect nothing"
        )


def _check_row(row: RowMapping, known: frozenset[str] | None, subject_format: SubjectFormat) -> None:
    """Check one stored hold by ``add``'s rules (its category too if ``known`` is given)."""
    try:
        subject, prefix = row["subject"], row["prefix"]
        if (subject is None) == (prefix is None):
            raise TerminalError("a legal hold covers exactly one of subject or prefix")
        if subject is not None:
            subject_format.check(subject, "its subject")
        else:
            _prefix(prefix)
        if known is not None:
            if row["category"] is not None:
                _check_known(row["category"], known)
            _reason(row["reason"])
    except TerminalError as e:
        raise TerminalError(
            f"legal hold {row['id']} is invalid: {e}. Add the hold again in a valid form "
            "(python -m retention.cli hold add), then release this one; no run erases anything until then"
        ) from None


def _all_valid(
    subject_format: SubjectFormat, subjects: frozenset[object], prefixes: frozenset[object]
) -> bool:
    try:
        for subject in subjects:
            subject_format.check(subject)
        for prefix in prefixes:
            _prefix(prefix)
    except TerminalError:
        return False
    return True


def _until(until: datetime | None, created_at: datetime) -> datetime | None:
    if until is None:
        return None
    until = aware_utc("until", until)
    if until <= created_at:
        raise TerminalError("a legal hold's until must be later than its creation")
    return until
