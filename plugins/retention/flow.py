"""The rules of a whole run, in one place: plan, approve, erase per store, the ordered database
pass, proof, the chain check, the summary or the receipt.

The DAG tasks call these functions one step per task (``retention_airflow.tasks`` only
translates between Airflow's context and these types); ``run_all`` calls the same functions
in one process, in the DAG's order, for tests, the demo's check and the benchmark. So a run
that passes here passes there by the same rules.

A run is proven when every step that should have erased has a ``verified`` entry in the
ledger, no task failed, and the ledger's hash chain is intact; otherwise the last step fails
(``TerminalError``) after writing what it knows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from retention import failpoints, stores
from retention.adapters.database import reflect_schema
from retention.anchor import Anchor, check_against_anchor
from retention.engine import (
    RunContext,
    execute_step,
    over_cap,
    plan_category,
    record_kept_by_law,
    records_entry,
    selection_for,
)
from retention.errors import RetentionError, TerminalError
from retention.ledger import POLICY_SET, ChainStatus, Ledger, LedgerEntry
from retention.locations import S3Location
from retention.policy import Policy, check_against_schema
from retention.results import (
    ApprovalRequest,
    CategoryPlan,
    DatabasePass,
    Decision,
    Proof,
    Reason,
    RunInfo,
    RunSummary,
    Skip,
    StepResult,
    Totals,
    backlog_of,
)
from retention.scope import in_scope

if TYPE_CHECKING:
    from retention.tombstones import Tombstones

log = logging.getLogger(__name__)


# -- preparing --------------------------------------------------------------------------------------


def describe(ctx: RunContext) -> RunInfo:
    """What every later step of this run shares (no subject: it never goes into XCom).

    A request acts only on the categories in its reason's scope (``retention.scope``): a
    withdrawn consent on those processed under consent, an objection on those under legitimate
    interests and on direct marketing. The others are not part of the run at all.
    """
    subject = ctx.mode == "subject"
    policies = [p for p in ctx.policies.policies if _acts_on(ctx, p)]
    return RunInfo(
        run_id=ctx.run_id,
        mode=ctx.mode,
        now=ctx.now,
        dry_run=ctx.dry_run,
        policy_set_hash=ctx.policies.hash,
        categories=tuple(p.id for p in policies),
        stores={p.id: tuple(p.stores()) for p in policies},
        reason=ctx.reason if subject else None,
        places=places(ctx),
        approved_policy_set=ctx.ledger.approved_policy_set() if ctx.ledger is not None else None,
    )


def places(ctx: RunContext) -> dict[str, str]:
    """Where the policies' buckets and file stores point in this deployment (``RunInfo.places``)."""
    out: dict[str, str] = {}
    for policy in ctx.policies.policies:
        for loc in policy.file_locations():
            if isinstance(loc, S3Location):
                out[f"s3:{loc.bucket}"] = ctx.bucket_map.get(loc.bucket, loc.bucket)
            elif loc.store in ctx.roots:
                out[loc.store] = ctx.roots[loc.store]
    return dict(sorted(out.items()))


def check_places(ctx: RunContext) -> None:
    """Refuse a ``bucket_map`` entry for a bucket no policy names (a typo would silently point
    nowhere; the receipts bucket's name is always mapped) and a file root that is not an absolute
    path."""
    from retention.access import RECEIPTS_POLICY_BUCKET

    named = {RECEIPTS_POLICY_BUCKET} | {
        loc.bucket for p in ctx.policies.policies for loc in p.file_locations() if isinstance(loc, S3Location)
    }
    for name in sorted(set(ctx.bucket_map) - named):
        raise TerminalError(f"retention_settings: bucket_map names {name!r}, a bucket no policy names")
    for store, root in sorted(ctx.roots.items()):
        if not root.startswith("/"):
            raise TerminalError(f"retention_settings: the root of {store} must be an absolute path")


