"""Leases: overlapping runs take turns instead of interleaving.

A lease is a row in a small table of the ledger's database: a *scope* (``category:<id>``,
``subject:<pseudonym>``), the run that holds it, the step holding it, since when and until
when. Taking a lease someone else holds fails with ``LeaseBusy`` naming the run that holds
it; a step that ``waits`` polls until it is free or its wait is over.

- The erasing steps of every run hold one lease per category while they work on it, so the
  nightly run and a customer's erasure never delete from the same category at once: the
  later one waits its turn, and its retry resumes.
- A customer's erasure holds ``subject:<pseudonym>`` for the whole run (taken by its first
  task, given back by its last), so a second erasure of the same customer started meanwhile
  stops before touching anything, and only one receipt says what was erased.

Leases expire (``ttl``), and a step renews its leases while it works (a heartbeat): a worker
killed while holding one leaves a row that blocks others only until the short ``ttl`` has
passed, and the same run (its retry) may take its own lease back at once. The
table holds run ids, step names and pseudonyms, never a customer id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, aware_utc, check_table_name, create_tables
from retention.errors import RetentionError, TransientError

log = logging.getLogger(__name__)


class LeaseBusy(TransientError):
    """Another run holds the lease; retrying later can succeed."""

    def __init__(self, scope: str, holder: Lease) -> None:
        self.scope = scope
        self.holder = holder
        super().__init__(
            f"{scope} is held by run {holder.owner} ({holder.step}) since "
            f"{holder.acquired_at.isoformat(timespec='seconds')}, at most until "
            f"{holder.expires_at.isoformat(timespec='seconds')}: this step waits its turn"
        )


@dataclass(frozen=True)
class Lease:
    scope: str
    owner: str
    """The run id holding it."""
    step: str
    """The task (or step) that took it."""
    acquired_at: datetime
    expires_at: datetime


_MAX_SCOPE = 200


def _lease_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("scope", sa.String(_MAX_SCOPE), primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("acquired_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )


class Leases:
    """The lease table of ``engine``'s database (the ledger's)."""

    def __init__(
        self,
        engine: Engine,
        table_name: str = "retention_leases",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._clock = clock
        """Wall-clock time, never a run's evaluation moment (``as_of`` may lie in the past)."""
        self._table = _lease_table(sa.MetaData(), check_table_name(table_name))

    def ensure_schema(self) -> None:
        with db_errors("lease table"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def acquire(self, scope: str, owner: str, step: str, *, ttl: timedelta) -> Lease:
        """Take ``scope`` for ``owner`` for ``ttl`` from now; ``LeaseBusy`` if another run holds it.

        The owner may take its own lease again (a retried step), and anyone may take an
        expired one.
        """
        if not scope or len(scope) > _MAX_SCOPE:
            raise ValueError(f"a lease scope is 1 to {_MAX_SCOPE} characters")
        now = aware_utc("now", self._clock())
        lease = Lease(scope, owner, step, now, now + ttl)
        with db_errors(f"lease {scope}"):
            for _ in range(3):  # two takers of a free scope: one inserts, the other reads the winner
                try:
                    return self._take(lease)
                except IntegrityError:
                    continue
        raise TransientError(f"lease {scope}: could not be taken (contended)")

    def _take(self, lease: Lease) -> Lease:
        t = self._table
        with self._engine.begin() as conn:
            held = conn.execute(sa.select(t).where(t.c.scope == lease.scope).with_for_update()).first()
            if held is None:
                conn.execute(sa.insert(t).values(**lease.__dict__))
                return lease
            current = Lease(**held._mapping)
            if current.owner != lease.owner and current.expires_at > lease.acquired_at:
                raise LeaseBusy(lease.scope, current)
            conn.execute(sa.update(t).where(t.c.scope == lease.scope).values(**lease.__dict__))
            return lease

    def release(self, scope: str, owner: str) -> bool:
        """Give ``scope`` back if ``owner`` holds it; whether a lease was released."""
        t = self._table
        with db_errors(f"lease {scope}"), self._engine.begin() as conn:
            gone = conn.execute(sa.delete(t).where(t.c.scope == scope, t.c.owner == owner))
        return bool(gone.rowcount)

    def held(self) -> list[Lease]:
        """The leases in force now, oldest first (the monitoring page shows them)."""
        t = self._table
        now = aware_utc("now", self._clock())
        with db_errors("lease table"), self._engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.expires_at > now).order_by(t.c.acquired_at)).all()
        return [Lease(**row._mapping) for row in rows]

    def all(self) -> list[Lease]:
        """Every lease row, oldest first, expired ones too (left by a run that stopped holding them)."""
        t = self._table
        with db_errors("lease table"), self._engine.connect() as conn:
            if not sa.inspect(conn).has_table(t.name):
                return []
            rows = conn.execute(sa.select(t).order_by(t.c.acquired_at)).all()
        return [Lease(**row._mapping) for row in rows]

    def renew(self, scopes: list[str], owner: str, *, ttl: timedelta) -> None:
        """Move the end of ``owner``'s leases on ``scopes`` to ``ttl`` from now (a heartbeat)."""
        t = self._table
        until = aware_utc("now", self._clock()) + ttl
        with db_errors("lease renewal"), self._engine.begin() as conn:
            conn.execute(
                sa.update(t).where(t.c.scope.in_(scopes), t.c.owner == owner).values(expires_at=until)
            )

    @contextmanager
    def holding(
        self,
        scopes: list[str],
        owner: str,
        step: str,
        *,
        ttl: timedelta,
        wait: timedelta = timedelta(0),
        poll: float = 1.0,
    ) -> Iterator[None]:
        """Hold every scope (taken in sorted order, so two steps never deadlock) for the block.

        Waits up to ``wait`` for a busy scope, then raises ``LeaseBusy``. While the block runs, a
        heartbeat renews the leases every third of ``ttl``: a holder that is killed, or hangs with
        its heartbeat, stops renewing, and its leases expire within ``ttl``. Releases what it took
        when the block ends, however it ends (if the database is unreachable then, the leases
        expire on their own).
        """
        taken: list[str] = []
        deadline = time.monotonic() + wait.total_seconds()
        beating = threading.Event()
        heart = threading.Thread(
            target=self._beat, args=(taken, owner, ttl, beating), name="lease-heartbeat", daemon=True
        )
        try:
            for scope in sorted(set(scopes)):
                while True:
                    try:
                        self.acquire(scope, owner, step, ttl=ttl)
                        break
                    except LeaseBusy:
                        if time.monotonic() >= deadline:
                            raise
                        time.sleep(poll)
                taken.append(scope)
            heart.start()
            yield
        finally:
            beating.set()
            if heart.is_alive():
                heart.join()
            for scope in taken:
                self.release(scope, owner)

    def _beat(self, scopes: list[str], owner: str, ttl: timedelta, stop: threading.Event) -> None:
        while not stop.wait(ttl.total_seconds() / 3):
            try:
                self.renew(scopes, owner, ttl=ttl)
            except RetentionError as e:  # the step itself will meet the database's trouble
                log.warning("lease heartbeat of run %s failed: %s", owner, type(e).__name__)
