"""Planning and executing erasure: policies -> targets -> adapters -> ledger.

Two modes share one path:

- ``due``: the nightly run; every category's records whose retention has passed.
- ``subject``: one customer's erasure request (GDPR Art. 17); categories whose
  ``erasure_request`` is ``erase`` lose all of that customer's records, categories
  that must be kept by law (``keep_until_due``) lose only what is due and report
  the rest as kept, naming the law and the until-dates.

For each category the file stores run before the database (the row is the index
that names the object and the archive file). Every batch is written to the ledger
as intent before it is erased and as outcome after; each store is verified by
looking again, and a leftover fails the step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal, cast

from retention.adapters.base import (
    Batch,
    EraseOutcome,
    HoldSet,
    HoldSource,
    KeyDigest,
    VerifyOutcome,
    no_holds,
)
from retention.adapters.database import DatabaseAdapter, RowSelection, TableTarget
from retention.clock import cutoff_for, until_for
from retention.errors import EraseFailedError, RetentionError, TerminalError, VerificationError
from retention.ledger import Ledger, LedgerEntry
from retention.paths import placeholders
from retention.policy import DatabaseLocation, Policy, PolicySet, S3Location, SftpLocation
from retention.pseudonym import pseudonymise

log = logging.getLogger(__name__)

Mode = Literal["due", "subject"]


@dataclass
class RunContext:
    """Everything one run needs: its identity, its clock, its policies and its clients."""

    run_id: str
    now: datetime
    policies: PolicySet
    database: DatabaseAdapter
    pseudonym_key: bytes
    ledger: Ledger | None = None
    holds: Callable[[str, datetime], HoldSet] | None = None
    """(category, now) -> holds in force; None means no registry (tests of single stores)."""
    s3: Any = None
    sftp: Any = None
    bucket_map: Mapping[str, str] = field(default_factory=dict)
    """Policy bucket name -> real bucket name in this environment (identity if absent)."""
    archive_root: str | None = None
    mode: Mode = "due"
    subject: str | None = None
    dry_run: bool = False

    def hold_source(self, category: str) -> HoldSource:
        if self.holds is None:
            return no_holds
        holds, now = self.holds, self.now
        return lambda: holds(category, now)

    @property
    def subject_ref(self) -> str | None:
        """The subject as it may appear in the ledger and receipts: a keyed pseudonym."""
        return pseudonymise(self.pseudonym_key, self.subject) if self.subject is not None else None


@dataclass
class StepSummary:
    """What one category x store step did: counts and a digest, never items."""

    run_id: str
    category: str
    store: str
    mode: str
    dry_run: bool
    located: int = 0
    """Items the step acted on: located ones in a dry run; in a real run the ones its batches
    named, or for key ranges the rows they turned out to hold."""
    erased: int = 0
    anonymised: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    kept_until: dict[str, str] = field(default_factory=dict)
    failed: int = 0
    remaining: int = 0
    verified: bool = False
    digest: str = ""
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One-line summary for the end of a task log."""
        kept = ",".join(f"{k}={v}" for k, v in sorted(self.kept.items())) or "0"
        return (
            f"category={self.category} store={self.store} mode={self.mode} dry_run={self.dry_run} "
            f"located={self.located} erased={self.erased} anonymised={self.anonymised} kept={kept} "
            f"failed={self.failed} remaining={self.remaining} verified={self.verified}"
        )


@dataclass
class CategoryPlan:
    """What a category's run would do, and whether it may run without a human."""

    category: str
    stores: list[str]
    records: int
    """Records selected for erasure or anonymisation (not held)."""
    total: int
    """All records in the category's table (for the fraction cap)."""
    held: int
    locations: dict[str, int]
    needs_approval: bool
    approval_reason: str | None
    kept_by_law: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- selection and targets ------------------------------------------------------------------------


def selection_for(policy: Policy, ctx: RunContext) -> RowSelection:
    """The records a run acts on in this category."""
    rec = policy.records
    cutoff = cutoff_for(policy.retention, ctx.now)
    base = RowSelection(
        table=rec.table, key=rec.key, subject_column=rec.subject, anchor=policy.retention.anchor
    )
    if ctx.mode == "due":
        return _replace(base, cutoff=cutoff)
    if ctx.subject is None:
        raise TerminalError("subject mode needs a subject")
    if policy.erasure_request.action == "erase":
        return _replace(base, subject=ctx.subject)
    return _replace(base, subject=ctx.subject, cutoff=cutoff)


