"""The monitoring page's *Pseudonym keys* panel (#13): which years still link, and the next destruction."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from retention.keyring import Keyring
from retention.ledger import Ledger
from retention.policy import Accountability, PolicySet, PseudonymKeys
from tests.unit.test_ui_app import auth_manager, dom, viewer  # noqa: F401 - fixtures

MASTER = b"the-master-key-of-this-test-0123"


def test_the_overview_lists_key_years_linkable_or_destroyed_and_the_next_destruction(
    tmp_path: Path,
    viewer: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    from fastapi.testclient import TestClient

    from retention_airflow.ui import create_app

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = sa.create_engine(url)
    Ledger(engine).ensure_schema()
    keyring = Keyring(engine, MASTER)
    keyring.ensure_schema()
    for year in ("2019", "2022", "2021", "2026"):
        keyring.key(year)
    destroyed_at = datetime(2026, 1, 2, 3, 30, tzinfo=UTC)
    keyring.destroy("2019", now=destroyed_at, keep="P6Y", run_id="housekeeping_a")
    policies = PolicySet((), {}, accountability=Accountability(pseudonym_keys=PseudonymKeys(keep="P4Y")))

    def no_business_db() -> sa.Engine:
        raise RuntimeError("not in this test")

    app = create_app(
        engine_factory=lambda: sa.create_engine(url),
        business_engine_factory=no_business_db,
        policies_factory=lambda: policies,
    )
    with TestClient(app) as client:
        response = client.get("/", headers=viewer)
    assert response.status_code == 200
    section = dom(response.text).one("section", data_testid="pseudonym-keys")
    rows = {
        row.attrs["data-period"]: (
            row.one("td", data_field="state").text(),
            row.one("td", data_field="destroyed").text(),
        )
        for row in section.one("table").find_all("tr")
        if "data-period" in row.attrs
    }
    assert list(rows) == ["2019", "2021", "2022", "2026"]
    assert rows["2019"] == ("no longer linkable", "destroyed at 2026-01-02 03:30:00 UTC")
    assert rows["2021"] == ("linkable", "due 2026-01-01"), "due, not yet destroyed"
    assert rows["2026"] == ("linkable", "due 2031-01-01")
    assert section.one("p", data_field="next-destruction").text() == "Next destruction: 2026-01-01."
    assert "P4Y after the year" in section.text()
    assert MASTER.decode() not in response.text


def test_before_the_first_key_the_panel_says_so(
    tmp_path: Path,
    viewer: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    from fastapi.testclient import TestClient

    from retention_airflow.ui import create_app

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(sa.create_engine(url)).ensure_schema()
    app = create_app(engine_factory=lambda: sa.create_engine(url), policies_factory=lambda: PolicySet((), {}))
    with TestClient(app) as client:
        response = client.get("/", headers=viewer)
    section = dom(response.text).one("section", data_testid="pseudonym-keys")
    assert "No pseudonym key has been made yet" in section.text()
