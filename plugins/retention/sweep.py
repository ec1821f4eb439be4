"""The orphan sweep: items in the file stores that no record names.

The engine finds files through the database: a real run erases what the rows name. Whatever no
row names is never found by it: an upload whose transaction rolled back, a file left after its row
was removed by hand, a copy put in the archive, an S3 prefix a new feature writes to. The sweep
(DAG ``retention_sweep``) lists every root the policies' file locations use and finds the items
that no record of any category names and that are older than a grace period.

- **Roots.** A location's root is its template's fixed part, cut back to the last ``/``
  (``documents/`` of ``documents/{customer_id}/{id}.pdf``; ``""``, the whole bucket or archive,
  of ``{s3_key}``). The file locations of every category in one place (a real bucket, the
  archive, the share) are listed together: a root nested in another one is part of it.
- **Named.** An item is named when a record row of any location in the same place renders it,
  exactly or, for a directory template, as a prefix; a row no record reaches still names (it keeps
  its item). Listing is streamed in pages; each page's keys are read back into column values
  (``paths.parses``) and looked up with one indexed query per naming location
  (``DatabaseAdapter.naming_not_erasable`` with a selection that may erase nothing), so memory stays
  flat and the cost is one listing plus one indexed read per page and location.
- **Orphans.** An unnamed item is an orphan once it is older than the grace of every location
  covering it (``orphans.grace``, default seven days: an upload in progress is never one). It
  may be erased only if every location whose root covers it says ``orphans.action: erase``; else it
  is reported. A key the engine would never use (empty, absolute, ``..``, control characters, or
  read back through a template with an empty or padded value) is reported, never erased.
- **Holds.** Legal holds of every category with a location in the place keep an orphan: prefix
  holds always; a held customer only where a template names the records' subject column itself
  (``documents/{customer_id}/...``) and the key fits it, for an orphan has no record to say whose it
  is (``{s3_key}``: prefix holds only).
- **Erasure** goes through the store's adapter (``retention.sweep_stores``), so the rules are the
  engine's: holds read again immediately before each batch, S3 versions under Object Lock kept and
  counted, the index looked up again (a record naming an item by then keeps it), symlinks never
  followed nor removed, emptied directories pruned as the adapter does. Each batch's intent and
  outcome go to the ledger (counts and digests of keys, never keys), at most ``budget`` orphans are
  erased (the cap, or what a human approved), and the root is listed again afterwards: an orphan
  left that should be gone fails the step (``VerificationError``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from retention import stores
from retention.adapters.base import EraseOutcome, HoldSet, KeyDigest
from retention.adapters.database import RowSelection
from retention.engine import RunContext
from retention.errors import EraseFailedError, TerminalError, UnsafeTargetError, VerificationError
from retention.ledger import LedgerEntry
from retention.locations import FileLocation, Hop, Orphans, S3Location
from retention.paths import check_relative, fixed_part, is_prefix, naming_prefixes, parses, placeholders
from retention.policy import Policy
from retention.results import Decision, Reason
from retention.sweep_stores import Entry, batch_of, erase_target, listing, unlocked_items

log = logging.getLogger(__name__)

DEFAULT_CAP = 1000
"""Orphans (S3 keys with all their versions, or files) one root may lose without a human's approval."""
PAGE = 500
"""Listed items compared with the index at a time (and erased together)."""
SWEEP_ACTION = "orphan_sweep"
"""The ledger ``action`` of a root's summary entry (and ``sweep`` of the run's)."""


def grace_of(orphans: Orphans) -> timedelta:
    """``orphans.grace`` (``P<n>D``) as a duration."""
    return timedelta(days=int(orphans.grace[1:-1]))


@dataclass(frozen=True)
class Namer:
    """One file location of one category: which record rows name items through its template."""

    category: str
    template: str
    orphans: Orphans
    selection: RowSelection
    """The category's records, selected so that none may be erased: every row that names counts."""
    hops: tuple[Hop, ...] = ()
    subject: str | None = None
    """The records' subject column, where the template names it itself (holds of a customer)."""

    @property
    def prefix(self) -> str:
        return fixed_part(self.template)

    @property
    def erases(self) -> bool:
        return self.orphans.action == "erase"


