"""Tasks of the ``customer_access_report`` DAG: one customer's access report (GDPR Art. 15 and 20).

``check_access_request`` re-checks the params against the deployment's customer-id format and the
policies against the live schema before anything is read; ``write_access_report`` makes the report
with ``retention.access.make_report`` and stores it in the receipts bucket. XCom carries counts,
the policy set's hash and the report's S3 location, never the customer id or a value.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from retention_airflow.tasks import engine_errors

log = logging.getLogger(__name__)


def _request() -> tuple[dict[str, Any], Any]:
    """The run's params, checked against the deployment's format, and the run's clock."""
    from retention.access import check_access_params
    from retention.params import parse_as_of
    from retention_airflow import clients

    ctx = get_current_context()
    params = dict(ctx["params"])
    check_access_params(params, clients.policy_set().subject)
    return params, parse_as_of(None, ctx["dag_run"].run_after)


@task
@engine_errors
def check_access_request() -> dict[str, Any]:
    """Refuse a customer id outside the deployment's format, a policy set that does not fit the live
    schema, and a reports policy that would not erase the report; read nothing of the customer."""
    from retention import access
    from retention_airflow import clients

    params, now = _request()
    ctx = get_current_context()
    with clients.open_context(
        run_id=ctx["run_id"], mode="subject", now=now, dry_run=False, subject=params["customer_id"]
    ) as rctx:
        checked = access.prepare(rctx, clients.settings().receipts_bucket)
    log.info("SUMMARY access report request checked: categories=%s", checked["categories"])
    return checked


@task(trigger_rule="all_success")
@engine_errors
def write_access_report(checked: dict[str, Any]) -> dict[str, Any]:
    """Make the report (JSON, Danish and English Markdown, optionally files.zip), store it in the
    receipts bucket under a random prefix with its own retention, and record it in the ledger."""
    from retention import access
    from retention_airflow import clients

    params, now = _request()
    ctx = get_current_context()
    cfg = clients.settings()
    with ExitStack() as stack:
        rctx = stack.enter_context(
            clients.open_context(
                run_id=ctx["run_id"], mode="subject", now=now, dry_run=False, subject=params["customer_id"]
            )
        )
        if rctx.policies.hash != checked.get("policy_set_hash"):
            raise AirflowFailException("the policy files changed since the request was checked; start again")
        used = {loc.store for p in rctx.policies.policies for loc in p.file_locations()}
        s3 = clients.s3_client()
        trees = {"sftp": stack.enter_context(clients.sftp_client())} if "sftp" in used else {}
        report = access.make_report(
            rctx,
            params["request_ref"],
            output=access.ReportOutput(client=s3, bucket=cfg.receipts_bucket),
            clients=access.FileClients(s3=s3, trees=trees),
            include_contents=bool(params.get("include_contents")),
        )
    log.info(
        "SUMMARY request=%s access report items=%s shared=%s files=%s prefix=%s",
        params["request_ref"],
        report.items,
        report.shared,
        len(report.files),
        report.prefix,
    )
    return report.summary()