def _replace(sel: RowSelection, **changes: Any) -> RowSelection:
    return dataclasses.replace(sel, **changes)


def targets_for(policy: Policy, store: str, ctx: RunContext) -> list[tuple[str, Any]]:
    """(location label, adapter target) for each of the category's locations in ``store``."""
    from retention.adapters.s3 import S3Target
    from retention.adapters.sftp import SftpTarget

    sel = selection_for(policy, ctx)
    holds = ctx.hold_source(policy.id)
    out: list[tuple[str, Any]] = []
    for loc in policy.locations:
        if loc.store != store:
            continue
        if isinstance(loc, DatabaseLocation):
            target: Any = TableTarget(
                category=policy.id,
                selection=sel,
                table=loc.table,
                action=loc.action,
                foreign_key=loc.foreign_key,
                fields=loc.fields,
                holds=holds,
                pseudonym_key=ctx.pseudonym_key,
            )
            out.append((location_label(loc), target))
        elif isinstance(loc, S3Location):
            bucket = ctx.bucket_map.get(loc.bucket, loc.bucket)
            target = S3Target(
                category=policy.id,
                bucket=bucket,
                key_template=loc.key,
                records=_records(ctx.database, sel, placeholders(loc.key)),
                subject_field=policy.records.subject,
                holds=holds,
            )
            out.append((location_label(loc), target))
        elif isinstance(loc, SftpLocation):
            if not ctx.archive_root:
                raise TerminalError(f"{policy.id}: an SFTP location needs the archive root")
            target = SftpTarget(
                category=policy.id,
                root=ctx.archive_root,
                path_template=loc.path,
                records=_records(ctx.database, sel, placeholders(loc.path)),
                subject_field=policy.records.subject,
                holds=holds,
            )
            out.append((location_label(loc), target))
    return out


def location_label(loc: DatabaseLocation | S3Location | SftpLocation) -> str:
    """How a location is named in plans and the ledger: the policy's template, never a rendered key."""
    if isinstance(loc, DatabaseLocation):
        return f"table:{loc.table}"
    if isinstance(loc, S3Location):
        return f"s3:{loc.bucket}/{loc.key}"
    return f"sftp:{loc.path}"


def _records(db: DatabaseAdapter, sel: RowSelection, columns: list[str]) -> Callable[[], Any]:
    return lambda: db.iter_records(sel, columns)


def adapter_for(store: str, ctx: RunContext) -> Any:
    adapter = {"database": ctx.database, "s3": ctx.s3, "sftp": ctx.sftp}[store]
    if adapter is None:
        raise TerminalError(f"no client configured for store {store!r}")
    return adapter


# -- planning -------------------------------------------------------------------------------------


def plan_category(policy: Policy, ctx: RunContext) -> CategoryPlan:
    """Count what the category's run would touch; decide whether it needs approval. Touches nothing."""
    sel = selection_for(policy, ctx)
    holds = ctx.hold_source(policy.id)()
    db = ctx.database
    records = db.count(sel, holds)
    selected_all = db.count(sel)
    total = db.total(policy.records.table)
    # Child tables hold rows of these records, not records: -1 says "rows of the records above".
    locations = {
        location_label(loc): records
        if not isinstance(loc, DatabaseLocation) or loc.foreign_key is None
        else -1
        for loc in policy.locations
    }
    needs, why = _cap_check(policy, records, total) if ctx.mode == "due" else (False, None)
    kept = kept_by_law(policy, ctx) if ctx.mode == "subject" else None
    return CategoryPlan(
        category=policy.id,
        stores=policy.stores(),
        records=records,
        total=total,
        held=selected_all - records,
        locations=locations,
        needs_approval=needs,
        approval_reason=why,
        kept_by_law=kept,
    )


