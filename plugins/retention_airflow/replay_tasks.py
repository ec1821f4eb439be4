"""The tasks of ``replay_erasures``: erase again, after a backup is restored, everyone erased since.

``find_tombstones`` checks ``restored_to`` (the moment the restored backup was taken) and lists the
tombstones of erasures completed after it: ids only, never a customer id, go to XCom.
``replay_erasure`` (mapped, one per tombstone) opens its tombstone with the key and runs that
customer's erasure in one process, by the same rules as ``customer_erasure``
(``retention.flow.run_all``), with its own receipt marked as a replay after restore. It leaves no
new tombstone: the original one names the customer, with the original time, until its own
retention ends. ``replay_nightly`` then runs the nightly retention in one process, with the
nightly's caps: a category over its cap erases nothing and the task fails, telling the operator
to run ``retention_nightly`` and approve there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from retention.errors import TerminalError
from retention.stores import DATABASE
from retention_airflow.tasks import LEDGER_ASSET, engine_errors, receipt_sink

log = logging.getLogger(__name__)

RESTORED_TO_SCHEMA: dict[str, Any] = {
    "type": ["null", "string"],
    "format": "date-time",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$",
}
"""``restored_to`` in the trigger form: an ISO 8601 date-time with its zone (checked again, with the clock,
by ``parse_restored_to``, which also refuses it empty). Empty by default rather than required: a required
param without a default breaks the DAG's failure callback, and with it the alert."""


