"""The work behind each DAG task, as plain functions of (run settings, category, store).

The TaskFlow tasks in ``retention_airflow.tasks`` only read the Airflow context and call
these; errors are mapped there (terminal -> no retry, transient -> the task's retries).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

from retention import engine as core
from retention.adapters.database import DatabaseAdapter, reflect_columns
from retention.errors import TerminalError
from retention.holds import HoldRegistry
from retention.ledger import Ledger, LedgerEntry
from retention.policy import PolicySet, check_against_schema, load_policies
from retention_airflow import clients

log = logging.getLogger(__name__)


def parse_now(as_of: str | None, run_after: datetime) -> datetime:
    """The run's business clock: ``as_of`` if given (never in the future), else the run's time."""
    if not as_of:
        return run_after.astimezone(UTC)
    try:
        value = datetime.fromisoformat(as_of)
    except ValueError:
        raise TerminalError("as_of is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise TerminalError("as_of needs a time zone (e.g. 2026-06-15T02:00:00+02:00)")
    if value > datetime.now(UTC):
        # A clock in the future would make data due early: refuse.
        raise TerminalError("as_of lies in the future; only the present or the past may be evaluated")
    return value.astimezone(UTC)


def load_checked_policies(business: Any) -> PolicySet:
    """Load the policy set and check every identifier against the live schema."""
    policy_set = load_policies(clients.settings().policy_dir)
    tables = {p.records.table for p in policy_set.policies} | {
        loc.table
        for p in policy_set.policies
        for loc in p.locations
        if loc.store == "database"  # type: ignore[union-attr]
    }
    check_against_schema(policy_set, reflect_columns(business, sorted(tables)))
    return policy_set


def prepare(*, run_id: str, mode: str, now: datetime, dry_run: bool) -> dict[str, Any]:
    """Validate the policies against the schema, make sure the ledger exists, describe the run."""
    business = clients.business_engine()
    ledger_db = clients.ledger_engine()
    try:
        policy_set = load_checked_policies(business)
        Ledger(ledger_db).ensure_schema()
        HoldRegistry(ledger_db).ensure_schema()
    finally:
        business.dispose()
        ledger_db.dispose()
    return {
        "run_id": run_id,
        "mode": mode,
        "now": now.isoformat(),
        "dry_run": dry_run,
        "policy_set_hash": policy_set.hash,
        "categories": policy_set.ids,
        "stores": {p.id: p.stores() for p in policy_set.policies},
    }


@contextmanager
def context(
    run: Mapping[str, Any], *, subject: str | None = None, stores: tuple[str, ...] = ()
) -> Iterator[core.RunContext]:
    """A RunContext with clients for the named stores; everything is closed afterwards."""
    cfg = clients.settings()
    with ExitStack() as stack:
        business = clients.business_engine()
        stack.callback(business.dispose)
        ledger_db = clients.ledger_engine()
        stack.callback(ledger_db.dispose)
        policy_set = load_policies(cfg.policy_dir)
        if policy_set.hash != run["policy_set_hash"]:
            raise TerminalError("the policy files changed during the run; start a new run")
        registry = HoldRegistry(ledger_db)
        ctx = core.RunContext(
            run_id=run["run_id"],
            now=datetime.fromisoformat(run["now"]),
            policies=policy_set,
            database=DatabaseAdapter(business),
            pseudonym_key=clients.pseudonym_key(),
            ledger=Ledger(ledger_db),
            holds=registry.current,
            bucket_map=cfg.bucket_map,
            archive_root=cfg.archive_root,
            mode=run["mode"],
            subject=subject,
            dry_run=bool(run["dry_run"]),
        )
        if "s3" in stores:
            from retention.adapters.s3 import S3Adapter

            ctx.s3 = S3Adapter(clients.s3_client())
        if "sftp" in stores:
            from retention.adapters.sftp import SftpAdapter

            ctx.sftp = SftpAdapter(stack.enter_context(clients.sftp_client()))
        yield ctx


def plan(run: Mapping[str, Any], category: str, subject: str | None) -> dict[str, Any]:
    with context(run, subject=subject) as ctx:
        planned = core.plan_category(ctx.policies.get(category), ctx)
        if planned.needs_approval and not ctx.dry_run:
            core.request_approval(planned, ctx)
    result = {**planned.to_dict(), "dry_run": bool(run["dry_run"])}
    if result["needs_approval"]:
        result.update(approval_request(result))
    log.info(
        "plan category=%s records=%s held=%s needs_approval=%s",
        category,
        result["records"],
        result["held"],
        result["needs_approval"],
    )
    return result


def erase(run: Mapping[str, Any], category: str, store: str, subject: str | None) -> dict[str, Any]:
    """One file store of one category (the database goes in ``database_pass``, in policy order)."""
    if store not in run["stores"][category]:
        return {"category": category, "store": store, "applicable": False}
    with context(run, subject=subject, stores=(store,)) as ctx:
        return core.execute_step(ctx.policies.get(category), store, ctx).to_dict()


def database_pass(
    run: Mapping[str, Any],
    file_steps: list[Mapping[str, Any]],
    not_run: Mapping[str, str],
    subject: str | None,
) -> dict[str, Any]:
    """Every category's database locations, in policy order, after their files are proven gone."""
    with context(run, subject=subject) as ctx:
        results, skipped = core.database_pass(ctx, file_steps, not_run)
    return {"results": results, "skipped": skipped}