def _acts_on(ctx: RunContext, policy: Policy) -> bool:
    """Whether this run acts on the category: every one at night, a request's by its reason."""
    return ctx.mode != "subject" or in_scope(policy, ctx.reason)


def check_policies(ctx: RunContext) -> None:
    """Refuse the policy set if it names a table, column or relation the live business database
    does not have, or deletes where the database would cascade into a table no policy names.

    Reflects every table of the schema (the cascade check needs the tables that reference the
    policies' tables): a bounded, one-time cost at the start of a run.
    """
    check_against_schema(ctx.policies, reflect_schema(ctx.database.engine))
    check_places(ctx)


def prepare(ctx: RunContext, holds_check: Callable[[], object] | None = None) -> RunInfo:
    """Check the policies against the live schema and describe the run; touches no data.

    In subject mode the subject must first be exactly an id of the deployment's format
    (``ctx.policies.subject``, from ``_subject.yaml``): anything else is refused
    (``TerminalError`` naming the problem, never the value) before any store is touched.
    ``holds_check`` (the legal-hold registry's ``check_stored``, bound to the policy set and
    the run's clock) is called too: a hold in force that no store could match fails the run
    here, before anything is erased.
    """
    if ctx.mode == "subject":
        ctx.policies.subject.check(ctx.subject, "customer id")
    check_policies(ctx)
    if holds_check is not None:
        holds_check()
    return describe(ctx)


def check_same_policies(ctx: RunContext, run: RunInfo) -> None:
    """A later step must act under the policy set the run was planned with."""
    if ctx.policies.hash != run.policy_set_hash:
        raise TerminalError("the policy files changed during the run; start a new run")
    if run.places and places(ctx) != run.places:
        raise TerminalError(
            "the buckets or roots of retention_settings changed during the run; start a new run"
        )


# -- planning and approval --------------------------------------------------------------------------


def plan(ctx: RunContext, category: str) -> CategoryPlan:
    """Count what the category's run would touch; over the cap, record that it waits for a human."""
    planned = plan_category(ctx.policies.get(category), ctx)
    if planned.needs_approval and not ctx.dry_run:
        ctx.record(
            LedgerEntry(
                run_id=ctx.run_id,
                category=planned.category,
                store="*",
                location="*",
                action="approval",
                outcome="approval_requested",
                count=planned.records,
                subject_ref=ctx.subject_ref,
                reason=planned.approval_reason,
                policy_set_hash=ctx.policies.hash,
            )
        )
    if planned.needs_approval:
        planned = _with_approval_request(planned)
    if planned.on_request_only:
        log.info("plan category=%s has no retention clock: erased on request only, none due", category)
    log.info(
        "plan category=%s records=%s held=%s undated=%s needs_approval=%s",
        category,
        planned.records,
        planned.held,
        planned.undated,
        planned.needs_approval,
    )
    return planned


def _with_approval_request(plan: CategoryPlan) -> CategoryPlan:
    """The approval form's subject and body for one category (counts only, no personal data)."""
    rows = "\n".join(
        f"| {loc} | {n if n >= 0 else 'rows of the records above'} |" for loc, n in plan.locations.items()
    )
    body = (
        f"**{plan.category}**: {plan.approval_reason}.\n\n"
        f"Records due: **{plan.records}** of {plan.total} "
        f"({plan.held} more kept under legal hold).\n\n"
        f"| location | items |\n|---|---:|\n{rows}\n\n"
        "*Approve* erases them now, with verification and ledger entries. *Reject* erases nothing in this "
        "category tonight; the rejection is recorded and tomorrow's run asks again."
    )
    subject = f"Approve erasure in {plan.category} ({plan.records} records)?"
    return dataclasses.replace(plan, approval=ApprovalRequest(subject=subject, body=body))