@dataclass(frozen=True)
class Root:
    """A prefix of one place that the sweep lists, with every location that may name items there."""

    store: str
    place: str
    """The real bucket, or the root directory of the archive or the share."""
    prefix: str
    label: str
    """How the root is named in the DAG, XCom and the ledger: store, policy bucket and prefix."""
    namers: tuple[Namer, ...]
    """Every file location of every category in the same place (those of other roots name nothing here)."""
    excluded: tuple[str, ...] = ()
    """Prefixes never looked at (the receipts: the proof of erasures, named by no record)."""

    def covering(self, key: str) -> list[Namer]:
        """The locations whose root covers ``key``: they decide its grace and what happens to it."""
        return [n for n in self.namers if key.startswith(n.prefix)]

    @property
    def may_erase(self) -> bool:
        """Whether any location under this root lets orphans be erased (else the root only reports)."""
        return any(n.erases and n.prefix.startswith(self.prefix) for n in self.namers)

    @property
    def categories(self) -> list[str]:
        return sorted({n.category for n in self.namers})

    @property
    def laws(self) -> list[str]:
        """The legal bases the root's ``erase`` locations give (for the ledger)."""
        return sorted({n.orphans.law for n in self.namers if n.erases and n.orphans.law})


def roots(ctx: RunContext, excluded: Collection[tuple[str, str, str]] = ()) -> list[Root]:
    """Every root of the policy set's file locations in this environment (real buckets and root
    directories from ``ctx``), in store order. ``excluded``: (store, real place, prefix) never listed."""
    places: dict[tuple[str, str], list[Namer]] = {}
    buckets: dict[tuple[str, str], set[str]] = {}
    for policy in ctx.policies.policies:
        for loc in policy.file_locations():
            place = (loc.store, _place(loc, ctx))
            places.setdefault(place, []).append(_namer(policy, loc))
            if isinstance(loc, S3Location):
                buckets.setdefault(place, set()).add(loc.bucket)
    out: list[Root] = []
    for (store, real), namers in places.items():
        prefixes = sorted({n.prefix for n in namers})
        skip = tuple(sorted(p for s, where, p in excluded if (s, where) == (store, real)))
        for top in prefixes:
            if any(top != p and top.startswith(p) for p in prefixes):
                continue  # nested in a shorter root: listed with it
            label = _label(store, buckets.get((store, real), set()), top)
            out.append(Root(store, real, top, label, tuple(namers), skip))
    return sorted(out, key=lambda r: (stores.ORDER.index(r.store), r.label))


def root_named(ctx: RunContext, label: str, excluded: Collection[tuple[str, str, str]] = ()) -> Root:
    """The root called ``label``; TerminalError if the policies no longer have it."""
    for root in roots(ctx, excluded):
        if root.label == label:
            return root
    raise TerminalError(f"the policies have no orphan-sweep root {label}")


def _namer(policy: Policy, loc: FileLocation) -> Namer:
    rec = policy.records
    hops = loc.hops(rec.table)
    selection = RowSelection(
        table=rec.table,
        key=rec.key,
        subject_column=rec.subject,
        anchor=policy.retention.anchor or "",
        never_due=True,
    )
    subject = rec.subject if not hops and rec.subject in placeholders(loc.template) else None
    return Namer(policy.id, loc.template, loc.orphans, selection, hops, subject)


def _place(loc: FileLocation, ctx: RunContext) -> str:
    if isinstance(loc, S3Location):
        return ctx.bucket_map.get(loc.bucket, loc.bucket)
    root = ctx.roots.get(loc.store)
    if not root:
        raise TerminalError(f"the orphan sweep needs the root directory of store {loc.store!r} configured")
    return root


def _label(store: str, buckets: Iterable[str], prefix: str) -> str:
    where = "+".join(sorted(buckets)) + "/" if store == "s3" else ""
    return f"{store}:{where}{prefix}*"


