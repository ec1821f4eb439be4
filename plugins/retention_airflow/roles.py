"""Who may do what with the retention DAGs: three Airflow roles (FAB auth manager), as data.

The privacy policy promises that only staff who need it get access to personal data. Airflow's
FAB auth manager decides per role: a role's global permissions (``Task Logs``, ``HITL Detail``,
...) count only on the DAGs the role may read, and each DAG's ``access_control`` (from
``access_control(dag_id)``, passed by ``dag_defaults.dag_arguments``) says which of our roles
may read it, trigger it (``can_create`` on its runs and ``can_edit`` on the DAG) or answer its
approvals (``can_edit`` on the DAG and on ``HITL Detail``). Airflow's API server checks these
before it acts: a trigger or an answer without them is refused with 403 and nothing runs.

- ``retention_viewer`` sees the DAGs whose runs name no customer (the nightly run, the sweep,
  the deadlines, housekeeping, the replay), their runs, task states, logs and approval forms,
  and the monitoring page. The per-customer DAGs stay hidden: their runs' parameters and logs
  hold the customer id.
- ``privacy_staff`` sees every retention DAG and triggers the ones that act on a customer's
  request or on personal data on purpose (erasure, access report, housekeeping, replay).
- ``retention_approver`` sees what a viewer sees and answers the over-cap approvals of the
  nightly run and the sweep. Approvers are the people given this role; HITL's
  ``assigned_users`` is not used, because the FAB auth manager knows users by database ids
  that a DAG file cannot name.

A person may hold several roles. Airflow's built-in roles (``Admin``, ``Op``, ``User``,
``Viewer``) have global permissions on every DAG: give them to administrators only.
``python -m retention_airflow.roles sync`` creates the three roles and sets their global
permissions (docker-compose's ``airflow-init`` runs it before the DAGs are parsed, which
needs the roles to exist); the DAG processor keeps the per-DAG permissions in line with each
DAG's ``access_control``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

VIEWER = "retention_viewer"
PRIVACY_STAFF = "privacy_staff"
APPROVER = "retention_approver"
ROLES = (VIEWER, PRIVACY_STAFF, APPROVER)

READ, EDIT, CREATE, MENU = "can_read", "can_edit", "can_create", "menu_access"
DAGS, DAG_RUNS, HITL = "DAGs", "DAG Runs", "HITL Detail"
DAG_LEVEL_PREFIXES = ("DAG:", "DAG Run:")
"""FAB's per-DAG resources: owned by the DAGs' ``access_control``, never touched by ``sync``."""


@dataclass(frozen=True)
class DagAccess:
    """What the roles may do with one DAG."""

    personal: bool
    """Its runs' parameters or logs name a customer: hidden from viewers and approvers."""
    staff_trigger: bool
    """Privacy staff may trigger it."""
    approvals: bool
    """It asks approvers (HITL) before erasing over a cap."""


DAG_ACCESS: Mapping[str, DagAccess] = {
    "retention_nightly": DagAccess(personal=False, staff_trigger=False, approvals=True),
    "retention_sweep": DagAccess(personal=False, staff_trigger=False, approvals=True),
    "privacy_deadlines": DagAccess(personal=False, staff_trigger=False, approvals=False),
    "retention_housekeeping": DagAccess(personal=False, staff_trigger=True, approvals=False),
    "replay_erasures": DagAccess(personal=False, staff_trigger=True, approvals=False),
    "customer_erasure": DagAccess(personal=True, staff_trigger=True, approvals=False),
    "customer_access_report": DagAccess(personal=True, staff_trigger=True, approvals=False),
}
"""Every retention DAG; ``tests/unit/test_roles.py`` checks that each DAG file uses its entry."""

Permission = tuple[str, str]
"""(action, resource), as FAB names them."""

