"""One category in one store: selecting records, building targets, planning and erasing.

Two modes share one path:

- ``due``: the nightly run; every category's records whose retention has passed.
- ``subject``: one customer's request; categories whose ``erasure_request`` is ``erase``
  lose all of that customer's records, categories that must be kept by law
  (``keep_until_due``) lose only what is due and report the rest as kept, naming the law
  and the until-dates.

Every batch is written to the ledger as intent before it is erased and as outcome after;
each store is verified by looking again, and a leftover fails the step. The rules of a
whole run (approvals, the ordered database pass, proof, the chain) are in
``retention.flow``, which calls this module.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from retention import failpoints, stores
from retention.adapters.base import (
    PATH_KEY,
    PATH_SUBJECT,
    Batch,
    EraseOutcome,
    HoldSet,
    HoldSource,
    KeyDigest,
    Record,
    RecordSource,
    SharedCheck,
    StoreAdapter,
    VerifyOutcome,
    no_holds,
    not_shared,
)
from retention.adapters.database import DatabaseAdapter, RowSelection
from retention.clock import cutoff_for, until_for
from retention.errors import EraseFailedError, TerminalError, UnsafeTargetError, VerificationError
from retention.intents import IntentItems, item_refs, unfinished
from retention.journal import Committed, JournalTag, unfinished_ranges
from retention.keeps import KeptRecords
from retention.ledger import MAX_PAGE, Ledger, LedgerEntry
from retention.locations import AnyLocation, DatabaseLocation, FileLocation, Hop, S3Location
from retention.paths import render
from retention.policy import Policy, PolicySet
from retention.pseudonym import pseudonymise
from retention.results import CategoryPlan, KeptByLaw, Mode, Reason, StepResult
from retention.scope import in_scope

log = logging.getLogger(__name__)

HoldReader = Callable[[str, datetime], HoldSet]
"""(category, now) -> the legal holds in force for that category at that moment."""


@dataclass
class RunContext:
    """Everything one run needs: its identity, its clock, its policies and its adapters."""

    run_id: str
    now: datetime
    policies: PolicySet
    database: DatabaseAdapter
    pseudonym_key: bytes
    """The key of the run's pseudonyms (the subject's, and the ``pseudonym`` strategy's): the key of
    ``key_period`` (``retention.keyring``), so they stop linking when that period's key is destroyed."""
    ledger: Ledger | None = None
    keeps: KeptRecords | None = None
    """Where file steps note the records whose items they kept; None: rows are not kept for files."""
    intents: IntentItems | None = None
    """Where file steps note each batch's items before erasing it, so that a resumed step can
    count what a crashed attempt erased (``retention.intents``); None: not noted."""
    holds: HoldReader | None = None
    """None means no registry (tests of single stores)."""
    adapters: Mapping[str, StoreAdapter[Any]] = field(default_factory=dict)
    """File store name -> its adapter; only the stores this context was opened for."""
    bucket_map: Mapping[str, str] = field(default_factory=dict)
    """Policy bucket name -> real bucket name in this environment (identity if absent)."""
    roots: Mapping[str, str] = field(default_factory=dict)
    """Store -> root directory of its paths (``sftp``: the archive root, ``filesystem``: the share)."""
    mode: Mode = "due"
    subject: str | None = None
    dry_run: bool = False
    key_period: str | None = None
    """The period of ``pseudonym_key`` (the UTC year of ``now``); the run's ledger writes it into its
    entries. None: a key without a period (tests and the benchmark)."""
    reason: str = "erasure_request"
    """In subject mode, why the customer asked (``params.REASONS``): which categories it acts on
    (``retention.scope``) and which of their request rules applies."""

    def hold_source(self, category: str) -> HoldSource:
        if self.holds is None:
            return no_holds
        holds, now = self.holds, self.now
        return lambda: holds(category, now)

    def adapter(self, store: str) -> StoreAdapter[Any]:
        """The adapter of ``store``; TerminalError if this context has no client for it."""
        if store == stores.DATABASE:
            return self.database
        adapter = self.adapters.get(stores.spec(store).name)
        if adapter is None:
            raise TerminalError(f"no client configured for store {store!r}")
        return adapter

    @property
    def subject_ref(self) -> str | None:
        """The subject as it may appear in the ledger and receipts: a keyed pseudonym."""
        return pseudonymise(self.pseudonym_key, self.subject) if self.subject is not None else None

    def record(self, *entries: LedgerEntry) -> None:
        """Write entries in one ledger transaction; nothing in a dry run or without a ledger."""
        if entries and self.ledger is not None and not self.dry_run:
            self.ledger.append_many(entries)


