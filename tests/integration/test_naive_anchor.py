"""A timestamp-without-time-zone anchor on real PostgreSQL: due by the zone its values are written
in, whatever the database session's zone is (#14: rows could become due hours early)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from retention.adapters.base import HoldSet
from retention.adapters.database import DatabaseAdapter, RowSelection
from retention.clock import Cutoff

CUTOFF = Cutoff(instant=datetime(2026, 6, 1, tzinfo=UTC), inclusive=False, date_bound=date(2026, 6, 1))
"""Due: written before 2026-06-01 00:00 UTC, which is 02:00 in Copenhagen (summer time)."""


def _far_east_engine(url: Any) -> sa.Engine:
    # A session in UTC+14: a zone-blind comparison would be 14 hours off.
    return sa.create_engine(url, connect_args={"options": "-c timezone=Pacific/Kiritimati"})


def test_a_naive_anchor_is_due_by_its_declared_zone_not_the_sessions(fresh_db: sa.Engine) -> None:
    with fresh_db.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE notes (id bigint PRIMARY KEY, customer_id bigint NOT NULL, "
                "written_at timestamp without time zone NOT NULL)"
            )
        )
        # Copenhagen wall times: 01:30 is 23:30 UTC the day before (due), 02:30 is 00:30 UTC (not).
        c.execute(sa.text("INSERT INTO notes VALUES (1, 7, '2026-06-01 01:30'), (2, 7, '2026-06-01 02:30')"))
    engine = _far_east_engine(fresh_db.url)
    try:
        adapter = DatabaseAdapter(engine)
        base = RowSelection(table="notes", key="id", subject_column="customer_id", anchor="written_at")
        in_copenhagen = dataclasses.replace(base, cutoff=CUTOFF, anchor_zone="Europe/Copenhagen")
        assert adapter.count(in_copenhagen, HoldSet()) == 1
        in_utc = dataclasses.replace(base, cutoff=CUTOFF)
        assert adapter.count(in_utc, HoldSet()) == 0, "read as UTC, 01:30 and 02:30 are both after midnight"
        with engine.connect() as c:
            # What a zone-blind comparison does: the session's UTC+14 reading makes both due.
            blind = c.execute(
                sa.text("SELECT count(*) FROM notes WHERE written_at < :cutoff"), {"cutoff": CUTOFF.instant}
            ).scalar()
        assert blind == 2
    finally:
        engine.dispose()