def decisions(
    run: RunInfo, plans: Mapping[str, CategoryPlan | None], answers: Mapping[str, Decision | None]
) -> dict[str, Decision]:
    """Category -> the human's decision, for every category whose real plan needed one.

    A missing answer (the approval task timed out, failed or never ran) is ``NO_ANSWER``:
    without a decision nothing is erased.
    """
    if run.dry_run:
        return {}
    out: dict[str, Decision] = {}
    for category in run.categories:
        planned = plans.get(category)
        if planned is not None and planned.needs_approval:
            out[category] = answers.get(category) or Decision.NO_ANSWER
    return out


def not_run(decided: Mapping[str, Decision]) -> dict[str, Skip]:
    """The categories a human did not let go ahead, with why."""
    return {c: skip for c, d in decided.items() if (skip := d.skip) is not None}


@dataclass(frozen=True)
class Clearance:
    """What a category's erasure was cleared for: its plan, and the human's answer where one was needed."""

    plan: CategoryPlan | None
    decision: Decision | None = None
    policy_set: Decision | None = None
    """The human's answer to the run's policy change (``policy_set_decision``); None: none needed."""


def policy_set_decision(run: RunInfo, answer: Decision | None) -> Decision | None:
    """The answer to the run's policy change; None when there is nothing to approve (the set is the
    one approved, or the first; a dry run; a customer's request, which privacy staff started)."""
    if run.dry_run or run.mode != "due" or not run.policy_change:
        return None
    return answer or Decision.NO_ANSWER


def policy_skips(run: RunInfo, decision: Decision | None) -> dict[str, Skip]:
    """Every category, when the run's policy change was not approved: nothing is erased under it."""
    if decision is None or decision is Decision.APPROVED:
        return {}
    return {category: Skip(Reason.POLICY_CHANGE) for category in run.categories}


def record_policy_set(ctx: RunContext, run: RunInfo, decision: Decision | None) -> None:
    """The ledger entry that puts a policy set in force (approved, or the first real nightly run's),
    or that says a change was rejected or left unanswered."""
    if run.dry_run or run.mode != "due":
        return
    detail: dict[str, object]
    if run.approved_policy_set is None:
        decision, detail = Decision.APPROVED, {"first": True}
    elif decision is None:
        return
    else:
        detail = {"previous": run.approved_policy_set}
    _ledger(ctx).append(
        LedgerEntry(
            run_id=ctx.run_id,
            store="*",
            location="*",
            action=POLICY_SET,
            outcome=DECISION_OUTCOMES[decision],
            count=0,
            policy_set_hash=run.policy_set_hash,
            reason=None if decision is Decision.APPROVED else Reason.POLICY_CHANGE.value,
            detail=detail,
        )
    )


def clearances(
    run: RunInfo, plans: Mapping[str, CategoryPlan | None], decided: Mapping[str, Decision]
) -> dict[str, Clearance]:
    """Category -> its clearance; a category without a plan gets one that clears nothing."""
    return {c: Clearance(plans.get(c), decided.get(c)) for c in run.categories}


def cleared(ctx: RunContext, category: str, clearance: Clearance | None) -> Skip | None:
    """Why the category may not erase now, or None. Fails closed.

    No plan (its task failed, or was marked done by hand) erases nothing. Over the cap, only an
    approval clears it. And the cap is checked again from a fresh count: more due now than the
    cap allows without a human, or than the human approved, erases nothing.
    """
    if clearance is not None and clearance.policy_set not in (None, Decision.APPROVED):
        return Skip(Reason.POLICY_CHANGE)
    plan = clearance.plan if clearance is not None else None
    if plan is None:
        return Skip(Reason.NO_PLAN)
    if ctx.dry_run or ctx.mode != "due":
        return None
    decision = clearance.decision if clearance is not None else None
    if plan.needs_approval and decision is not Decision.APPROVED:
        return (decision or Decision.NO_ANSWER).skip
    policy = ctx.policies.get(category)
    fresh = ctx.database.count(selection_for(policy, ctx), ctx.hold_source(category)())
    if fresh <= plan.records:
        return None
    if plan.needs_approval or over_cap(policy, fresh, ctx.database)[0] is not None:
        log.warning(
            "category=%s due now=%d planned=%d: over the cap, nothing erased", category, fresh, plan.records
        )
        return Skip(Reason.OVER_CAP)
    return None