# -- selection and targets ------------------------------------------------------------------------


def selection_for(policy: Policy, ctx: RunContext) -> RowSelection:
    """The records a run acts on in this category."""
    rec = policy.records
    clock = policy.retention.has_clock
    base = RowSelection(
        table=rec.table,
        key=rec.key,
        subject_column=rec.subject,
        anchor=policy.retention.anchor or "",
        anchor_path=policy.anchor_path(),
        anchor_zone=policy.retention.anchor_time_zone,
    )
    if ctx.mode == "due":
        if not clock:
            # Erased on request only: the nightly run selects nothing here (its plan says why).
            return dataclasses.replace(base, never_due=True)
        return dataclasses.replace(base, cutoff=cutoff_for(policy.retention, ctx.now))
    if ctx.subject is None:
        raise TerminalError("subject mode needs a subject")
    if not in_scope(policy, ctx.reason):
        # The request does not act on this category: none of its records may go (they still
        # name their files, so items they share with a category in scope stay too).
        return dataclasses.replace(base, subject=ctx.subject, never_due=True)
    if policy.erasure_request.rule(ctx.reason).action == "erase":
        return dataclasses.replace(base, subject=ctx.subject)
    return dataclasses.replace(base, subject=ctx.subject, cutoff=cutoff_for(policy.retention, ctx.now))


def targets_for(
    policy: Policy,
    store: str,
    ctx: RunContext,
    unsafe: set[str] | None = None,
    excluded: frozenset[str] = frozenset(),
) -> list[tuple[str, Any]]:
    """(location label, adapter target) for each of the category's locations in ``store``.

    A file location sees only the records whose key or path renders safely; the keys of the
    others go into ``unsafe`` (their items are never touched, their rows stay). The selection
    leaves out the ``excluded`` records (those this run's file steps kept).
    """
    sel = selection_for(policy, ctx)
    if excluded:
        sel = dataclasses.replace(sel, excluded=excluded)
    db = ctx.database
    out: list[tuple[str, Any]] = []
    for loc in policy.locations_in(store):
        hops, key_field, subject_field = _record_fields(policy, loc)

        def records(
            columns: Sequence[str],
            template: str | None = loc.template,
            hops: tuple[Hop, ...] = hops,
            key_field: str | None = key_field,
        ) -> RecordSource:
            if hops:
                source: RecordSource = lambda: db.iter_path_records(sel, hops, columns)  # noqa: E731
            else:
                source = lambda: db.iter_records(sel, columns)  # noqa: E731
            return source if template is None else _safe(source, template, key_field, unsafe)

        inputs = stores.TargetInputs(
            category=policy.id,
            selection=sel,
            records=records,
            subject_field=subject_field,
            key_field=key_field,
            holds=ctx.hold_source(policy.id),
            pseudonym_key=ctx.pseudonym_key,
            shared=not_shared if isinstance(loc, DatabaseLocation) else _shared_check(loc, ctx),
            bucket_map=ctx.bucket_map,
            roots=ctx.roots,
            tables=frozenset(d.table for d in policy.database_locations()),
            records_deleted=any(
                d.table == policy.records.table and d.action == "delete" for d in policy.database_locations()
            ),
        )
        out.append((location_label(loc), stores.build_target(loc, inputs)))
    return out


