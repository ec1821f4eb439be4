"""The sweep's approval gate, without a scheduler: it fails closed and asks only over the cap."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from retention.results import Decision
from retention_airflow.sweep_tasks import PLAN_FIELD, SweepApprovalOperator, _decision


class _TaskInstance:
    map_index = 3

    def __init__(self, plan: Any) -> None:
        self._plan = plan
        self.asked: list[dict[str, Any]] = []

    def xcom_pull(self, **kwargs: Any) -> Any:
        self.asked.append(kwargs)
        return self._plan


def test_an_approval_without_a_plan_fails_instead_of_approving() -> None:
    with pytest.raises(AirflowFailException, match="no plan"):
        SweepApprovalOperator(task_id="approve").execute({"ti": _TaskInstance(None)})


@pytest.mark.parametrize(
    "plan",
    [
        {"root": "s3:b/*", "needs_approval": False},
        {"root": "s3:b/*", "needs_approval": True, "dry_run": True},
    ],
)
def test_a_plan_under_the_cap_or_a_dry_run_approves_itself(plan: dict[str, Any]) -> None:
    ti = _TaskInstance(plan)
    answer = SweepApprovalOperator(task_id="approve").execute({"ti": ti})
    assert answer["chosen_options"] == [SweepApprovalOperator.APPROVE] and answer["automatic"]
    assert ti.asked == [{"task_ids": "root.plan", "map_indexes": 3}]


def test_the_form_shows_the_roots_own_plan_and_answers_read_back() -> None:
    assert "task_ids='root.plan', map_indexes=ti.map_index" in PLAN_FIELD.format(field="body")
    assert _decision({"chosen_options": ["Approve"]}) is Decision.APPROVED
    assert _decision({"chosen_options": ["Reject"]}) is Decision.REJECTED
    assert _decision(None) is None and _decision({"chosen_options": []}) is None