# -- erasing ----------------------------------------------------------------------------------------


def erase_files(
    ctx: RunContext, run: RunInfo, category: str, store: str, clearance: Clearance | None
) -> StepResult | None:
    """One file store of one category; None if the category keeps nothing there.

    Refuses (``TerminalError``, nothing erased) unless ``cleared``. The database goes in
    ``database_pass``, in policy order, after every category's files.
    """
    if store == stores.DATABASE:
        raise TerminalError("the database is erased by database_pass, in policy order")
    if not run.uses(category, store):
        return None
    check_same_policies(ctx, run)
    skip = cleared(ctx, category, clearance)
    if skip is not None:
        raise TerminalError(f"{category}/{store}: {skip.words()}")
    return execute_step(ctx.policies.get(category), store, ctx)


def database_blocker(
    policy: Policy, file_steps: Sequence[StepResult], skipped: Mapping[str, Skip]
) -> Skip | None:
    """Why a category's database rows must not be erased now, or None.

    The rows are the index of the category's files: they all stay while a file step did not
    run or was not verified. Files a step kept (a hold, a storage lock, an unsafe key) keep
    only their own rows: the database step leaves exactly those (``ctx.keeps``). A category
    also waits for every category it runs ``after`` (their rows may reference its rows).
    """
    if policy.id in skipped:
        return skipped[policy.id]
    for dep in policy.after:
        if dep in skipped:
            return Skip(Reason.BLOCKED_BY_DEPENDENCY, blocked_by=dep)
    for store in policy.stores():
        if store == stores.DATABASE:
            continue
        step = next((s for s in file_steps if s.category == policy.id and s.store == store), None)
        if step is None or (not step.verified and not step.dry_run):
            return Skip(Reason.FILES_UNVERIFIED, store=store)
    return None


def database_pass(
    ctx: RunContext,
    file_steps: Sequence[StepResult],
    skipped: Mapping[str, Skip],
    cleared_for: Mapping[str, Clearance],
) -> DatabasePass:
    """Erase the database locations of every category, in policy order; return results and skips.

    A category that cannot run (see ``database_blocker``) or fails blocks the categories that
    run after it; independent categories still run. Transient errors propagate at once (the
    whole pass is idempotent); terminal ones are re-raised after the pass with the rest done.
    """
    failpoints.reach("before_database_pass")
    results: list[StepResult] = []
    skips = dict(skipped)
    failure: RetentionError | None = None
    for policy in ctx.policies.policies:
        if stores.DATABASE not in policy.stores() or not _acts_on(ctx, policy):
            continue
        blocker = database_blocker(policy, file_steps, skips)
        if blocker is None:
            blocker = cleared(ctx, policy.id, cleared_for.get(policy.id))
        if blocker is not None:
            skips.setdefault(policy.id, blocker)
            ctx.record(
                records_entry(
                    ctx,
                    policy,
                    action="skip",
                    outcome="skipped",
                    count=0,
                    reason=blocker.reason.value,
                    detail=blocker.detail() or None,
                )
            )
            continue
        try:
            result = execute_step(policy, stores.DATABASE, ctx)
        except RetentionError as e:
            if not e.terminal:
                raise
            failure = failure or e
            skips[policy.id] = Skip(Reason.FAILED, error=type(e).__name__)
            continue
        if ctx.mode == "subject":
            result = dataclasses.replace(result, kept_by_law=record_kept_by_law(policy, ctx))
        results.append(result)
    if failure is not None:
        raise failure
    return DatabasePass(results=tuple(results), skipped=skips)


# -- proof and summary ------------------------------------------------------------------------------


def _ledger(ctx: RunContext) -> Ledger:
    if ctx.ledger is None:
        raise TerminalError("this step needs the ledger")
    return ctx.ledger