def _record_fields(policy: Policy, loc: AnyLocation) -> tuple[tuple[Hop, ...], str | None, str]:
    """A location's path from the records (none: the records name its items), and the fields of a
    streamed record holding the record's key and its subject.

    The key is what a kept item keeps: the records whose rows must stay so that the item stays
    named. Through a path, that is so only where the category also erases the rows that name the
    item (the path's last table is one of its database locations); rows it only reads name the
    item still, so a kept item then keeps only itself (key field None).
    """
    rec = policy.records
    if isinstance(loc, DatabaseLocation) or not loc.via:
        return (), rec.key, rec.subject
    hops = loc.hops(rec.table)
    erased_here = hops[-1].target in {d.table for d in policy.database_locations()}
    return hops, PATH_KEY if erased_here else None, PATH_SUBJECT


def _shared_check(loc: FileLocation, ctx: RunContext) -> SharedCheck:
    """Of item keys in ``loc``'s bucket or root, those that a record which may not be erased now also
    names, through any location of any category in the same place (this one included)."""
    place = _place(loc, ctx)
    namers = [
        (p, other)
        for p in ctx.policies.policies
        for other in p.file_locations()
        if _place(other, ctx) == place
    ]
    db = ctx.database

    def check(keys: Sequence[str]) -> frozenset[str]:
        blocked: set[str] = set()
        if keys:
            for policy, other in namers:
                holds = ctx.hold_source(policy.id)()
                sel = selection_for(policy, ctx)
                blocked |= db.naming_not_erasable(sel, holds, other.template, keys, other.hops(sel.table))
        return frozenset(blocked)

    return check


def _place(loc: FileLocation, ctx: RunContext) -> tuple[str, str]:
    """Where a location's items live: a store and its real bucket or root."""
    if isinstance(loc, S3Location):
        return loc.store, ctx.bucket_map.get(loc.bucket, loc.bucket)
    return loc.store, ctx.roots.get(loc.store, "")


def _safe(source: RecordSource, template: str, key: str | None, unsafe: set[str] | None) -> RecordSource:
    """``source`` without the records whose ``template`` renders unsafely; their keys (in field
    ``key``, if any) go to ``unsafe``."""

    def records() -> Iterator[Sequence[Record]]:
        for batch in source():
            safe = []
            for record in batch:
                try:
                    render(template, record)
                except UnsafeTargetError:
                    if unsafe is not None and key is not None:
                        unsafe.add(str(record.get(key)))
                    continue
                safe.append(record)
            yield safe

    return records


def location_label(loc: AnyLocation) -> str:
    """How a location is named in plans and the ledger: the policy's template, never a rendered key."""
    return loc.label()


# -- planning -------------------------------------------------------------------------------------


def plan_category(policy: Policy, ctx: RunContext) -> CategoryPlan:
    """Count what the category's run would touch; decide whether it needs approval. Touches nothing."""
    sel = selection_for(policy, ctx)
    holds = ctx.hold_source(policy.id)()
    db = ctx.database
    records = db.count(sel, holds)
    selected_all = db.count(sel)
    # Child tables hold rows of these records, not records: -1 says "rows of the records above".
    locations = {
        location_label(loc): -1
        if loc.via or (isinstance(loc, DatabaseLocation) and loc.foreign_key)
        else records
        for loc in policy.locations
    }
    why, total = over_cap(policy, records, db) if ctx.mode == "due" else (None, None)
    clocked = ctx.mode == "due" and policy.retention.has_clock
    return CategoryPlan(
        category=policy.id,
        stores=tuple(policy.stores()),
        records=records,
        total=total,
        held=selected_all - records,
        locations=locations,
        needs_approval=why is not None,
        approval_reason=why,
        dry_run=ctx.dry_run,
        kept_by_law=kept_by_law(policy, ctx) if ctx.mode == "subject" else None,
        on_request_only=ctx.mode == "due" and not policy.retention.has_clock,
        undated=db.count_undated(sel, holds) if clocked else 0,
    )


