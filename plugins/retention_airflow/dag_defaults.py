"""What every retention DAG shares: safe retries, a time limit on every task and run, the alert.

Every step is idempotent, so a failed try is retried. Every task has an ``execution_timeout``:
a store that hangs (a stalled connection, a lock that is never released) fails the task, which
alerts and is retried, instead of holding the run forever. Every DAG also has a
``dagrun_timeout`` longer than its approval window, and the same alert on the run: with
``max_active_runs=1`` a run stuck anywhere would otherwise stop every later night without a
word (alerts fire only on failure). Approval tasks wait for a human by their
``response_timeout`` and take ``execution_timeout=None`` (``APPROVAL``). Given the DAG's id,
``dag_arguments`` also returns its ``access_control``: who may read, trigger and approve it
(``retention_airflow.roles``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from retention_airflow.notify import RetentionAlert
from retention_airflow.roles import access_control

APPROVAL: dict[str, Any] = {"retries": 0, "execution_timeout": None}
"""Arguments of an approval task: a human's wait is bounded by ``response_timeout`` alone."""


def dag_arguments(
    *,
    dag_id: str | None = None,
    task_timeout: timedelta,
    run_timeout: timedelta,
    retries: int = 3,
    retry_delay: timedelta = timedelta(minutes=2),
    max_retry_delay: timedelta | None = timedelta(minutes=30),
    backoff: bool = True,
    run_alert: bool = True,
) -> dict[str, Any]:
    """The ``@dag`` keyword arguments for retries, time limits, alerts and roles (``**dag_arguments(...)``).

    ``dag_id`` names the DAG in ``roles.DAG_ACCESS``; without it the DAG has no ``access_control``
    and only Airflow's built-in roles reach it. ``run_alert=False`` leaves the run-level alert out
    for a DAG with required params (the per-customer DAGs): Airflow 3.3 builds a run callback's
    context from the serialized DAG's params and fails on a param without a default before the
    callback runs (seen under ``dag.test()``); such a DAG's tasks still alert.
    """
    if task_timeout >= run_timeout:
        raise ValueError("a task's time limit must be shorter than its run's")
    task_args: dict[str, Any] = {
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": backoff,
        "execution_timeout": task_timeout,
        "on_failure_callback": RetentionAlert(),
    }
    if backoff and max_retry_delay is not None:
        task_args["max_retry_delay"] = max_retry_delay
    arguments: dict[str, Any] = {"default_args": task_args, "dagrun_timeout": run_timeout}
    if run_alert:
        arguments["on_failure_callback"] = RetentionAlert()
    if dag_id is not None:
        arguments["access_control"] = access_control(dag_id)
    return arguments