def _cap_check(policy: Policy, records: int, total: int) -> tuple[bool, str | None]:
    cap = policy.cap
    if records > cap.max_items:
        return True, f"{records} records exceed the cap of {cap.max_items}"
    if total and records / total > cap.max_fraction:
        return (
            True,
            f"{records} of {total} records ({records / total:.1%}) exceed the cap of {cap.max_fraction:.0%}",
        )
    return False, None


def kept_by_law(policy: Policy, ctx: RunContext) -> dict[str, Any] | None:
    """In subject mode, what a ``keep_until_due`` category keeps: count, law and until-dates."""
    if policy.erasure_request.action != "keep_until_due" or ctx.subject is None:
        return None
    sel = _replace(selection_for(policy, ctx), not_due=True)
    count, earliest, latest = ctx.database.anchor_range(sel)
    if not count:
        return None
    return {
        "count": count,
        "law": policy.erasure_request.law,
        "until_earliest": _iso(until_for(policy.retention, earliest)),
        "until_latest": _iso(until_for(policy.retention, latest)),
    }


def _iso(value: date | datetime) -> str:
    return value.isoformat()


# -- execution ------------------------------------------------------------------------------------


def execute_step(policy: Policy, store: str, ctx: RunContext) -> StepSummary:
    """Locate, erase and verify one category in one store; record every decision in the ledger.

    A dry run locates (it counts what exists); a real run takes its batches from ``named``
    where the adapter has it (what the index names: erase looks anyway), else from
    ``locate``. Every batch's intent is in the ledger before it is erased; its outcome goes
    in with the next batch's intent (one ledger transaction a batch), or with the verdict.

    Idempotent: a retry acts only on what is still there. Raises ``EraseFailedError`` when a
    store reported items not erased and ``VerificationError`` when looking again finds any.
    """
    summary = StepSummary(ctx.run_id, policy.id, store, ctx.mode, ctx.dry_run)
    adapter = adapter_for(store, ctx)
    action = "delete"
    digest = KeyDigest()
    pending: list[LedgerEntry] = []
    try:
        for label, target in targets_for(policy, store, ctx):
            action = getattr(target, "action", "delete")
            for batch in _batches(adapter, target, ctx):
                digest.update(batch.keys if batch.span is None else [batch.span])
                if ctx.dry_run:
                    summary.located += batch.count
                    continue
                outcome = _erase_batch(policy, store, label, action, adapter, target, batch, ctx, pending)
                summary.located += batch.count if batch.span is None else _acted_on(outcome)
                _merge(summary, outcome)
                if outcome.failed:
                    summary.digest = digest.hexdigest()
                    raise EraseFailedError(
                        f"{policy.id}/{store}: {outcome.failed} item(s) not erased "
                        f"({', '.join(outcome.errors[:3])})"
                    )
            if ctx.dry_run:
                continue
            check = adapter.verify(target)
            pending.append(_verify_entry(policy, store, label, action, check, ctx))
            summary.remaining += check.remaining
            if store == "database" and check.kept:
                # The database never locates held rows; looking again is where they are counted.
                summary.kept["legal_hold"] = max(summary.kept.get("legal_hold", 0), check.kept)
    except BaseException:
        # The outcomes of what was done must reach the ledger even when the step stops.
        _flush_after_error(ctx, pending)
        raise
    _append_many(ctx, pending)
    summary.digest = digest.hexdigest()
    if not ctx.dry_run:
        summary.verified = summary.remaining == 0
        if summary.remaining:
            raise VerificationError(
                f"{policy.id}/{store}: {summary.remaining} item(s) still present after erasure"
            )
    log.info(summary.line())
    return summary


def _batches(adapter: Any, target: Any, ctx: RunContext) -> Iterator[Batch[Any]]:
    """A dry run's batches are located (it counts what exists); a real run's are named where possible."""
    named = getattr(adapter, "named", None)
    if ctx.dry_run or named is None:
        return cast("Iterator[Batch[Any]]", adapter.locate(target))
    return cast("Iterator[Batch[Any]]", named(target))


def _acted_on(outcome: EraseOutcome) -> int:
    return outcome.erased + outcome.anonymised + outcome.failed + sum(outcome.kept.values())