def unproven_steps(ctx: RunContext, run: RunInfo, skipped: Mapping[str, Skip]) -> list[str]:
    """Steps that should have erased and verified in this run but have no proof in the ledger."""
    if run.dry_run:
        return []
    verified = {
        (category, store)
        for (category, store, outcome) in _ledger(ctx).outcomes_for_run(run.run_id)
        if outcome == "verified"
    }
    missing = []
    for category in run.categories:
        skip = skipped.get(category)
        if skip is not None and skip.accepted(skipped):
            continue
        for store in run.stores[category]:
            if (store == stores.DATABASE and skip is not None) or (category, store) not in verified:
                missing.append(f"{category}/{store}")
    return missing


def prove(
    ctx: RunContext,
    run: RunInfo,
    skipped: Mapping[str, Skip],
    failed_tasks: Sequence[str] = (),
    anchors: Sequence[Anchor] = (),
) -> Proof:
    """Whether the run proved its work: every expected step verified, no failed task, the chain intact
    and agreeing with each of the latest ``anchors`` (published outside the ledger's database)."""
    unproven = unproven_steps(ctx, run, skipped)
    chain: ChainStatus = _ledger(ctx).verify_chain()
    for anchor in anchors if chain.ok else ():
        problem = check_against_anchor(_ledger(ctx), anchor)
        if problem is not None:
            chain = ChainStatus(False, chain.checked, chain.head_hash, anchor.seq, problem)
            break
    return Proof(
        unproven=tuple(unproven),
        failed_tasks=tuple(failed_tasks),
        chain_ok=chain.ok,
        chain_checked=chain.checked,
        chain_head=chain.head_hash,
        chain_problem=chain.problem,
        chain_bad_seq=chain.first_bad_seq,
    )


def _clear_keeps(ctx: RunContext) -> None:
    """The run's notes of kept records are working state: gone when the run ends (and stale ones)."""
    if ctx.keeps is not None:
        ctx.keeps.clear(ctx.run_id)


def raise_unless_proven(proof: Proof) -> None:
    """Fail the run's last step, naming what is missing, unless ``proof.ok``."""
    if not proof.chain_ok:
        raise TerminalError(f"ledger hash chain broken at seq {proof.chain_bad_seq}: {proof.chain_problem}")
    if proof.unproven:
        shown = ", ".join(proof.unproven[:10])
        raise TerminalError(f"erasure not proven for {len(proof.unproven)} step(s): {shown}")
    if proof.failed_tasks:
        shown = ", ".join(proof.failed_tasks[:10])
        raise TerminalError(f"{len(proof.failed_tasks)} task(s) failed: {shown}")


DECISION_OUTCOMES = {
    Decision.APPROVED: "approved",
    Decision.REJECTED: "rejected",
    Decision.NO_ANSWER: "skipped",
}
"""A human's decision -> the outcome of its ledger entry."""


def record_decisions(ctx: RunContext, decided: Mapping[str, Decision]) -> None:
    """One ledger entry per human decision (approved, rejected, unanswered)."""
    _ledger(ctx).append_many(
        [
            LedgerEntry(
                run_id=ctx.run_id,
                category=category,
                store="*",
                location="*",
                action="approval",
                outcome=DECISION_OUTCOMES[d],
                count=0,
                policy_set_hash=ctx.policies.hash,
                reason=Reason.NO_ANSWER.value if d is Decision.NO_ANSWER else None,
            )
            for category, d in decided.items()
        ]
    )


BACKLOG_RUNS = 3
"""Consecutive nightly runs after which a backlog for a reason other than a lawful keep alerts."""


