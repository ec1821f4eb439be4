"""The retention roles as data: each DAG's ``access_control``, and the sync of the roles' global permissions.

What Airflow does with these (403 on a trigger or an answer) is tested through the REST API
in ``tests/integration/test_roles_api.py``; here, that every DAG file uses its entry and that
the entries say what the privacy policy promises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from retention_airflow import roles
from retention_airflow.dag_defaults import dag_arguments
from retention_airflow.roles import (
    APPROVER,
    CREATE,
    DAG_ACCESS,
    DAG_RUNS,
    DAGS,
    EDIT,
    PRIVACY_STAFF,
    READ,
    ROLES,
    VIEWER,
    access_control,
    sync_roles,
)

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def bag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_every_dag_has_an_entry_and_uses_it(bag: Any) -> None:
    assert not bag.import_errors
    assert set(bag.dags) == set(DAG_ACCESS)
    wrong = {
        dag_id: dag.access_control
        for dag_id, dag in bag.dags.items()
        if dag.access_control != access_control(dag_id)
    }
    assert not wrong, f"DAGs whose access_control is not roles.access_control(dag_id): {wrong}"


def test_approvals_are_declared_where_a_dag_asks_a_human(bag: Any) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    asking = {
        dag_id for dag_id, dag in bag.dags.items() if any(isinstance(t, HITLOperator) for t in dag.tasks)
    }
    assert asking == {dag_id for dag_id, access in DAG_ACCESS.items() if access.approvals}
    assert asking, "the nightly run and the sweep ask approvers"


def test_only_privacy_staff_may_start_runs_and_see_the_per_customer_dags() -> None:
    for dag_id, access in DAG_ACCESS.items():
        control = access_control(dag_id)
        starters = {role for role, perms in control.items() if CREATE in perms[DAG_RUNS]}
        assert starters == ({PRIVACY_STAFF} if access.staff_trigger else set()), dag_id
        if access.personal:
            assert set(control) == {PRIVACY_STAFF}, f"{dag_id}: its runs name a customer"
        else:
            assert control[VIEWER] == {DAGS: {READ}, DAG_RUNS: {READ}}, dag_id


def test_only_approvers_may_answer_and_only_on_the_dags_that_ask() -> None:
    hitl_editors = {role for role, perms in roles.GLOBAL_PERMISSIONS.items() if (EDIT, roles.HITL) in perms}
    assert hitl_editors == {APPROVER}
    for dag_id, access in DAG_ACCESS.items():
        editable = EDIT in access_control(dag_id).get(APPROVER, {}).get(DAGS, set())
        assert editable == access.approvals, dag_id


def test_an_unknown_dag_is_refused_and_dag_arguments_passes_the_entry_on() -> None:
    from datetime import timedelta

    with pytest.raises(ValueError, match="no entry"):
        access_control("someone_elses_dag")
    limits = {"task_timeout": timedelta(hours=1), "run_timeout": timedelta(hours=2)}
    assert dag_arguments(dag_id="customer_erasure", **limits)["access_control"] == access_control(
        "customer_erasure"
    )
    assert "access_control" not in dag_arguments(**limits)


# -- sync against a security manager of FAB's shape -------------------------------------------------


@dataclass(frozen=True)
class Named:
    name: str


@dataclass(frozen=True)
class Perm:
    action: Named
    resource: Named


@dataclass
class Role:
    name: str
    permissions: list[Perm] = field(default_factory=list)


@dataclass
class FakeSecurityManager:
    """The five calls ``sync_roles`` makes on FAB's security manager, over lists."""

    roles: dict[str, Role] = field(default_factory=dict)

    def find_role(self, name: str) -> Role | None:
        return self.roles.get(name)

    def add_role(self, name: str) -> Role:
        self.roles[name] = Role(name)
        return self.roles[name]

    def create_permission(self, action: str, resource: str) -> Perm:
        return Perm(Named(action), Named(resource))

    def add_permission_to_role(self, role: Role, perm: Perm) -> None:
        role.permissions.append(perm)

    def remove_permission_from_role(self, role: Role, perm: Perm) -> None:
        role.permissions.remove(perm)

    def held(self, name: str) -> set[tuple[str, str]]:
        return {(p.action.name, p.resource.name) for p in self.roles[name].permissions}


def test_sync_creates_the_roles_with_exactly_their_global_permissions_and_is_idempotent() -> None:
    sm = FakeSecurityManager()
    first = sync_roles(sm)
    assert [(r.role, r.created) for r in first] == [(name, True) for name in ROLES]
    assert {name: sm.held(name) for name in ROLES} == dict(roles.GLOBAL_PERMISSIONS)
    again = sync_roles(sm)
    assert [(r.created, r.added, r.removed) for r in again] == [(False, 0, 0)] * len(ROLES)


def test_sync_removes_hand_added_global_permissions_but_keeps_the_dags_own() -> None:
    sm = FakeSecurityManager()
    viewer = sm.add_role(VIEWER)
    for action, resource in [
        (EDIT, roles.HITL),  # would let a viewer answer approvals
        (CREATE, DAG_RUNS),  # would let a viewer trigger every DAG
        (READ, "DAG:retention_nightly"),  # synced from the DAG's access_control: not sync's to touch
        (READ, "DAG Run:retention_nightly"),
    ]:
        sm.add_permission_to_role(viewer, sm.create_permission(action, resource))
    (result,) = [r for r in sync_roles(sm) if r.role == VIEWER]
    assert result.removed == 2
    assert sm.held(VIEWER) == roles.BASE | {
        (READ, "DAG:retention_nightly"),
        (READ, "DAG Run:retention_nightly"),
    }
