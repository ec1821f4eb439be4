"""Failure alerts for ops, through an Airflow connection, without personal data.

``RetentionAlert`` posts a small JSON document (DAG, run, task, try, state, a log link)
to the HTTP connection ``retention_alerts`` (a webhook: Slack/Teams/incident tool). The
message never carries params, XCom or exception text, which could name a customer.
Without that connection it logs a warning instead of failing the callback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.sdk import BaseNotifier

from retention_airflow.clients import ALERTS

log = logging.getLogger(__name__)


class RetentionAlert(BaseNotifier):
    """Notify ops of a failed (or timed-out) task or run through the ``retention_alerts`` HTTP connection."""

    template_fields = ()

    def __init__(self, conn_id: str = ALERTS, endpoint: str = "") -> None:
        super().__init__()
        self.conn_id = conn_id
        self.endpoint = endpoint

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render (no template fields); the base class would ask the DAG for a Jinja
        environment, which a run-level callback's serialized DAG does not have."""
        return None

    @staticmethod
    def payload(context: Any) -> dict[str, Any]:
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        return {
            "source": "alleskar-retention",
            "dag_id": getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None),
            "run_id": context.get("run_id"),
            "task_id": getattr(ti, "task_id", None),
            "map_index": getattr(ti, "map_index", None),
            "try_number": getattr(ti, "try_number", None),
            "state": "failed",
            "message": (
                "A retention task or run failed or ran out of time: "
                "open it in the Airflow UI and follow the runbook."
            ),
        }

    def notify(self, context: Any) -> None:
        from airflow.providers.http.hooks.http import HttpHook

        body = self.payload(context)
        try:
            HttpHook(method="POST", http_conn_id=self.conn_id).run(
                endpoint=self.endpoint,
                data=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
        except Exception as e:  # noqa: BLE001 - an alert must never mask the failure it reports
            log.warning("retention alert not delivered via %s: %s", self.conn_id, type(e).__name__)