def _erase_batch(
    policy: Policy,
    store: str,
    label: str,
    action: str,
    adapter: Any,
    target: Any,
    batch: Batch[Any],
    ctx: RunContext,
    pending: list[LedgerEntry],
) -> EraseOutcome:
    """Write the intent (with the batch before's outcome from ``pending``), erase, leave the outcome there."""
    batch_digest = KeyDigest()
    batch_digest.update(batch.keys if batch.span is None else [batch.span])
    entry = functools.partial(
        LedgerEntry,
        run_id=ctx.run_id,
        category=policy.id,
        store=store,
        location=label,
        action=action,
        items_digest=batch_digest.hexdigest(),
        subject_ref=ctx.subject_ref,
        policy_set_hash=ctx.policies.hash,
    )
    # Intent first: a crash between here and the outcome leaves a visible "planned" entry. A
    # key range does not know its count before it is erased: the outcome entry has it.
    if batch.span is None:
        intent = entry(outcome="planned", count=batch.count)
    else:
        intent = entry(outcome="planned", count=0, detail={"named_by": "key_range"})
    pending.append(intent)
    _append_many(ctx, pending)
    outcome: EraseOutcome = adapter.erase(target, batch)
    if outcome.erased or outcome.anonymised:
        done = "erased" if outcome.erased else "anonymised"
        pending.append(entry(outcome=done, count=outcome.erased or outcome.anonymised))
    for reason, n in outcome.kept.items():
        pending.append(entry(outcome="kept", count=n, reason=reason, until=outcome.kept_until.get(reason)))
    if outcome.failed:
        errors = sorted(set(outcome.errors))[:5]
        pending.append(
            entry(outcome="failed", count=outcome.failed, reason="store_error", detail={"errors": errors})
        )
    return outcome


def _append_many(ctx: RunContext, entries: list[LedgerEntry]) -> None:
    """Write ``entries`` in one ledger transaction and empty the list; a dry run records nothing."""
    if entries and ctx.ledger is not None and not ctx.dry_run:
        ctx.ledger.append_many(entries)
    entries.clear()


def _flush_after_error(ctx: RunContext, pending: list[LedgerEntry]) -> None:
    try:
        _append_many(ctx, pending)
    except Exception:  # noqa: BLE001 - the step's own error is the one to raise
        log.exception("could not record %d ledger entr(ies) after the step stopped", len(pending))


def _verify_entry(
    policy: Policy, store: str, label: str, action: str, check: VerifyOutcome, ctx: RunContext
) -> LedgerEntry:
    return LedgerEntry(
        run_id=ctx.run_id,
        category=policy.id,
        store=store,
        location=label,
        action=action,
        outcome="verified" if check.remaining == 0 else "verify_failed",
        count=check.remaining,
        items_digest=None,
        subject_ref=ctx.subject_ref,
        reason=None,
        until=None,
        policy_set_hash=ctx.policies.hash,
        detail={"kept": check.kept},
    )


def _append(ctx: RunContext, entry: LedgerEntry) -> None:
    """Write one ledger entry; a dry run records nothing."""
    if ctx.ledger is not None and not ctx.dry_run:
        ctx.ledger.append(entry)


def _merge(summary: StepSummary, outcome: EraseOutcome) -> None:
    summary.erased += outcome.erased
    summary.anonymised += outcome.anonymised
    for reason, n in outcome.kept.items():
        summary.kept[reason] = summary.kept.get(reason, 0) + n
        until = outcome.kept_until.get(reason)
        if until and until > summary.kept_until.get(reason, ""):
            summary.kept_until[reason] = until
    summary.failed += outcome.failed
    summary.errors.extend(outcome.errors[: max(0, 5 - len(summary.errors))])


def _records_entry(ctx: RunContext, policy: Policy, **fields: Any) -> LedgerEntry:
    """A ledger entry about a category's records table as a whole."""
    return LedgerEntry(
        run_id=ctx.run_id,
        category=policy.id,
        store="database",
        location=f"table:{policy.records.table}",
        subject_ref=ctx.subject_ref,
        policy_set_hash=ctx.policies.hash,
        **fields,
    )