def finish(
    ctx: RunContext,
    run: RunInfo,
    decided: Mapping[str, Decision],
    results: Sequence[StepResult],
    skipped: Mapping[str, Skip],
    failed_tasks: Sequence[str] = (),
    plans: Mapping[str, CategoryPlan | None] | None = None,
    backlog_runs: int = BACKLOG_RUNS,
    tombstones: Tombstones | None = None,
    anchors: Sequence[Anchor] = (),
    policy_set: Decision | None = None,
) -> RunSummary:
    """Record the decisions and the run summary, verify the chain; fail if anything is unproven, or if
    due data was left behind for the same reason (other than a lawful keep) ``backlog_runs`` nights running.

    With ``tombstones``, a real nightly run also deletes the tombstones whose retention has ended.
    ``anchors``: the latest anchors of the chain head (``retention.anchor``); a chain that disagrees
    with one fails the run like a broken chain.
    ``policy_set``: the answer to the run's policy change (``policy_set_decision``), recorded with it.
    """
    record_decisions(ctx, decided)
    record_policy_set(ctx, run, policy_set)
    _clear_keeps(ctx)
    purged = purge_tombstones(ctx, run, tombstones)
    proof = prove(ctx, run, skipped, failed_tasks, anchors)
    planned = {c: p.records for c, p in (plans or {}).items() if p is not None}
    backlog = backlog_of(results, skipped, planned)
    persistent = () if run.dry_run else _persistent(ctx, backlog, backlog_runs)
    summary = RunSummary(
        run_id=run.run_id,
        mode=run.mode,
        dry_run=run.dry_run,
        now=run.now,
        categories=len(run.categories),
        steps=len(results),
        totals=Totals.of(list(results)),
        not_erased=dict(sorted(skipped.items())),
        proof=proof,
        backlog=backlog,
        persistent=persistent,
        undated={c: p.undated for c, p in sorted((plans or {}).items()) if p is not None and p.undated},
        places=dict(run.places),
    )
    totals = summary.totals
    # Written in a dry run too: the ledger shows that the run happened and what it found.
    _ledger(ctx).append(
        LedgerEntry(
            run_id=ctx.run_id,
            action="run",
            outcome="summary",
            count=totals.erased + totals.anonymised,
            policy_set_hash=ctx.policies.hash,
            detail={
                "mode": run.mode,
                "dry_run": run.dry_run,
                "categories": summary.categories,
                "steps": summary.steps,
                "located": totals.located,
                "erased": totals.erased,
                "anonymised": totals.anonymised,
                "kept": totals.kept,
                "failed": totals.failed,
                "not_erased": len(summary.not_erased),
                "unproven": len(proof.unproven),
                "failed_tasks": len(proof.failed_tasks),
                "chain_ok": proof.chain_ok,
                "chain_checked": proof.chain_checked,
                "backlog": {c: {r.value: n for r, n in reasons.items()} for c, reasons in backlog.items()},
                "undated": dict(summary.undated),
                "tombstones_purged": purged,
                "places": dict(run.places),
            },
        )
    )
    raise_unless_proven(proof)
    if persistent:
        shown = ", ".join(persistent[:10])
        raise TerminalError(
            f"due data left behind {backlog_runs} nightly runs in a row for a reason that is no lawful "
            f"keep: {shown}; see the run summary's backlog and the runbook"
        )
    return summary


def purge_tombstones(ctx: RunContext, run: RunInfo, tombstones: Tombstones | None) -> int:
    """Delete the tombstones older than ``tombstones.keep`` of ``_accountability.yaml`` (a real nightly
    run only); record how many in the ledger (a count, nothing else). Returns the count."""
    if tombstones is None or run.dry_run or run.mode != "due":
        return 0
    from retention.tombstones import expired_before

    keep = ctx.policies.accountability.tombstones.keep
    purged = tombstones.purge(expired_before(run.now, keep))
    if purged:
        _ledger(ctx).append(
            LedgerEntry(
                run_id=ctx.run_id,
                action="tombstone",
                outcome="erased",
                count=purged,
                policy_set_hash=ctx.policies.hash,
                detail={"keep": keep},
            )
        )
    log.info("SUMMARY tombstones purged=%d keep=%s", purged, keep)
    return purged