def over_cap(policy: Policy, records: int, db: DatabaseAdapter) -> tuple[str | None, int | None]:
    """Why ``records`` exceed the category's blast-radius cap (or None), and the rows of its table
    if they had to be counted (or None).

    The fraction cap needs the table's size only to rule out a plan that is too large: ``records``
    are within it once the table is known to hold ``records / max_fraction`` rows, so only that
    many are counted (the cost follows the due records, not the stored ones) and the whole table
    is counted only for a plan that may be over the cap, where the approval form shows the count.
    """
    cap = policy.cap
    if records <= cap.max_items:
        enough = math.ceil(records / cap.max_fraction)
        # Within the cap against at least ``seen`` rows is within it against all of them.
        seen = db.total_at_least(policy.records.table, enough)
        if cap_exceeded(policy, records, seen) is None:
            return None, None
    total = db.total(policy.records.table)
    return cap_exceeded(policy, records, total), total


def cap_exceeded(policy: Policy, records: int, total: int) -> str | None:
    """Why ``records`` of ``total`` exceed the category's blast-radius cap, or None."""
    cap = policy.cap
    if records > cap.max_items:
        return f"{records} records exceed the cap of {cap.max_items}"
    if total and records / total > cap.max_fraction:
        return (
            f"{records} of {total} records ({records / total:.1%}) exceed the cap of {cap.max_fraction:.0%}"
        )
    return None


def kept_by_law(policy: Policy, ctx: RunContext) -> KeptByLaw | None:
    """In subject mode, what a ``keep_until_due`` category keeps: count, law and until-dates."""
    rule = policy.erasure_request.rule(ctx.reason)
    law = rule.law
    if rule.action != "keep_until_due" or ctx.subject is None or law is None:
        return None
    sel = dataclasses.replace(selection_for(policy, ctx), not_due=True)
    count, earliest, latest = ctx.database.anchor_range(sel)
    if not count:
        return None
    return KeptByLaw(
        count=count,
        law=law,
        until_earliest=_iso(until_for(policy.retention, earliest)),
        until_latest=_iso(until_for(policy.retention, latest)),
    )


def _iso(value: date | datetime) -> str:
    return value.isoformat()


# -- execution ------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """A step's counts while it runs; ``result()`` freezes them."""

    located: int = 0
    outcome: EraseOutcome = field(default_factory=EraseOutcome)
    remaining: int = 0
    verify_kept: int = 0
    referenced: int = 0
    shared: int = 0
    """Rows of join paths kept because records not erased now reach them too."""

    def result(self, policy: Policy, store: str, ctx: RunContext, digest: KeyDigest) -> StepResult:
        kept = dict(self.outcome.kept)
        if store == stores.DATABASE and self.verify_kept:
            # The database never locates held rows; looking again is where they are counted.
            kept[Reason.LEGAL_HOLD] = max(kept.get(Reason.LEGAL_HOLD, 0), self.verify_kept)
        if self.referenced:
            kept[Reason.BLOCKED_BY_REFERENCE] = self.referenced
        if self.shared:
            kept[Reason.SHARED_WITH_NOT_DUE] = kept.get(Reason.SHARED_WITH_NOT_DUE, 0) + self.shared
        return StepResult(
            run_id=ctx.run_id,
            category=policy.id,
            store=store,
            mode=ctx.mode,
            dry_run=ctx.dry_run,
            located=self.located,
            erased=self.outcome.erased,
            anonymised=self.outcome.anonymised,
            kept=kept,
            kept_until=dict(self.outcome.kept_until),
            failed=self.outcome.failed,
            remaining=self.remaining,
            verified=not ctx.dry_run and self.remaining == 0,
            digest=digest.hexdigest(),
            errors=tuple(self.outcome.errors[:5]),
        )


