"""The monitoring page's reader with the runs of the DAGs that are no retention run (sweep,
housekeeping, access report): their approvals show, their runs do not pose as nightly runs."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from retention.ledger import Ledger, LedgerEntry
from retention_airflow.ui.reader import LedgerReader


def test_a_sweep_approval_waits_visibly_and_other_dags_runs_are_not_listed_as_runs(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    root = "s3:alleskar-documents/letters/*"
    ledger.append_many(
        [
            LedgerEntry(
                run_id="nightly_a",
                category="correspondence",
                store="database",
                location="table:x",
                action="delete",
                outcome="erased",
                count=3,
            ),
            LedgerEntry(
                run_id="sweep_a",
                store="s3",
                location=root,
                action="approval",
                outcome="approval_requested",
                count=1200,
            ),
            LedgerEntry(
                run_id="sweep_a", store="s3", location=root, action="orphan_sweep", outcome="summary", count=0
            ),
            LedgerEntry(
                run_id="housekeeping_a", store="airflow", action="housekeeping", outcome="erased", count=40
            ),
        ]
    )
    reader = LedgerReader(engine)

    pending = reader.pending_approvals()
    assert [(p.run_id, p.category, p.records) for p in pending] == [("sweep_a", root, 1200)]
    assert [r.run_id for r in reader.recent_runs()] == ["nightly_a"]

    ledger.append(
        LedgerEntry(
            run_id="sweep_a", store="s3", location=root, action="approval", outcome="approved", count=1200
        )
    )
    assert reader.pending_approvals() == []