# -- finding --------------------------------------------------------------------------------------


@dataclass
class Found:
    """What a pass over a root found, in keys (S3, with all their versions) or files."""

    listed: int = 0
    named: int = 0
    recent: int = 0
    """Younger than the grace: never orphans (named or not, not looked up)."""
    links: int = 0
    """Symlinks (archive, share): never followed, never removed."""
    excluded: int = 0
    orphans: int = 0
    held: int = 0
    """Orphans a legal hold keeps."""
    reported: int = 0
    """Orphans reported only: a covering location says ``report``, or the key is unsafe."""
    unsafe: int = 0
    erasable: int = 0
    """Orphans the policies let the sweep erase (not held when found)."""

    def add(self, other: Found) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class Orphan:
    entry: Entry
    erase: bool
    """Every covering location says erase, and the key is safe to use."""
    unsafe: bool
    subjects: frozenset[str]
    """Customers the key names where a template names the subject column (for holds)."""


@dataclass(frozen=True)
class Page:
    """One page of a root's listing: its orphans and its counts."""

    orphans: list[Orphan]
    found: Found


def find_orphans(ctx: RunContext, root: Root, page_size: int = PAGE) -> Iterator[Page]:
    """Stream the root's listing in pages, each compared with the index; touches nothing."""
    items = listing(ctx.adapter(root.store), root.store, root.place, root.prefix)
    page: list[Entry] = []
    for entry in items:
        page.append(entry)
        if len(page) == page_size:
            yield _page(ctx, root, page)
            page = []
    if page:
        yield _page(ctx, root, page)


def _page(ctx: RunContext, root: Root, entries: Sequence[Entry]) -> Page:
    found = Found(listed=len(entries))
    candidates: list[Entry] = []
    for e in entries:
        covering = root.covering(e.key)
        if any(e.key.startswith(p) for p in root.excluded):
            found.excluded += 1
        elif e.link:
            found.links += 1
        elif not covering or e.modified >= ctx.now - max(grace_of(n.orphans) for n in covering):
            found.recent += 1
        else:
            candidates.append(e)
    named = named_keys(ctx, root, [e.key for e in candidates])
    orphans = [_orphan(root, e) for e in candidates if e.key not in named]
    found.named = len(candidates) - len(orphans)
    found.orphans = len(orphans)
    holds = root_holds(ctx, root) if orphans else HoldSet()
    for o in orphans:
        if held(holds, o):
            found.held += 1
        elif o.erase:
            found.erasable += 1
        else:
            found.reported += 1
            found.unsafe += o.unsafe
    return Page(orphans, found)


def named_keys(ctx: RunContext, root: Root, keys: Sequence[str]) -> frozenset[str]:
    """Of ``keys``, those a record row of any location in the root's place names (exactly or by prefix)."""
    named: set[str] = set()
    for namer in root.namers:
        rest = [k for k in keys if k.startswith(namer.prefix) and k not in named]
        if rest:
            named |= ctx.database.naming_not_erasable(
                namer.selection, HoldSet(), namer.template, rest, namer.hops
            )
    return frozenset(named)


def _orphan(root: Root, entry: Entry) -> Orphan:
    covering = root.covering(entry.key)
    unsafe = unsafe_key(entry.key, covering)
    return Orphan(
        entry=entry,
        erase=not unsafe and all(n.erases for n in covering),
        unsafe=unsafe,
        subjects=_subjects(entry.key, covering),
    )


def _readings(key: str, namer: Namer) -> Iterator[dict[str, str]]:
    """Every assignment of the namer's placeholders that renders the key (or, for a directory
    template, one of its ``/``-terminated prefixes)."""
    for text in naming_prefixes(key) if is_prefix(namer.template) else [key]:
        yield from parses(namer.template, text)


def unsafe_key(key: str, namers: Sequence[Namer]) -> bool:
    """A key the engine would never use: not a clean relative path, or read back through a template
    with an empty or padded value (a row may hold that value, but the engine never renders it)."""
    try:
        check_relative(key, "key")
    except UnsafeTargetError:
        return True
    return any(
        any(not v or v != v.strip() for v in values.values()) for n in namers for values in _readings(key, n)
    )