def execute_step(policy: Policy, store: str, ctx: RunContext) -> StepResult:
    """Locate, erase and verify one category in one store; record every decision in the ledger.

    A dry run locates (it counts what exists); a real run takes its batches from ``named``
    (what the index names: erase looks anyway). Every batch's intent is in the ledger before
    it is erased; its outcome goes in with the next batch's intent (one ledger transaction a
    batch), or with the verdict.

    Idempotent: a retry acts only on what is still there. Raises ``EraseFailedError`` when a
    store reported items not erased and ``VerificationError`` when looking again finds any.
    """
    adapter = ctx.adapter(store)
    tally = _Tally()
    digest = KeyDigest()
    pending: list[LedgerEntry] = []
    unsafe: set[str] = set()
    kept_rows = _kept_rows(policy, store, ctx)
    resumed = _Resumed.of(policy, store, ctx)
    try:
        for label, target in targets_for(policy, store, ctx, unsafe, frozenset(kept_rows)):
            action = str(getattr(target, "action", "delete"))
            batches = adapter.locate(target) if ctx.dry_run else adapter.named(target)
            for batch in batches:
                digest.update(batch.keys if batch.span is None else [batch.span])
                if ctx.dry_run:
                    tally.located += batch.count
                    continue
                outcome = _erase_batch(policy, store, label, action, adapter, target, batch, ctx, pending)
                resumed.still_there(batch, outcome)
                tally.located += batch.count if batch.span is None else _acted_on(outcome)
                tally.outcome.add(outcome)
                if outcome.failed:
                    raise EraseFailedError(
                        f"{policy.id}/{store}: {outcome.failed} item(s) not erased "
                        f"({', '.join(outcome.errors[:3])})"
                    )
            if ctx.dry_run:
                continue
            check = adapter.verify(target)
            pending.append(_verify_entry(policy, store, label, action, check, ctx))
            if check.shared:
                # Rows of a join path that records not erased now reach too: kept, and said so.
                pending.append(
                    LedgerEntry(
                        run_id=ctx.run_id,
                        category=policy.id,
                        store=store,
                        location=label,
                        action="keep",
                        outcome="kept",
                        count=check.shared,
                        reason=Reason.SHARED_WITH_NOT_DUE.value,
                        subject_ref=ctx.subject_ref,
                        policy_set_hash=ctx.policies.hash,
                    )
                )
            tally.remaining += check.remaining
            tally.verify_kept = max(tally.verify_kept, check.kept)
            tally.referenced = max(tally.referenced, check.referenced)
            tally.shared += check.shared
        pending.extend(_kept_entries(policy, store, ctx, tally.outcome, unsafe, kept_rows))
        pending.extend(resumed.entries(tally.outcome))
    except BaseException:
        # The outcomes of what was done must reach the ledger even when the step stops.
        _flush_after_error(ctx, pending)
        raise
    ctx.record(*pending)
    resumed.done(acted=bool(tally.outcome.erased or tally.outcome.anonymised))
    result = tally.result(policy, store, ctx, digest)
    if result.remaining:
        raise VerificationError(
            f"{policy.id}/{store}: {result.remaining} item(s) still present after erasure"
        )
    log.info(result.line())
    return result