def _persistent(ctx: RunContext, backlog: Mapping[str, Mapping[Reason, int]], runs: int) -> tuple[str, ...]:
    """``category:reason`` pairs (not lawful keeps) in this backlog and in the ``runs - 1`` real nightly
    runs before it, as their summaries in the ledger recorded them."""
    now = {
        f"{c}:{r.value}"
        for c, reasons in backlog.items()
        for r, n in reasons.items()
        if n and not r.lawful_keep
    }
    if not now or runs < 1:
        return ()
    earlier = _ledger(ctx).summaries(runs - 1, mode="due")
    if len(earlier) < runs - 1:
        return ()
    for detail in earlier:
        recorded = detail.get("backlog") if isinstance(detail, Mapping) else None
        seen = {
            f"{c}:{r}"
            for c, reasons in (recorded or {}).items()
            if isinstance(reasons, Mapping)
            for r, n in reasons.items()
            if n
        }
        now &= seen
    return tuple(sorted(now))


@dataclass(frozen=True)
class Replay:
    """An erasure replayed after a backup was restored: when the backup was taken, and the erasure's
    original run (from its tombstone)."""

    restored_to: str
    """ISO 8601 date-time with its zone."""
    original_run_id: str


@dataclass(frozen=True)
class ReceiptRequest:
    """A customer's request as the receipt names it: its reference and reason, never the customer."""

    request_ref: str
    reason: str
    replay: Replay | None = None
    """Set when this run replays an erasure after a restore: the receipt says so."""


ReceiptSink = Callable[[Mapping[str, Any]], Mapping[str, str]]
"""Stores a receipt document; returns where (``bucket``, ``json_key``, ``markdown_key``, ``sha256``)."""


def finish_request(
    ctx: RunContext,
    run: RunInfo,
    request: ReceiptRequest,
    results: Sequence[StepResult],
    skipped: Mapping[str, Skip],
    failed_tasks: Sequence[str] = (),
    sink: ReceiptSink | None = None,
    tombstones: Tombstones | None = None,
    anchors: Sequence[Anchor] = (),
) -> dict[str, Any]:
    """Build the erasure receipt, store it through ``sink``, note it in the ledger; fail unless proven.

    With ``tombstones``, a real erasure that is proven leaves its tombstone (``record_tombstone``).
    ``anchors`` as for ``finish``.
    """
    from retention.receipt import build_receipt

    _clear_keeps(ctx)
    proof = prove(ctx, run, skipped, failed_tasks, anchors)
    doc = build_receipt(
        request_ref=request.request_ref,
        subject_ref=ctx.subject_ref or "",
        reason=request.reason,
        run_id=run.run_id,
        now=run.now.isoformat(),
        dry_run=run.dry_run,
        policies=ctx.policies,
        steps=results,
        not_erased=skipped,
        replay=dataclasses.asdict(request.replay) if request.replay is not None else None,
        key_period=ctx.key_period,
    )
    doc["verified"] = doc["verified"] and proof.ok
    where: Mapping[str, str] = sink(doc) if sink is not None else {}
    if where:
        # Written in a dry run too: a dry-run receipt was stored and is referenced.
        _ledger(ctx).append(
            LedgerEntry(
                run_id=ctx.run_id,
                action="receipt",
                outcome="summary",
                store="s3",
                location=f"s3:{where['bucket']}/{where['prefix']}",
                subject_ref=ctx.subject_ref,
                count=doc["totals"]["erased"] + doc["totals"]["anonymised"],
                policy_set_hash=ctx.policies.hash,
                items_digest=where["sha256"],
                detail={"kept": doc["totals"]["kept"], "verified": doc["verified"]},
            )
        )
    raise_unless_proven(proof)
    if doc["verified"] and tombstones is not None:
        record_tombstone(ctx, run, request, tombstones)
    return {**doc, "location": dict(where)} if where else doc


