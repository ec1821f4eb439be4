"""Tasks of the ``privacy_deadlines`` DAG: the daily watch of the legal time limits the policies declare.

A policy's ``deadline`` block (``retention.deadlines.DeadlineRule``) names a time limit on its
records: the 10-day notice for data obtained from a third party, the one-month answer to a
privacy request. ``watch_deadline`` applies it with ``retention.watch.check_deadlines``: counts
and internal keys, never personal data. Anything overdue or that cannot be judged fails the
task (``DeadlineBreach`` is terminal: retrying does not make a late answer timely), which alerts.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from airflow.sdk import get_current_context, task

from retention_airflow.tasks import POOL_DATABASE, engine_errors

log = logging.getLogger(__name__)


@task
@engine_errors
def deadline_categories() -> list[str]:
    """The categories whose policy declares a deadline (what ``watch_deadline`` is mapped over)."""
    from retention_airflow import clients

    policies = clients.policy_set()
    return [c for c in policies.ids if policies.get(c).deadline is not None]


@task(pool=POOL_DATABASE, map_index_template="{{ category }}", retries=2)
@engine_errors
def watch_deadline(category: str) -> dict[str, Any]:
    """Check one category's open items against its deadline; fail if any is overdue or unclear."""
    from retention.params import parse_as_of
    from retention.watch import check_deadlines
    from retention_airflow import clients

    ctx = get_current_context()
    ctx["category"] = category  # type: ignore[typeddict-unknown-key]  # names the mapped instance in the UI
    policy = clients.policy_set().get(category)
    rule = policy.deadline
    if rule is None:  # the policy changed since deadline_categories ran: nothing to watch
        return {}
    now = parse_as_of(ctx["params"].get("as_of"), ctx["dag_run"].run_after)
    engine = clients.business_engine()
    report = check_deadlines(
        engine,
        policy.records.table,
        policy.records.key,
        rule,
        now,
        # SQLite keeps no time zone; the business data is written in UTC (as the demo's is).
        naive_tz=UTC if engine.dialect.name == "sqlite" else None,
    )
    summary = report.summary()
    log.info("SUMMARY category=%s %s", category, report.message())
    ctx["ti"].xcom_push(key="report", value=summary)
    report.raise_for_attention()
    return summary