def _subjects(key: str, namers: Sequence[Namer]) -> frozenset[str]:
    return frozenset(values[n.subject] for n in namers if n.subject for values in _readings(key, n))


def root_holds(ctx: RunContext, root: Root) -> HoldSet:
    """The holds in force now in every category with a location in the root's place."""
    sets = [ctx.hold_source(category)() for category in root.categories]
    return HoldSet(
        subjects=frozenset().union(*(s.subjects for s in sets)),
        prefixes=tuple(sorted({p for s in sets for p in s.prefixes})),
    )


def held(holds: HoldSet, orphan: Orphan) -> bool:
    """A prefix hold covers the key, or a hold covers a customer the key names."""
    return holds.path_held(orphan.entry.key) or any(holds.subject_held(s) for s in orphan.subjects)


# -- planning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPlan:
    """What a root's sweep would do (counts only): the approval step reads it."""

    root: str
    store: str
    scanned: bool
    """False for a root that only reports: its one listing is the sweep step's."""
    listed: int
    orphans: int
    held: int
    reported: int
    erasable: int
    cap: int
    needs_approval: bool
    dry_run: bool
    subject: str = ""
    body: str = ""


def plan_root(ctx: RunContext, root: Root, cap: int = DEFAULT_CAP) -> SweepPlan:
    """Count the root's orphans; over ``cap`` erasable ones, the sweep waits for a human."""
    found = Found()
    if root.may_erase:
        for page in find_orphans(ctx, root):
            found.add(page.found)
    needs = found.erasable > cap
    plan = SweepPlan(
        root=root.label,
        store=root.store,
        scanned=root.may_erase,
        listed=found.listed,
        orphans=found.orphans,
        held=found.held,
        reported=found.reported,
        erasable=found.erasable,
        cap=cap,
        needs_approval=needs,
        dry_run=ctx.dry_run,
    )
    if not needs:
        return plan
    ctx.record(_entry(ctx, root, action="approval", outcome="approval_requested", count=found.erasable))
    subject = f"Approve erasing {found.erasable} unnamed items in {root.label}?"
    body = (
        f"The orphan sweep found **{found.erasable}** items in `{root.label}` that no record names, older "
        f"than their grace period, which the policies let it erase; the cap is {cap}.\n\n"
        f"| found | count |\n|---|---:|\n| listed | {found.listed} |\n| orphans | {found.orphans} |\n"
        f"| kept by legal hold | {found.held} |\n| reported only | {found.reported} |\n\n"
        "*Approve* erases them now (every version), with verification and ledger entries. *Reject* "
        "erases nothing; next week's sweep asks again. Unsure? Reject, and look at the runbook."
    )
    return dataclasses.replace(plan, subject=subject, body=body)


# -- erasing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """What a root's sweep did, in counts (its task's XCom): found (keys or files) and erased (items:
    S3 versions and delete markers, or files)."""

    root: str
    store: str
    dry_run: bool
    listed: int
    named: int
    recent: int
    links: int
    excluded: int
    orphans: int
    held: int
    reported: int
    unsafe: int
    erasable: int
    erased: int
    kept: dict[str, int]
    """Items kept while erasing, per reason: ``legal_hold``, ``storage_lock``,
    ``shared_with_not_due`` (a record names it by then), ``over_cap``."""
    failed: int
    remaining: int
    """Items left after erasing that should be gone (a failed verification)."""
    verified: bool
    digest: str
    """SHA-256 over the orphans' keys, in listing order."""

    def line(self) -> str:
        kept = ",".join(f"{reason}={n}" for reason, n in sorted(self.kept.items())) or "0"
        return (
            f"SUMMARY root={self.root} listed={self.listed} orphans={self.orphans} reported={self.reported} "
            f"held={self.held} recent={self.recent} links={self.links} erased={self.erased} kept={kept} "
            f"remaining={self.remaining} verified={self.verified} dry_run={self.dry_run}"
        )