@dataclass
class _Resumed:
    """Batches an earlier attempt of this step announced and never recorded an outcome for: the
    items this attempt no longer finds were erased by that attempt, and are counted as such."""

    policy: Policy
    store: str
    ctx: RunContext
    missing: dict[str, set[str]] = field(default_factory=dict)
    """Batch digest -> the refs of its items not found (yet) by this attempt."""
    locations: dict[str, str] = field(default_factory=dict)
    committed: dict[tuple[str, str], Committed] = field(default_factory=dict)
    """Database: (location, digest) -> what the stopped attempt's committed transactions did."""
    actions: dict[tuple[str, str], str] = field(default_factory=dict)
    """Database: (location, digest) -> the action announced for it."""

    @classmethod
    def of(cls, policy: Policy, store: str, ctx: RunContext) -> _Resumed:
        resumed = cls(policy, store, ctx)
        if ctx.dry_run or ctx.ledger is None:
            return resumed
        if store == stores.DATABASE:
            if ctx.database.journal is not None:
                resumed.actions = unfinished_ranges(_run_entries(ctx.ledger, ctx.run_id, policy.id))
                resumed.committed = ctx.database.journal.of(ctx.run_id, policy.id, resumed.actions)
            return resumed
        if ctx.intents is None:
            return resumed
        entries = _run_entries(ctx.ledger, ctx.run_id, policy.id)
        resumed.locations = unfinished(entries, store)
        if resumed.locations:
            resumed.missing = ctx.intents.of(ctx.run_id, policy.id, store, resumed.locations)
        return resumed

    def done(self, *, acted: bool) -> None:
        """The step ended and its outcomes are in the ledger: forget its notes (a database step
        that erased nothing, and reconciled nothing, wrote none)."""
        if self.ctx.dry_run:
            return
        if self.store == stores.DATABASE and self.ctx.database.journal is not None:
            if not acted:
                return
            self.ctx.database.journal.forget(self.ctx.run_id, self.policy.id)
        elif self.store != stores.DATABASE and self.ctx.intents is not None:
            self.ctx.intents.clear(self.ctx.run_id, self.policy.id, self.store)

    def still_there(self, batch: Batch[Any], outcome: EraseOutcome) -> None:
        """This attempt named ``batch`` and erased it (``outcome``): what it erased itself is counted
        by it, not by the stopped attempt; what it found already gone stays counted there."""
        if self.missing and batch.span is None:
            found = item_refs(self.ctx.pseudonym_key, batch.keys)
            found -= item_refs(self.ctx.pseudonym_key, outcome.absent)
            for refs in self.missing.values():
                refs -= found

    def entries(self, outcome: EraseOutcome) -> list[LedgerEntry]:
        """The outcomes of the stopped attempt's batches: erased, what this attempt did not find
        (file stores), or what the erase journal says its transactions committed (database)."""
        out = self._committed_entries(outcome)
        for batch_digest, refs in sorted(self.missing.items()):
            outcome.erased += len(refs)
            out.append(
                LedgerEntry(
                    run_id=self.ctx.run_id,
                    category=self.policy.id,
                    store=self.store,
                    location=self.locations.get(batch_digest) or _store_label(self.policy, self.store),
                    action="delete",
                    outcome="erased",
                    count=len(refs),
                    items_digest=batch_digest,
                    subject_ref=self.ctx.subject_ref,
                    policy_set_hash=self.ctx.policies.hash,
                    detail={"reconciled": "erased by an attempt that stopped before recording it"},
                )
            )
        return out

    def _committed_entries(self, outcome: EraseOutcome) -> list[LedgerEntry]:
        out = []
        for (location, batch_digest), did in sorted(self.committed.items()):
            outcome.erased += did.erased
            outcome.anonymised += did.anonymised
            for done, n in (("erased", did.erased), ("anonymised", did.anonymised)):
                if n:
                    out.append(
                        LedgerEntry(
                            run_id=self.ctx.run_id,
                            category=self.policy.id,
                            store=self.store,
                            location=location,
                            action=self.actions.get((location, batch_digest), "delete"),
                            outcome=done,
                            count=n,
                            items_digest=batch_digest,
                            subject_ref=self.ctx.subject_ref,
                            policy_set_hash=self.ctx.policies.hash,
                            detail={"reconciled": "committed by an attempt that stopped before recording it"},
                        )
                    )
        return out


def _run_entries(ledger: Ledger, run_id: str, category: str) -> list[dict[str, Any]]:
    """Every ledger entry of one run and category (pages of ``MAX_PAGE``)."""
    out: list[dict[str, Any]] = []
    while page := ledger.entries(run_id=run_id, category=category, offset=len(out), limit=MAX_PAGE):
        out.extend(page)
        if len(page) < MAX_PAGE:
            break
    return out


def _kept_rows(policy: Policy, store: str, ctx: RunContext) -> dict[str, Reason]:
    """For the database step: the records this run's file steps kept (their rows stay as the index)."""
    if store != stores.DATABASE or ctx.keeps is None or ctx.dry_run:
        return {}
    return ctx.keeps.of(ctx.run_id, policy.id)