def _verified(outcomes: Mapping[Any, Any], category: str, store: str) -> bool:
    return any(k[0] == category and k[1] == store and k[2] == "verified" for k in outcomes)


def approval_request(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The ApprovalOperator's subject and body for one category (counts only, no personal data)."""
    rows = "\n".join(
        f"| {loc} | {n if n >= 0 else 'rows of the records above'} |" for loc, n in plan["locations"].items()
    )
    body = (
        f"**{plan['category']}**: {plan['approval_reason']}.\n\n"
        f"Records due: **{plan['records']}** of {plan['total']} "
        f"({plan['held']} more kept under legal hold).\n\n"
        f"| location | items |\n|---|---:|\n{rows}\n\n"
        "*Approve* erases them now, with verification and ledger entries. *Reject* erases nothing in this "
        "category tonight; the rejection is recorded and tomorrow's run asks again."
    )
    return {
        "approval_subject": f"Approve erasure in {plan['category']} ({plan['records']} records)?",
        "approval_body": body,
    }


HUMAN_DECISIONS = ("needs_approval", "rejected", "no answer")


def legitimate_skip(reason: str, skipped: Mapping[str, str]) -> bool:
    """A category not erased for a reason that is not a failure: a human said no, or the law/lock keeps it."""
    if reason in HUMAN_DECISIONS or "storage lock" in reason:
        return True
    if reason.startswith("blocked: "):
        dep = reason.split()[1]
        return legitimate_skip(skipped.get(dep, "failed"), skipped)
    return False


def unproven_steps(ctx: core.RunContext, run: Mapping[str, Any], skipped: Mapping[str, str]) -> list[str]:
    """Steps that should have erased and verified in this run but have no proof in the ledger."""
    if ctx.dry_run:
        return []
    outcomes = _ledger(ctx).outcomes_for_run(ctx.run_id)
    missing = []
    for category in run["categories"]:
        reason = skipped.get(category)
        if reason is not None and legitimate_skip(reason, skipped):
            continue
        for store in run["stores"][category]:
            if (store == "database" and reason) or not _verified(outcomes, category, store):
                missing.append(f"{category}/{store}")
    return missing


def finish(
    run: Mapping[str, Any],
    decisions: Mapping[str, str],
    results: list[Mapping[str, Any]],
    skipped: Mapping[str, str],
    failed_tasks: list[str],
) -> dict[str, Any]:
    """Record approval decisions and the run summary; verify the chain; fail if anything is unproven."""
    outcome_of = {"Approve": "approved", "Reject": "rejected"}
    with context(run) as ctx:
        ledger = _ledger(ctx)
        for category, choice in decisions.items():
            ledger.append(
                LedgerEntry(
                    run_id=ctx.run_id,
                    category=category,
                    store="*",
                    location="*",
                    action="approval",
                    outcome=outcome_of.get(choice, "skipped"),
                    count=0,
                    policy_set_hash=ctx.policies.hash,
                    reason=None if choice in outcome_of else choice,
                )
            )
        unproven = unproven_steps(ctx, run, skipped)
        chain = ledger.verify_chain()
        totals = _totals(results)
        summary = {
            "run_id": ctx.run_id,
            "mode": ctx.mode,
            "dry_run": ctx.dry_run,
            "now": run["now"],
            "categories": len(run["categories"]),
            "steps": len(results),
            **totals,
            "not_erased": dict(sorted(skipped.items())),
            "unproven": unproven,
            "failed_tasks": failed_tasks,
            "chain_ok": chain.ok,
            "chain_checked": chain.checked,
            "chain_head": chain.head_hash,
        }
        ledger.append(
            LedgerEntry(
                run_id=ctx.run_id,
                action="run",
                outcome="summary",
                count=totals["erased"] + totals["anonymised"],
                policy_set_hash=ctx.policies.hash,
                detail={k: v for k, v in summary.items() if isinstance(v, int | bool)},
            )
        )
    _raise_unless_proven(chain, unproven, failed_tasks)
    return summary


def _raise_unless_proven(chain: Any, unproven: list[str], failed_tasks: list[str]) -> None:
    if not chain.ok:
        raise TerminalError(f"ledger hash chain broken at seq {chain.first_bad_seq}: {chain.problem}")
    if unproven:
        raise TerminalError(f"erasure not proven for {len(unproven)} step(s): {', '.join(unproven[:10])}")
    if failed_tasks:
        raise TerminalError(f"{len(failed_tasks)} task(s) failed: {', '.join(failed_tasks[:10])}")


def _ledger(ctx: core.RunContext) -> Ledger:
    if ctx.ledger is None:
        raise TerminalError("this step needs the ledger")
    return ctx.ledger


def _totals(results: list[Mapping[str, Any]]) -> dict[str, int]:
    totals = {"located": 0, "erased": 0, "anonymised": 0, "kept": 0, "failed": 0}
    for r in results:
        for k in ("located", "erased", "anonymised", "failed"):
            totals[k] += int(r.get(k, 0) or 0)
        totals["kept"] += sum((r.get("kept") or {}).values())
    return totals


def receipt(
    run: Mapping[str, Any],
    subject: str,
    params: Mapping[str, Any],
    results: list[Mapping[str, Any]],
    skipped: Mapping[str, str],
    failed_tasks: list[str],
) -> dict[str, Any]:
    """Build and store the erasure receipt; reference it from the ledger; fail if anything is unproven."""
    from retention.receipt import build_receipt, store_receipt

    cfg = clients.settings()
    with context(run, subject=subject) as ctx:
        ledger = _ledger(ctx)
        steps = [r for r in results if "store" in r]
        unproven = unproven_steps(ctx, run, skipped)
        doc = build_receipt(
            request_ref=params["request_ref"],
            subject_ref=ctx.subject_ref or "",
            reason=params["reason"],
            run_id=ctx.run_id,
            now=run["now"],
            dry_run=ctx.dry_run,
            policies=ctx.policies,
            steps=steps,
            kept_by_law={r["category"]: r.get("kept_by_law") for r in steps if r["store"] == "database"},
            not_erased=skipped,
        )
        doc["verified"] = doc["verified"] and not unproven and not failed_tasks
        where = store_receipt(clients.s3_client(), cfg.receipts_bucket, cfg.receipts_prefix, doc)
        chain = ledger.verify_chain()
        ledger.append(
            LedgerEntry(
                run_id=ctx.run_id,
                action="receipt",
                outcome="summary",
                store="s3",
                location=f"s3:{where['bucket']}/{cfg.receipts_prefix}",
                subject_ref=ctx.subject_ref,
                count=doc["totals"]["erased"] + doc["totals"]["anonymised"],
                policy_set_hash=ctx.policies.hash,
                items_digest=where["sha256"],
                detail={"kept": doc["totals"]["kept"], "verified": doc["verified"]},
            )
        )
    _raise_unless_proven(chain, unproven, failed_tasks)
    return {**doc, "location": where}