@dataclass
class _Tally:
    found: Found = field(default_factory=Found)
    outcome: EraseOutcome = field(default_factory=EraseOutcome)
    digest: KeyDigest = field(default_factory=KeyDigest)
    cleared: int = 0
    """Orphans handed to the adapter so far (against the budget)."""
    over_cap: int = 0
    """Items left because erasing them would have exceeded the budget."""

    def result(self, root: Root, ctx: RunContext, remaining: int) -> SweepResult:
        return SweepResult(
            root=root.label,
            store=root.store,
            dry_run=ctx.dry_run,
            erased=self.outcome.erased,
            kept={reason.value: n for reason, n in sorted(self.outcome.kept.items())},
            failed=self.outcome.failed,
            remaining=remaining,
            verified=not ctx.dry_run and remaining == 0,
            digest=self.digest.hexdigest(),
            **dataclasses.asdict(self.found),
        )


def sweep_root(ctx: RunContext, root: Root, budget: int = DEFAULT_CAP) -> SweepResult:
    """Find the root's orphans and erase those the policies allow, at most ``budget`` of them; look
    again; record every batch and the root's summary in the ledger (a dry run: the summary only).

    Raises ``EraseFailedError`` when the store refused items, ``VerificationError`` when looking again
    finds orphans that should be gone, and ``TerminalError`` when more were erasable than ``budget``.
    """
    adapter = ctx.adapter(root.store)
    tally = _Tally()
    for page in find_orphans(ctx, root):
        tally.found.add(page.found)
        tally.digest.update(o.entry.key for o in page.orphans)
        todo = [o for o in page.orphans if o.erase]
        if todo and not ctx.dry_run:
            _erase_page(ctx, root, adapter, todo, tally, budget)
    remaining = 0
    if tally.found.erasable and not ctx.dry_run:
        remaining = max(0, _look_again(ctx, root, adapter) - tally.over_cap)
    result = tally.result(root, ctx, remaining)
    _record_result(ctx, root, result, tally.over_cap)
    log.info(result.line())
    if remaining:
        raise VerificationError(f"{root.label}: {remaining} unnamed item(s) still present after erasure")
    if tally.over_cap:
        raise TerminalError(
            f"{root.label}: more unnamed items were erasable than cleared ({budget}); "
            f"{tally.over_cap} item(s) were left: run the sweep again to plan and approve them"
        )
    return result


def _erase_page(
    ctx: RunContext, root: Root, adapter: Any, todo: Sequence[Orphan], tally: _Tally, budget: int
) -> None:
    """Erase one page's erasable orphans not held now, through the store's adapter."""
    holds = root_holds(ctx, root)
    kept = [o.entry for o in todo if held(holds, o)]
    free = [o.entry for o in todo if not held(holds, o)]
    entries: list[LedgerEntry] = []
    if kept:
        # Customers held by subject (read back from the key); the adapter checks prefixes itself too.
        tally.outcome.keep(Reason.LEGAL_HOLD, sum(e.items for e in kept))
        entries.append(_kept_entry(ctx, root, kept, Reason.LEGAL_HOLD))
    if free and (tally.over_cap or tally.cleared + len(free) > budget):
        # Fail closed: never more than cleared; once over, nothing more is erased.
        n = sum(e.items for e in free)
        tally.over_cap += n
        tally.outcome.keep(Reason.OVER_CAP, n)
        entries.append(_kept_entry(ctx, root, free, Reason.OVER_CAP))
        free = []
    ctx.record(*entries)
    if not free:
        return
    tally.cleared += len(free)
    batch = batch_of(root.store, free)
    digest = KeyDigest()
    digest.update(batch.keys)
    ctx.record(_entry(ctx, root, outcome="planned", count=batch.count, items_digest=digest.hexdigest()))
    target = erase_target(
        root.store,
        root.place,
        root.prefix,
        holds=lambda: root_holds(ctx, root),
        named=lambda keys: named_keys(ctx, root, keys),
    )
    outcome = adapter.erase(target, batch)
    tally.outcome.add(outcome)
    ctx.record(*_outcome_entries(ctx, root, outcome, digest.hexdigest()))
    if outcome.failed:
        raise EraseFailedError(
            f"{root.label}: {outcome.failed} unnamed item(s) not erased ({', '.join(outcome.errors[:3])})"
        )