def record_kept_by_law(policy: Policy, ctx: RunContext) -> dict[str, Any] | None:
    """Subject mode: write the statutory keep of a category to the ledger and return it."""
    kept = kept_by_law(policy, ctx)
    if kept:
        entry = _records_entry(
            ctx,
            policy,
            action="keep",
            outcome="kept",
            count=kept["count"],
            reason=kept["law"],
            until=kept["until_latest"],
        )
        _append(ctx, entry)
    return kept


def database_blockers(
    policy: Policy, file_steps: Sequence[Mapping[str, Any]], not_run: Mapping[str, str]
) -> str | None:
    """Why a category's database rows must not be erased now, or None.

    The rows are the index of the category's files: they stay while a file step did not
    run or was not verified, or kept files for a reason other than a legal hold (an
    object lock: the row must still name the object when the lock ends). A category also
    waits for every category it runs ``after`` (their rows may reference its rows).
    """
    if policy.id in not_run:
        return not_run[policy.id]
    for dep in policy.after:
        if dep in not_run:
            return f"blocked: {dep} did not complete"
    for store in policy.stores():
        if store == "database":
            continue
        step = next(
            (s for s in file_steps if s.get("category") == policy.id and s.get("store") == store), None
        )
        if step is None or (not step.get("verified") and not step.get("dry_run")):
            return f"{store} step not verified"
        if any(reason != "legal_hold" for reason in (step.get("kept") or {})):
            return f"{store} kept files under a storage lock; their rows stay as the index"
    return None


def database_pass(
    ctx: RunContext, file_steps: Sequence[Mapping[str, Any]], not_run: Mapping[str, str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Erase the database locations of every category, in policy order; return results and skips.

    A category that cannot run (see ``database_blockers``) or fails blocks the categories that
    run after it; independent categories still run. Transient errors propagate at once (the
    whole pass is idempotent); terminal ones are re-raised after the pass with the rest done.
    """
    results: list[dict[str, Any]] = []
    skipped = dict(not_run)
    failure: RetentionError | None = None
    for policy in ctx.policies.policies:
        if "database" not in policy.stores():
            continue
        why = database_blockers(policy, file_steps, skipped)
        if why is not None:
            skipped.setdefault(policy.id, why)
            _append(ctx, _records_entry(ctx, policy, action="skip", outcome="skipped", count=0, reason=why))
            continue
        try:
            summary = execute_step(policy, "database", ctx).to_dict()
        except RetentionError as e:
            if not e.terminal:
                raise
            failure = failure or e
            skipped[policy.id] = f"failed: {type(e).__name__}"
            continue
        if ctx.mode == "subject":
            summary["kept_by_law"] = record_kept_by_law(policy, ctx)
        results.append(summary)
    if failure is not None:
        raise failure
    return results, skipped


def run_all(
    ctx: RunContext, *, approved: Callable[[CategoryPlan], bool] | None = None
) -> list[dict[str, Any]]:
    """Plan and execute every category the way the DAGs do, in one process (tests, the demo's check).

    A category over its cap runs only if ``approved(plan)`` says so; otherwise it is
    recorded as awaiting approval and skipped, with the categories that run after it.
    """
    results: list[dict[str, Any]] = []
    not_run: dict[str, str] = {}
    for policy in ctx.policies.policies:
        plan = plan_category(policy, ctx)
        if plan.needs_approval and not ctx.dry_run and not (approved and approved(plan)):
            request_approval(plan, ctx)
            not_run[policy.id] = "needs_approval"
            results.append({"category": policy.id, "skipped": "needs_approval", "plan": plan.to_dict()})
            continue
        for store in policy.stores():
            if store != "database":
                results.append(execute_step(policy, store, ctx).to_dict())
    db_results, _ = database_pass(ctx, results, not_run)
    return results + db_results


def request_approval(plan: CategoryPlan, ctx: RunContext) -> None:
    """Record that a category's plan exceeds its cap and waits for a human."""
    _append(
        ctx,
        LedgerEntry(
            run_id=ctx.run_id,
            category=plan.category,
            store="*",
            location="*",
            action="approval",
            outcome="approval_requested",
            count=plan.records,
            subject_ref=ctx.subject_ref,
            reason=plan.approval_reason,
            policy_set_hash=ctx.policies.hash,
        ),
    )
