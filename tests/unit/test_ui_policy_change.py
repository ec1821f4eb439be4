"""The monitoring page says when the deployed policy set waits for approval (#14)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from retention.ledger import Ledger
from retention.policy import load_policies
from tests.ledger_entries import policy_set_approved
from tests.unit.test_ui_app import auth_manager, dom, viewer  # noqa: F401 - fixtures

POLICIES = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


def _overview(url: str, headers: dict[str, str]) -> str:
    from fastapi.testclient import TestClient

    from retention_airflow.ui import create_app

    def no_business_db() -> sa.Engine:
        raise RuntimeError("not in this test")

    app = create_app(
        engine_factory=lambda: sa.create_engine(url),
        business_engine_factory=no_business_db,
        policies_factory=lambda: load_policies(POLICIES),
    )
    with TestClient(app) as client:
        response = client.get("/", headers=headers)
    assert response.status_code == 200
    return response.text


def test_a_deployed_policy_set_that_differs_from_the_approved_one_is_shown_as_waiting(
    tmp_path: Path,
    viewer: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(sa.create_engine(url))
    ledger.ensure_schema()
    deployed = load_policies(POLICIES).hash
    assert not dom(_overview(url, viewer)).find_all("p", data_testid="policy-change"), "none approved yet"

    ledger.append(policy_set_approved("0" * 64))
    [shown] = dom(_overview(url, viewer)).find_all("p", data_testid="policy-change")
    assert (shown.attrs["data-deployed"], shown.attrs["data-approved"]) == (deployed, "0" * 64)
    assert "approve_policy_set" in shown.text()

    ledger.append(policy_set_approved(deployed))
    assert not dom(_overview(url, viewer)).find_all("p", data_testid="policy-change"), (
        "approved: nothing waits"
    )