def _look_again(ctx: RunContext, root: Root, adapter: Any) -> int:
    """Items of erasable orphans still present that no hold or storage lock keeps."""
    remaining = 0
    for page in find_orphans(ctx, root):
        if not page.found.erasable:
            continue
        holds = root_holds(ctx, root)
        left = [o.entry for o in page.orphans if o.erase and not held(holds, o)]
        remaining += unlocked_items(adapter, root.store, root.place, left)
    return remaining


# -- the ledger -------------------------------------------------------------------------------------


def _entry(ctx: RunContext, root: Root, **fields: Any) -> LedgerEntry:
    """An entry about a root: no category (a root spans categories), its label as the location."""
    fields.setdefault("action", "delete")
    return LedgerEntry(
        run_id=ctx.run_id,
        store=root.store,
        location=root.label,
        policy_set_hash=ctx.policies.hash,
        **fields,
    )


def _kept_entry(ctx: RunContext, root: Root, kept: Sequence[Entry], reason: Reason) -> LedgerEntry:
    batch = batch_of(root.store, kept)
    digest = KeyDigest()
    digest.update(batch.keys)
    return _entry(
        ctx, root, outcome="kept", count=batch.count, reason=reason.value, items_digest=digest.hexdigest()
    )


def _outcome_entries(ctx: RunContext, root: Root, outcome: EraseOutcome, digest: str) -> list[LedgerEntry]:
    entries = []
    if outcome.erased:
        entries.append(_entry(ctx, root, outcome="erased", count=outcome.erased, items_digest=digest))
    for reason, n in sorted(outcome.kept.items()):
        until = outcome.kept_until.get(reason)
        entries.append(_entry(ctx, root, outcome="kept", count=n, reason=reason.value, until=until))
    if outcome.failed:
        errors = sorted(set(outcome.errors))[:5]
        entries.append(
            _entry(
                ctx,
                root,
                outcome="failed",
                count=outcome.failed,
                reason=Reason.FAILED.value,
                detail={"errors": errors},
            )
        )
    return entries


def _record_result(ctx: RunContext, root: Root, result: SweepResult, over_cap: int) -> None:
    """The root's summary (also in a dry run: the ledger shows the sweep happened) and its verification."""
    counts = {
        k: v for k, v in dataclasses.asdict(result).items() if isinstance(v, int) and not isinstance(v, bool)
    }
    detail = {
        **counts,
        "kept": result.kept,
        "dry_run": result.dry_run,
        "laws": [law[:200] for law in root.laws],
    }
    entries = [
        _entry(
            ctx,
            root,
            action=SWEEP_ACTION,
            outcome="summary",
            count=result.orphans,
            items_digest=result.digest,
            detail=detail,
        )
    ]
    if result.erasable and not ctx.dry_run:
        entries.append(
            _entry(
                ctx,
                root,
                outcome="verified" if result.remaining == 0 else "verify_failed",
                count=result.remaining,
                detail={"left_over_cap": over_cap},
            )
        )
    if ctx.ledger is not None:
        ctx.ledger.append_many(entries)


# -- a whole sweep ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepRun:
    """What every step of one sweep shares (XCom ``sweep``): no keys, no personal data."""

    run_id: str
    now: datetime
    dry_run: bool
    cap: int
    policy_set_hash: str
    roots: tuple[str, ...]


@dataclass(frozen=True)
class SweepSummary:
    """The run's totals over its roots (the last task's XCom)."""

    run_id: str
    dry_run: bool
    roots: int
    orphans: int
    reported: int
    held: int
    erased: int
    kept: dict[str, int]
    rejected: tuple[str, ...]
    """Roots whose erasure a human rejected: nothing erased there."""
    chain_ok: bool
    problems: tuple[str, ...]
    """Why the run fails (alerts): reported orphans, unanswered approvals, failed steps, the chain."""


