"""The monitoring page's reader with the runs of the DAGs that are no retention run (sweep,
housekeeping, access report): their approvals show, their runs do not pose as nightly runs."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from retention.ledger import Ledger, LedgerEntry
from retention_airflow.ui.reader import LedgerReader
from tests.unit.test_ui_app import auth_manager, viewer  # noqa: F401 - fixtures


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


def test_the_overview_shows_airflow_s_window_and_the_last_purge(
    tmp_path: Path,
    viewer: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    from fastapi.testclient import TestClient

    from retention_airflow.ui import create_app
    from tests.unit.test_ui_app import dom

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(sa.create_engine(url))
    ledger.ensure_schema()
    for runs, outcome in ((5, "erased"), (2, "verify_failed")):
        ledger.append(
            LedgerEntry(
                run_id=f"housekeeping_{runs}",
                store="airflow",
                action="housekeeping",
                outcome=outcome,
                count=40,
                detail={"runs": runs, "dry_run": False, "keep": "P30D"},
            )
        )
    newest = LedgerReader(sa.create_engine(url)).last_housekeeping()
    assert newest is not None and (newest.runs, newest.removed, newest.outcome) == (2, 40, "verify_failed")

    def no_business_db() -> sa.Engine:
        raise RuntimeError("not in this test")

    app = create_app(engine_factory=lambda: sa.create_engine(url), business_engine_factory=no_business_db)
    with TestClient(app) as client:
        response = client.get("/", headers=viewer)
    section = dom(response.text).one("section", data_testid="housekeeping")
    assert "Kept P30D after a run of customer_erasure, customer_access_report ends." in section.text()
    purge = section.one("p", data_field="last-purge").text()
    assert ": 2 runs, 40 rows and log files" in purge and "something was left" in purge
