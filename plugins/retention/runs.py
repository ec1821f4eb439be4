"""Run ids: one id names one run, in the ledger and everything keyed by it.

The ledger, the leases, the erase journal, the kept records and the intent notes all key a run by
its id, and Airflow's run ids are unique only within one DAG, and only while the run exists. A
run triggered with an id of its own (``dag_run_id`` in the REST API: a request reference, say)
may share it with a run of another DAG, or with an earlier run of the same DAG that housekeeping
purged. Sharing it would mix the two runs: one run's ``verified`` entries would stand as the
other's proof, one run would take the other's leases as its own, a resumed step would count the
other's unfinished batches as its own.

So the first task of a run *claims* its id here, with the run's owner (``<dag_id>@<run_after>``,
which a retried or cleared run keeps). A claim by another owner is refused with
``RunIdTaken`` (terminal: nothing was touched, trigger again with a new id). The table holds ids,
DAG ids and instants, never personal data.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, aware_utc, check_table_name, create_tables
from retention.errors import TerminalError, TransientError

_MAX_ID = 250
"""Airflow's own limit on a run id."""


class RunIdTaken(TerminalError):
    """The run id already names another run."""

    def __init__(self, run_id: str, owner: str, claimed_at: datetime) -> None:
        self.run_id = run_id
        self.owner = owner
        super().__init__(
            f"run id {run_id!r} already names another run ({owner}, since "
            f"{claimed_at.isoformat(timespec='seconds')}): this run stops without touching anything; "
            "trigger it again under a new run id"
        )


def owner_of(dag_id: str, run_after: datetime) -> str:
    """The owner of a DAG run: its DAG and its ``run_after`` (kept by a retried or cleared run)."""
    return f"{dag_id}@{aware_utc('run_after', run_after).isoformat()}"


class RunIds:
    """The run ids claimed so far, each with the run that owns it."""

    def __init__(self, engine: Engine, table_name: str = "retention_run_ids") -> None:
        self._engine = engine
        self._table = sa.Table(
            check_table_name(table_name),
            sa.MetaData(),
            sa.Column("run_id", sa.String(_MAX_ID), primary_key=True),
            sa.Column("owner", sa.Text, nullable=False),
            sa.Column("claimed_at", UtcDateTime, nullable=False),
        )

    def ensure_schema(self) -> None:
        with db_errors("run ids schema"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def claim(self, run_id: str, owner: str, *, now: datetime | None = None) -> None:
        """Claim ``run_id`` for ``owner``; its own claim again is fine, another owner's is ``RunIdTaken``."""
        if not run_id or len(run_id) > _MAX_ID:
            raise ValueError(f"a run id is 1 to {_MAX_ID} characters")
        claimed_at = aware_utc("now", now or datetime.now(UTC))
        t = self._table
        with db_errors("run id claim"):
            for _ in range(2):  # two claimers of a new id: one inserts, the other reads the winner
                with self._engine.begin() as conn:
                    row = conn.execute(
                        sa.select(t.c.owner, t.c.claimed_at).where(t.c.run_id == run_id)
                    ).first()
                if row is not None:
                    if row.owner != owner:
                        raise RunIdTaken(run_id, row.owner, row.claimed_at)
                    return
                try:
                    with self._engine.begin() as conn:
                        conn.execute(sa.insert(t).values(run_id=run_id, owner=owner, claimed_at=claimed_at))
                    return
                except IntegrityError:
                    continue
        raise TransientError(f"run id {run_id!r}: could not be claimed (contended)")

    def owner(self, run_id: str) -> str | None:
        """Who claimed ``run_id`` (None: nobody yet)."""
        t = self._table
        with db_errors("run id read"), self._engine.connect() as conn:
            found = conn.execute(sa.select(t.c.owner).where(t.c.run_id == run_id)).scalar()
        return None if found is None else str(found)
