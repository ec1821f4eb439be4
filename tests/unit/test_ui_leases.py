"""The monitoring page's *Runs at work* panel (#14): what runs hold now, and holds left by a stopped run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from retention.ledger import Ledger
from retention.locks import Leases
from tests.unit.test_ui_app import auth_manager, dom, viewer  # noqa: F401 - fixtures


def test_the_overview_shows_runs_at_work_and_flags_a_hold_past_its_time_limit(
    tmp_path: Path,
    viewer: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    from fastapi.testclient import TestClient

    from retention.policy import PolicySet
    from retention_airflow.ui import create_app

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = sa.create_engine(url)
    Ledger(engine).ensure_schema()
    now = datetime.now(UTC)
    clocks = iter([now - timedelta(hours=5), now - timedelta(minutes=3), now - timedelta(minutes=2)])
    leases = Leases(engine, clock=lambda: next(clocks))
    leases.ensure_schema()
    leases.acquire("category:invoices", "scheduled__stalled", "erase_databases", ttl=timedelta(hours=3))
    leases.acquire(
        "category:correspondence", "scheduled__tonight", "category.erase_s3", ttl=timedelta(hours=3)
    )
    leases.acquire("subject:psn:" + "a" * 32, "manual__request", "prepare_run", ttl=timedelta(hours=6))

    def no_business_db() -> sa.Engine:
        raise RuntimeError("not in this test")

    app = create_app(
        engine_factory=lambda: sa.create_engine(url),
        business_engine_factory=no_business_db,
        policies_factory=lambda: PolicySet((), {}),
    )
    with TestClient(app) as client:
        response = client.get("/", headers=viewer)
    assert response.status_code == 200
    section = dom(response.text).one("section", data_testid="leases")
    rows = {
        row.attrs["data-holds"]: (
            row.one("td", data_field="run").text(),
            row.one("td", data_field="until").text(),
        )
        for row in section.one("table").find_all("tr")
        if "data-holds" in row.attrs
    }
    assert set(rows) == {"invoices", "correspondence", "a customer"}, "a customer is never named"
    assert rows["invoices"][0] == "scheduled__stalled" and "past its time limit" in rows["invoices"][1]
    assert "past its time limit" not in rows["correspondence"][1]
    assert "psn:" not in response.text