def record_tombstone(ctx: RunContext, run: RunInfo, request: ReceiptRequest, tombstones: Tombstones) -> None:
    """Leave the tombstone of a proven, real erasure: whom to erase again if a backup older than it is
    restored. Not for a replay: the original erasure's tombstone still names the customer, with its
    time, and stays until its own retention ends. Once per run (a retried task writes none)."""
    if run.dry_run or request.replay is not None or ctx.subject is None:
        return
    written = tombstones.record(
        run_id=run.run_id,
        request_ref=request.request_ref,
        reason=request.reason,
        subject=ctx.subject,
        # The wall clock, not the run's clock: a backup taken while the run was erasing may still
        # hold the data, and a replay to that backup must find this tombstone.
        completed_at=datetime.now(UTC),
    )
    if written:
        _ledger(ctx).append(
            LedgerEntry(
                run_id=ctx.run_id,
                action="tombstone",
                outcome="summary",
                count=1,
                subject_ref=ctx.subject_ref,
                policy_set_hash=ctx.policies.hash,
            )
        )


# -- the whole run in one process -------------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    """Everything a whole run produced, for callers that run it in one process."""

    run: RunInfo
    plans: tuple[CategoryPlan, ...]
    files: tuple[StepResult, ...]
    database: DatabasePass
    summary: RunSummary | None = None
    """The nightly summary (``due`` mode)."""
    receipt: dict[str, Any] | None = field(default=None, compare=False)
    """The receipt (``subject`` mode)."""

    @property
    def results(self) -> tuple[StepResult, ...]:
        return self.files + self.database.results

    @property
    def skipped(self) -> Mapping[str, Skip]:
        return self.database.skipped


def run_all(
    ctx: RunContext,
    *,
    approved: Callable[[CategoryPlan], bool] | None = None,
    request: ReceiptRequest | None = None,
    sink: ReceiptSink | None = None,
    backlog_runs: int = BACKLOG_RUNS,
    tombstones: Tombstones | None = None,
) -> RunOutcome:
    """Plan and execute every category by the DAG's rules, in one process.

    A category over its cap runs only if ``approved(plan)`` says so; otherwise it waits
    (``awaiting_approval``), with the categories that run after it. The run ends as the DAG's
    last task does: the nightly summary, or in subject mode the receipt; either fails
    (``TerminalError``) unless the run is proven.
    """
    if request is not None and ctx.mode == "subject":
        ctx = dataclasses.replace(ctx, reason=request.reason)
    run = prepare(ctx)
    plans = tuple(plan(ctx, category) for category in run.categories)
    waiting: dict[str, Skip] = {}
    decided: dict[str, Decision] = {}
    for p in plans:
        if p.needs_approval and not run.dry_run:
            if approved is not None and approved(p):
                decided[p.category] = Decision.APPROVED
            else:
                waiting[p.category] = Skip(Reason.AWAITING_APPROVAL)
    cleared_for = clearances(run, {p.category: p for p in plans}, decided)
    files = tuple(
        result
        for p in plans
        if p.category not in waiting
        for store in stores.FILE_STORES
        if (result := erase_files(ctx, run, p.category, store, cleared_for[p.category])) is not None
    )
    database = database_pass(ctx, files, waiting, cleared_for)
    results = files + database.results
    if run.mode == "subject":
        if request is None:
            _clear_keeps(ctx)
            raise_unless_proven(prove(ctx, run, database.skipped))
            return RunOutcome(run, plans, files, database)
        receipt = finish_request(
            ctx, run, request, results, database.skipped, sink=sink, tombstones=tombstones
        )
        return RunOutcome(run, plans, files, database, receipt=receipt)
    summary = finish(
        ctx,
        run,
        decided,
        results,
        database.skipped,
        plans={p.category: p for p in plans},
        backlog_runs=backlog_runs,
        tombstones=tombstones,
    )
    return RunOutcome(run, plans, files, database, summary=summary)
