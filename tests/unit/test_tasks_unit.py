"""The Airflow edge's own decisions, without a scheduler: the approval gate fails closed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped

from retention.results import RunInfo
from retention.serde import to_json
from retention.stores import FILE_STORES
from retention_airflow.tasks import GROUP, CapApprovalOperator, PolicySetApprovalOperator, erase_task_id

RUN = RunInfo(
    run_id="scheduled__tonight",
    mode="due",
    now=datetime(2026, 6, 15, tzinfo=UTC),
    dry_run=False,
    policy_set_hash="b" * 64,
    categories=("a",),
    stores={"a": ("database",)},
    approved_policy_set="b" * 64,
)


class _TaskInstance:
    """The XComs an approval task reads: the category's plan, the run, the policy set's answer."""

    map_index = 0

    def __init__(self, plan: Any, run: RunInfo = RUN, policy_set: str | None = None) -> None:
        self._values = {
            "category.plan": plan,
            "prepare_run": to_json(run),
            "approve_policy_set": {"chosen_options": [policy_set]} if policy_set else None,
        }

    def xcom_pull(self, task_ids: str, **_: Any) -> Any:
        return self._values[task_ids]


class _PushingTaskInstance(_TaskInstance):
    def __init__(self, plan: Any, run: RunInfo, map_index: int) -> None:
        super().__init__(plan, run)
        self.map_index = map_index
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _gate_with_erase_tasks() -> CapApprovalOperator:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, TaskGroup

    with DAG("gate", schedule=None), TaskGroup(GROUP):
        gate = CapApprovalOperator(task_id="approve")
        gate >> [EmptyOperator(task_id=erase_task_id(store)) for store in FILE_STORES]
    return gate


def test_an_approval_skips_the_erase_tasks_of_file_stores_its_category_does_not_use() -> None:
    run = dataclasses.replace(RUN, stores={"a": ("s3", "database")})
    ti = _PushingTaskInstance({"category": "a", "needs_approval": False}, run, map_index=3)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        _gate_with_erase_tasks().execute({"ti": ti})
    unused = sorted(f"{GROUP}.{erase_task_id(s)}" for s in FILE_STORES if s != "s3")
    assert skipped.value.tasks == [(task_id, 3) for task_id in unused]
    assert ti.pushed["return_value"]["chosen_options"] == [CapApprovalOperator.APPROVE]


def test_outside_a_mapped_group_an_approval_skips_nothing() -> None:
    ti = _PushingTaskInstance({"category": "a", "needs_approval": False}, RUN, map_index=-1)
    assert _gate_with_erase_tasks().execute({"ti": ti})["automatic"] and not ti.pushed


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


@pytest.mark.parametrize("answer", [CapApprovalOperator.REJECT, None])
def test_under_a_changed_policy_set_not_approved_no_category_is_cleared(answer: str | None) -> None:
    """Rejected, or no answer at all: every category's gate skips, even under its cap."""
    changed = dataclasses.replace(RUN, approved_policy_set="a" * 64)
    ti = _TaskInstance({"category": "a", "needs_approval": False}, changed, answer)
    with pytest.raises(AirflowSkipException, match="policy set was not approved"):
        CapApprovalOperator(task_id="approve").execute({"ti": ti})


def test_an_approved_policy_change_lets_the_category_gate_decide() -> None:
    changed = dataclasses.replace(RUN, approved_policy_set="a" * 64)
    ti = _TaskInstance({"category": "a", "needs_approval": False}, changed, CapApprovalOperator.APPROVE)
    assert CapApprovalOperator(task_id="approve").execute({"ti": ti})["automatic"]


@pytest.mark.parametrize(
    "run",
    [
        RUN,  # the approved set
        dataclasses.replace(RUN, approved_policy_set=None),  # the first set
        dataclasses.replace(RUN, approved_policy_set="a" * 64, dry_run=True),  # a dry run erases nothing
    ],
)
def test_the_policy_set_gate_approves_itself_when_nothing_changed(run: RunInfo) -> None:
    answer = PolicySetApprovalOperator(task_id="approve_policy_set").execute({"ti": _TaskInstance(None, run)})
    assert answer["chosen_options"] == [PolicySetApprovalOperator.APPROVE] and answer["automatic"]
