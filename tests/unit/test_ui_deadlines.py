"""The overview's *Privacy deadlines* panel: the policies' time limits checked now in the business DB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from retention_airflow.ui import create_app
from tests.unit.test_ui_app import LedgerWorld, auth_manager, dom, ledger_world, viewer  # noqa: F401 - fixtures


def _panel(text: str) -> dict[str, dict[str, str]]:
    table = dom(text).one("table", data_testid="deadlines-table")
    return {
        row.attrs["data-category"]: {
            cell.attrs["data-field"]: cell.text() for cell in row.find_all("td") if "data-field" in cell.attrs
        }
        for row in table.find_all("tr")
        if "data-category" in row.attrs
    }


def test_the_overview_counts_the_open_requests_and_notices_with_their_deadlines(
    ledger_world: LedgerWorld,  # noqa: F811 - the fixture imported above
    viewer: dict[str, str],  # noqa: F811
) -> None:
    engine = sa.create_engine(ledger_world.url)
    late = datetime.now(UTC) - timedelta(days=40)  # a request received 40 days ago, still open: overdue
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO privacy_requests (id, customer_id, request_ref, kind, received_at)"
                " SELECT 900001, MIN(id), 'PR-LATE', 'access', :at FROM customers"
            ),
            {"at": late.replace(tzinfo=None)},
        )
        open_requests = c.execute(sa.text("SELECT COUNT(*) FROM privacy_requests WHERE completed_at IS NULL"))
        open_notices = c.execute(
            sa.text("SELECT COUNT(*) FROM third_party_data WHERE customer_notified_at IS NULL")
        )
        counts = {
            "privacy_requests": open_requests.scalar_one(),
            "third_party_data": open_notices.scalar_one(),
        }
    app = create_app(engine_factory=lambda: engine, business_engine_factory=lambda: engine)
    try:
        with TestClient(app) as client:
            response = client.get("/", headers=viewer)
        assert response.status_code == 200
        panel = _panel(response.text)
        assert {c: int(row["open"]) for c, row in panel.items()} == counts
        assert int(panel["privacy_requests"]["overdue"]) >= 1
        assert "PR-LATE" not in response.text and "900001" not in response.text  # counts, never records
    finally:
        with engine.begin() as c:
            c.execute(sa.text("DELETE FROM privacy_requests WHERE id = 900001"))
        engine.dispose()


def test_without_the_business_database_the_panel_says_so_and_the_page_still_renders(
    ledger_world: LedgerWorld,  # noqa: F811
    viewer: dict[str, str],  # noqa: F811
) -> None:
    def unavailable() -> sa.Engine:
        raise RuntimeError("no connection business_db")

    app = create_app(
        engine_factory=lambda: sa.create_engine(ledger_world.url), business_engine_factory=unavailable
    )
    with TestClient(app) as client:
        response = client.get("/", headers=viewer)
    assert response.status_code == 200
    section = dom(response.text).one("section", data_testid="deadlines")
    assert "The business database connection cannot be opened (RuntimeError)." in section.text()
