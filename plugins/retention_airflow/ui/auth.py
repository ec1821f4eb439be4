"""Who may see the monitoring page: the caller's Airflow JWT, validated by Airflow's own auth manager.

The API server mounts plugin FastAPI apps without Airflow's authentication, so every page
checks for itself. As in Airflow's API, an ``Authorization: Bearer`` token wins over the
``_token`` cookie that the Airflow UI keeps after login (it reaches this app because the
page is served from the same origin, also inside the UI's iframe). A caller must be allowed
to read the nightly runs (``retention_viewer`` may): the ledger holds counts and pseudonyms
only, while the runs of the per-customer DAGs (their parameters name the customer) are
privacy staff's. The "Find a
customer" page also requires the permission to trigger the customer-erasure DAG (create its
runs): it is the first step of an erasure request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import Request

log = logging.getLogger(__name__)

COOKIE_NAME = "_token"
"""Airflow's ``COOKIE_NAME_JWT_TOKEN`` (``airflow.api_fastapi.auth.managers.base_auth_manager``)."""

RETENTION_DAGS = ("retention_nightly",)
ERASURE_DAG = "customer_erasure"


class Refused(Exception):
    """The request may not see the page; ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def token_of(request: Request) -> str | None:
    """The JWT the caller presented: the bearer token if any, else the UI's cookie."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(COOKIE_NAME) or None


def airflow_auth_manager() -> Any:
    """The API server's auth manager (initialised before plugin apps receive requests)."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def authorised_user(request: Request, auth_manager: Callable[[], Any] = airflow_auth_manager) -> Any:
    """The user behind the request's token if it is valid and may read the retention runs, else Refused."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from jwt import InvalidTokenError

    token = token_of(request)
    if token is None:
        raise Refused(401, "not authenticated")
    manager = auth_manager()
    try:
        user = await manager.get_user_from_token(token)
    except InvalidTokenError as e:
        # the error's class only: its message may echo claims of a forged token
        log.info("retention page: token refused (%s)", type(e).__name__)
        raise Refused(401, "invalid or expired token") from None
    allowed = all(
        manager.is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
        )
        for dag_id in RETENTION_DAGS
    )
    if not allowed:
        log.info("retention page: user without read access to the retention runs refused")
        raise Refused(403, "not allowed to read the retention runs")
    return user


async def erasure_user(request: Request, auth_manager: Callable[[], Any] = airflow_auth_manager) -> Any:
    """The authorised user (``authorised_user``) who may also trigger ``customer_erasure``; else Refused."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    user = await authorised_user(request, auth_manager)
    allowed = auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=ERASURE_DAG), user=user
    )
    if not allowed:
        log.info("retention page: user without permission to trigger %s refused", ERASURE_DAG)
        raise Refused(403, f"not allowed to trigger {ERASURE_DAG}")
    return user