def parse_restored_to(value: Any, now: datetime) -> datetime:
    """The moment the restored backup was taken: an ISO 8601 date-time with its zone, not after ``now``."""
    if not isinstance(value, str) or not value:
        raise TerminalError("restored_to is required: the moment the restored backup was taken")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise TerminalError("restored_to is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise TerminalError("restored_to needs a time zone (e.g. 2026-06-14T02:00:00+02:00)")
    if moment > now:
        raise TerminalError("restored_to lies in the future: a backup cannot have been taken then")
    return moment.astimezone(UTC)


def _clock() -> tuple[datetime, datetime, bool]:
    """``restored_to``, the run's clock (``as_of`` or the run's time) and ``dry_run``, checked."""
    from retention.params import parse_as_of

    ctx = get_current_context()
    params = ctx["params"]
    if not isinstance(params.get("dry_run"), bool):
        raise TerminalError("dry_run must be true or false")
    restored_to = parse_restored_to(params.get("restored_to"), datetime.now(UTC))
    return restored_to, parse_as_of(params.get("as_of"), ctx["dag_run"].run_after), params["dry_run"]


def _file_stores(policies: Any) -> tuple[str, ...]:
    return tuple(sorted({s for p in policies.policies for s in p.stores() if s != DATABASE}))


@task
@engine_errors
def find_tombstones() -> list[int]:
    """Check the params and the key; return the ids of the tombstones newer than ``restored_to``."""
    from retention_airflow.tombstone_store import tombstones

    restored_to, _now, dry_run = _clock()
    with tombstones(with_key=True) as graves:
        found = graves.since(restored_to)
    log.info("SUMMARY restored_to=%s tombstones=%d dry_run=%s", restored_to.isoformat(), len(found), dry_run)
    return [t.id for t in found]


def _erasing(
    run_id: str, categories: Sequence[str], dry_run: bool
) -> contextlib.AbstractContextManager[None]:
    """The leases of every category a whole in-process run erases (``retention.locks``): another
    run erasing one of them makes this one wait its turn (none in a dry run)."""
    from retention_airflow import clients

    if dry_run:
        return contextlib.nullcontext()
    return clients.leases([f"category:{c}" for c in categories], owner=run_id, step="replay")


@task(map_index_template="{{ tombstone_id }}")
@engine_errors
def replay_erasure(tombstone_id: int) -> dict[str, Any]:
    """Erase again the customer of one tombstone, with a receipt marked as a replay after restore."""
    from retention import flow
    from retention_airflow import clients
    from retention_airflow.tombstone_store import tombstones

    restored_to, now, dry_run = _clock()
    with tombstones(with_key=True) as graves:
        grave = graves.open(tombstone_id)
    ref = grave.ref
    policies = clients.policy_set()
    request = flow.ReceiptRequest(
        request_ref=ref.request_ref,
        reason=ref.reason,
        replay=flow.Replay(restored_to=restored_to.isoformat(), original_run_id=ref.run_id),
    )
    clients.check_holds(policies.ids, now, policies.subject)
    run_id = f"{get_current_context()['run_id']}.replay-{tombstone_id}"
    with (
        _erasing(run_id, policies.ids, dry_run),
        clients.open_context(
            run_id=run_id,
            mode="subject",
            now=now,
            dry_run=dry_run,
            subject=grave.subject,
            reason=ref.reason,
            stores=_file_stores(policies),
        ) as ctx,
    ):
        outcome = flow.run_all(ctx, request=request, sink=receipt_sink(ctx, grave.subject))
    receipt = outcome.receipt or {}
    log.info(
        "SUMMARY tombstone=%s request=%s erased=%s anonymised=%s kept=%s verified=%s",
        tombstone_id,
        ref.request_ref,
        receipt["totals"]["erased"],
        receipt["totals"]["anonymised"],
        receipt["totals"]["kept"],
        receipt["verified"],
    )
    return {
        "tombstone": tombstone_id,
        "request_ref": ref.request_ref,
        "verified": receipt["verified"],
        "totals": receipt["totals"],
        "location": receipt.get("location", {}),
    }


@task(trigger_rule="none_failed", outlets=[LEDGER_ASSET])
@engine_errors
def replay_nightly() -> dict[str, Any]:
    """The nightly retention, in one process, after the replays; over a cap it erases nothing and fails."""
    from retention import flow
    from retention.serde import to_json
    from retention_airflow import clients
    from retention_airflow.tombstone_store import tombstones

    _restored_to, now, dry_run = _clock()
    policies = clients.policy_set()
    over_cap: list[str] = []

    def approved(plan: Any) -> bool:
        over_cap.append(plan.category)
        return False

    clients.check_holds(policies.ids, now, policies.subject)
    run_id = f"{get_current_context()['run_id']}.nightly"
    with (
        _erasing(run_id, policies.ids, dry_run),
        tombstones(with_key=False) as graves,
        clients.open_context(
            run_id=run_id,
            mode="due",
            now=now,
            dry_run=dry_run,
            stores=_file_stores(policies),
        ) as ctx,
    ):
        approved_set = ctx.ledger.approved_policy_set() if ctx.ledger is not None else None
        if not dry_run and approved_set not in (None, ctx.policies.hash):
            raise AirflowFailException(
                "the deployed policy set is not the one last approved, nothing erased by the nightly part; "
                "the replayed erasures are done. Trigger retention_nightly and approve the policy set there."
            )
        try:
            outcome = flow.run_all(
                ctx, approved=approved, backlog_runs=clients.settings().backlog_alert_after, tombstones=graves
            )
        except TerminalError:
            if not over_cap:
                raise
            outcome = None
    if over_cap:
        raise AirflowFailException(
            f"over the cap, nothing erased in: {', '.join(sorted(over_cap))}; the replayed erasures are "
            "done. Trigger retention_nightly now and approve these categories there."
        )
    if outcome is None or outcome.summary is None:
        raise AirflowFailException("the nightly run ended without a summary")
    summary = outcome.summary
    log.info(
        "SUMMARY run=%s erased=%s anonymised=%s kept=%s chain_ok=%s",
        summary.run_id,
        summary.totals.erased,
        summary.totals.anonymised,
        summary.totals.kept,
        summary.proof.chain_ok,
    )
    return to_json(summary)  # type: ignore[no-any-return]