@dataclass(frozen=True)
class RootOutcome:
    """One root's plan, the human's decision (where the plan needed one) and its sweep's result."""

    plan: SweepPlan | None
    decision: Decision | None
    result: SweepResult | None


def finish(
    ctx: RunContext, run: SweepRun, outcomes: Mapping[str, RootOutcome], failed_tasks: Sequence[str] = ()
) -> SweepSummary:
    """Record the approvals, verify the ledger's chain, write the run's summary. The summary's
    ``problems`` say why the run must fail: orphans reported by a real sweep (they need a human), an
    approval not answered, a root not swept, a failed task, a broken chain."""
    problems: list[str] = [f"task {t} failed" for t in failed_tasks]
    rejected: list[str] = []
    entries: list[LedgerEntry] = []
    for label, o in outcomes.items():
        problems += _root_problems(label, o, run.dry_run)
        if o.plan is not None and o.plan.needs_approval and not run.dry_run:
            decision = o.decision or Decision.NO_ANSWER
            if decision is Decision.REJECTED:
                rejected.append(label)
            entries.append(_decision_entry(ctx, o.plan, decision))
    results = [o.result for o in outcomes.values() if o.result is not None]
    chain = ctx.ledger.verify_chain() if ctx.ledger is not None else None
    if chain is not None and not chain.ok:
        problems.append(f"ledger hash chain broken at seq {chain.first_bad_seq}")
    kept: dict[str, int] = {}
    for r in results:
        for reason, n in r.kept.items():
            kept[reason] = kept.get(reason, 0) + n
    summary = SweepSummary(
        run_id=run.run_id,
        dry_run=run.dry_run,
        roots=len(outcomes),
        orphans=sum(r.orphans for r in results),
        reported=sum(_reported(o) for o in outcomes.values()),
        held=sum(r.held for r in results),
        erased=sum(r.erased for r in results),
        kept=kept,
        rejected=tuple(rejected),
        chain_ok=chain is None or chain.ok,
        problems=tuple(problems),
    )
    if ctx.ledger is not None:
        detail = {"roots": summary.roots, "orphans": summary.orphans, "reported": summary.reported}
        detail |= {"held": summary.held, "erased": summary.erased, "dry_run": run.dry_run}
        summary_entry = LedgerEntry(
            run_id=ctx.run_id,
            action="sweep",
            outcome="summary",
            count=summary.erased,
            policy_set_hash=ctx.policies.hash,
            detail=detail,
        )
        ctx.ledger.append_many([*entries, summary_entry])
    return summary


def _reported(o: RootOutcome) -> int:
    if o.result is not None:
        return o.result.reported
    return o.plan.reported if o.plan is not None else 0


def _root_problems(label: str, o: RootOutcome, dry_run: bool) -> list[str]:
    if o.plan is None:
        return [f"{label}: no plan was recorded: nothing was erased"]
    waits = o.plan.needs_approval and not dry_run
    if waits and o.decision is None:
        return [f"{label}: the approval was not answered: nothing was erased"]
    if o.result is None and not (waits and o.decision is Decision.REJECTED):
        return [f"{label}: not swept"]
    reported = _reported(o)
    # A dry run counts and says so, like the nightly's: only a real sweep alerts on its findings.
    return [f"{label}: {reported} unnamed item(s) reported"] if reported and not dry_run else []


def _decision_entry(ctx: RunContext, plan: SweepPlan, decision: Decision) -> LedgerEntry:
    outcome = {Decision.APPROVED: "approved", Decision.REJECTED: "rejected", Decision.NO_ANSWER: "skipped"}
    return LedgerEntry(
        run_id=ctx.run_id,
        store=plan.store,
        location=plan.root,
        action="approval",
        outcome=outcome[decision],
        count=plan.erasable,
        policy_set_hash=ctx.policies.hash,
        reason=Reason.NO_ANSWER.value if decision is Decision.NO_ANSWER else None,
    )