def _kept_entries(
    policy: Policy,
    store: str,
    ctx: RunContext,
    outcome: EraseOutcome,
    unsafe: set[str],
    kept_rows: Mapping[str, Reason],
) -> list[LedgerEntry]:
    """Count what the step kept besides its batches (unsafe records, rows kept for their files)."""
    entries: list[LedgerEntry] = []
    extra: dict[Reason, int] = {}
    if unsafe:
        outcome.keep(Reason.UNSAFE_TARGET, len(unsafe), records=unsafe)
        extra[Reason.UNSAFE_TARGET] = len(unsafe)
        if ctx.keeps is not None and not ctx.dry_run:
            ctx.keeps.add(ctx.run_id, policy.id, {Reason.UNSAFE_TARGET: unsafe})
    for reason in kept_rows.values():
        extra[reason] = extra.get(reason, 0) + 1
    if store == stores.DATABASE:
        for reason, n in extra.items():
            outcome.keep(reason, n)
    for reason, n in sorted(extra.items()):
        entries.append(
            records_entry(ctx, policy, action="keep", outcome="kept", count=n, reason=reason.value)
            if store == stores.DATABASE
            else LedgerEntry(
                run_id=ctx.run_id,
                category=policy.id,
                store=store,
                location=_store_label(policy, store),
                action="keep",
                outcome="kept",
                count=n,
                reason=reason.value,
                subject_ref=ctx.subject_ref,
                policy_set_hash=ctx.policies.hash,
            )
        )
    return entries


def _store_label(policy: Policy, store: str) -> str:
    """The label of the category's location in ``store`` (``store:*`` when it has several)."""
    labels = [location_label(loc) for loc in policy.locations_in(store)]
    return labels[0] if len(labels) == 1 else f"{store}:*"


def _acted_on(outcome: EraseOutcome) -> int:
    return outcome.erased + outcome.anonymised + outcome.failed + sum(outcome.kept.values())


def _erase_batch(
    policy: Policy,
    store: str,
    label: str,
    action: str,
    adapter: StoreAdapter[Any],
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
        if ctx.intents is not None:
            refs = item_refs(ctx.pseudonym_key, batch.keys)
            ctx.intents.add(ctx.run_id, policy.id, store, batch_digest.hexdigest(), refs)
        pending.append(entry(outcome="planned", count=batch.count))
    else:
        pending.append(entry(outcome="planned", count=0, detail={"named_by": "key_range"}))
    ctx.record(*pending)
    pending.clear()
    if store == stores.DATABASE:
        batch = dataclasses.replace(
            batch, tag=JournalTag(ctx.run_id, policy.id, label, batch_digest.hexdigest())
        )
    outcome = adapter.erase(target, batch)
    failpoints.reach(f"after_erase:{store}")
    if outcome.kept_records and ctx.keeps is not None and not ctx.dry_run:
        ctx.keeps.add(ctx.run_id, policy.id, outcome.kept_records)
    # One batch may do both (a path's own rows deleted, the rows shared with others anonymised).
    for done, n in (("erased", outcome.erased), ("anonymised", outcome.anonymised)):
        if n:
            pending.append(entry(outcome=done, count=n))
    for reason, n in outcome.kept.items():
        pending.append(
            entry(outcome="kept", count=n, reason=reason.value, until=outcome.kept_until.get(reason))
        )
    if outcome.failed:
        errors = sorted(set(outcome.errors))[:5]
        pending.append(
            entry(
                outcome="failed", count=outcome.failed, reason=Reason.FAILED.value, detail={"errors": errors}
            )
        )
    return outcome


def _flush_after_error(ctx: RunContext, pending: list[LedgerEntry]) -> None:
    try:
        ctx.record(*pending)
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
        detail={"kept": check.kept, "shared": check.shared} if check.shared else {"kept": check.kept},
    )


def records_entry(ctx: RunContext, policy: Policy, **fields: Any) -> LedgerEntry:
    """A ledger entry about a category's records table as a whole."""
    return LedgerEntry(
        run_id=ctx.run_id,
        category=policy.id,
        store=stores.DATABASE,
        location=f"table:{policy.records.table}",
        subject_ref=ctx.subject_ref,
        policy_set_hash=ctx.policies.hash,
        **fields,
    )


def record_kept_by_law(policy: Policy, ctx: RunContext) -> KeptByLaw | None:
    """Subject mode: write the statutory keep of a category to the ledger and return it."""
    kept = kept_by_law(policy, ctx)
    if kept:
        ctx.record(
            records_entry(
                ctx,
                policy,
                action="keep",
                outcome="kept",
                count=kept.count,
                reason=Reason.STATUTORY.value,
                until=kept.until_latest,
                detail={"law": kept.law},
            )
        )
    return kept