BASE: frozenset[Permission] = frozenset(
    {
        (READ, "Website"),
        (READ, "My Profile"),
        (EDIT, "My Profile"),
        (READ, "My Password"),
        (EDIT, "My Password"),
        (MENU, "Browse"),
        (MENU, DAGS),
        (MENU, DAG_RUNS),
        (MENU, "Task Instances"),
        (MENU, HITL),
        (MENU, "Assets"),
        (READ, "Task Instances"),
        (READ, "Task Logs"),
        (READ, "XComs"),
        (READ, "DAG Code"),
        (READ, "DAG Dependencies"),
        (READ, "DAG Versions"),
        (READ, "DAG Warnings"),
        (READ, "Assets"),
        (READ, HITL),
    }
)
"""What every retention role may read; only on the DAGs its ``access_control`` lets it read."""

GLOBAL_PERMISSIONS: Mapping[str, frozenset[Permission]] = {
    VIEWER: BASE,
    PRIVACY_STAFF: BASE,
    APPROVER: BASE | {(EDIT, HITL)},
}
"""Each role's permissions on Airflow's global resources."""


def access_control(dag_id: str) -> dict[str, dict[str, set[str]]]:
    """The ``access_control`` of the DAG ``dag_id``: per role, the actions on the DAG and on its runs."""
    try:
        access = DAG_ACCESS[dag_id]
    except KeyError:
        raise ValueError(f"DAG {dag_id!r} has no entry in retention_airflow.roles.DAG_ACCESS") from None
    staff_dag, staff_runs = {READ}, {READ}
    if access.staff_trigger:
        staff_dag, staff_runs = {READ, EDIT}, {READ, CREATE}
    control = {PRIVACY_STAFF: {DAGS: staff_dag, DAG_RUNS: staff_runs}}
    if not access.personal:
        control[VIEWER] = {DAGS: {READ}, DAG_RUNS: {READ}}
        control[APPROVER] = {DAGS: {READ, EDIT} if access.approvals else {READ}, DAG_RUNS: {READ}}
    return control


@dataclass(frozen=True)
class SyncResult:
    """What ``sync_roles`` changed in one role."""

    role: str
    created: bool
    added: int
    removed: int


def sync_roles(security_manager: Any) -> list[SyncResult]:
    """Create the retention roles and set their global permissions to ``GLOBAL_PERMISSIONS`` exactly.

    Idempotent. Per-DAG permissions are left to the DAGs' ``access_control``; permissions an
    administrator added by hand on other global resources are removed, so the roles mean what
    this module says.
    """
    results = []
    for name in ROLES:
        role = security_manager.find_role(name)
        created = role is None
        if role is None:
            role = security_manager.add_role(name)
        wanted = GLOBAL_PERMISSIONS[name]
        held = {(p.action.name, p.resource.name): p for p in role.permissions}
        for action, resource in sorted(wanted - held.keys()):
            security_manager.add_permission_to_role(
                role, security_manager.create_permission(action, resource)
            )
        stale = [
            perm
            for key, perm in held.items()
            if key not in wanted and not key[1].startswith(DAG_LEVEL_PREFIXES)
        ]
        for perm in stale:
            security_manager.remove_permission_from_role(role, perm)
        results.append(SyncResult(name, created, len(wanted - held.keys()), len(stale)))
    return results


def _sync() -> int:
    """Sync the roles in the metadata DB of this environment's Airflow (FAB auth manager)."""
    from airflow.configuration import conf
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    conf.load_providers_configuration()
    with get_application_builder() as appbuilder:
        for result in sync_roles(appbuilder.sm):
            verb = "created" if result.created else "updated"
            print(f"role {result.role} {verb}: +{result.added} -{result.removed} global permissions")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m retention_airflow.roles sync``: create the retention roles (run after ``db migrate``)."""
    parser = argparse.ArgumentParser(
        prog="python -m retention_airflow.roles", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("command", choices=["sync"])
    parser.parse_args(argv)
    return _sync()


if __name__ == "__main__":
    sys.exit(main())
