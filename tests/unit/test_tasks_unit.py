"""The Airflow edge's own decisions, without a scheduler: the approval gate fails closed."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from retention_airflow.tasks import CapApprovalOperator


class _TaskInstance:
    map_index = 0

    def __init__(self, plan: Any) -> None:
        self._plan = plan

    def xcom_pull(self, **_: Any) -> Any:
        return self._plan


def test_an_approval_without_a_plan_fails_instead_of_approving() -> None:
    """A plan task that failed or was marked done by hand leaves no plan: nothing is cleared."""
    operator = CapApprovalOperator(task_id="approve")
    with pytest.raises(AirflowFailException, match="no plan"):
        operator.execute({"ti": _TaskInstance(None)})


@pytest.mark.parametrize(
    "plan",
    [{"category": "a", "needs_approval": False}, {"category": "a", "needs_approval": True, "dry_run": True}],
)
def test_a_plan_under_its_cap_or_a_dry_run_approves_itself(plan: dict[str, Any]) -> None:
    answer = CapApprovalOperator(task_id="approve").execute({"ti": _TaskInstance(plan)})
    assert answer["chosen_options"] == [CapApprovalOperator.APPROVE] and answer["automatic"]
