"""The typed values that pass between the engine's layers: plans, step results, skips, summaries.

Every value here is a frozen dataclass or an enum. Code decides on these values, never on
sentences: a ``Reason`` says why something was not erased, ``Skip.words()`` says it to a
human. JSON exists only at the edges (XCom, the ledger's ``detail``, the receipt), through
``retention.serde``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

Mode = Literal["due", "subject"]
"""``due``: the nightly run (what is due in every category); ``subject``: one customer's request."""


class Reason(StrEnum):
    """Why items, or a category's step, were not erased. The value is what the ledger records."""

    LEGAL_HOLD = "legal_hold"
    """A legal hold in the registry covers the customer or the key/path prefix."""
    STATUTORY = "statutory"
    """A law requires keeping the records longer (``keep_until_due`` on an erasure request)."""
    STORAGE_LOCK = "storage_lock"
    """The store itself refuses to erase before a date (S3 Object Lock); the row stays as the index."""
    AWAITING_APPROVAL = "awaiting_approval"
    """The plan is over the category's cap and no human has answered yet."""
    REJECTED = "rejected"
    """A human rejected the over-cap plan."""
    NO_ANSWER = "no_answer"
    """The approval request timed out unanswered."""
    BLOCKED_BY_DEPENDENCY = "blocked_by_dependency"
    """A category this one runs ``after`` did not complete."""
    FILES_UNVERIFIED = "files_unverified"
    """A file step of the category did not run or was not verified; its rows stay as the index."""
    FAILED = "failed"
    """The step failed (the error's class is recorded with it)."""
    SHARED_WITH_NOT_DUE = "shared_with_not_due"
    """The item is also named (exactly or through a prefix) by a record that may not be erased now."""
    UNSAFE_TARGET = "unsafe_target"
    """The stored key or path is empty, absolute, climbs out (``..``), is padded or has control
    characters: it is never erased or normalised; its record stays, and ops must fix the data."""
    BLOCKED_BY_REFERENCE = "blocked_by_reference"
    """Rows that other rows still reference (which stay, for their own reason) stay with them."""
    NO_PLAN = "no_plan"
    """No plan was recorded for the category (its plan task failed or was marked done by hand)."""
    OVER_CAP = "over_cap"
    """At erase time more is due than the cap allows without a human, or than a human approved."""
    POLICY_CHANGE = "policy_change_not_approved"
    """The deployed policy set differs from the last one approved and no human approved it (rejected,
    unanswered, or its approval task did not run): the nightly run erases nothing."""

    @property
    def accepted(self) -> bool:
        """A reason a run may end green with: a human's decision, the law, or a storage lock.

        ``BLOCKED_BY_DEPENDENCY`` is accepted exactly when the dependency's own reason is:
        see ``Skip.accepted``.
        """
        return self in _ACCEPTED

    @property
    def lawful_keep(self) -> bool:
        """Kept because the law or the store requires it (a hold, a statute, a storage lock): expected
        to last; any other reason left behind night after night is a problem to alert on."""
        return self in _LAWFUL

    @property
    def human_decision(self) -> bool:
        """The approval itself (waiting, rejected, unanswered) and not a property of the data."""
        return self in _HUMAN


_HUMAN = frozenset({Reason.AWAITING_APPROVAL, Reason.REJECTED, Reason.NO_ANSWER, Reason.POLICY_CHANGE})
_LAWFUL = frozenset({Reason.LEGAL_HOLD, Reason.STATUTORY, Reason.STORAGE_LOCK})
_ACCEPTED = _HUMAN | _LAWFUL

_WORDS = {
    Reason.LEGAL_HOLD: "kept under a legal hold",
    Reason.STATUTORY: "kept by law",
    Reason.STORAGE_LOCK: "files kept under a storage lock; their rows stay as the index",
    Reason.AWAITING_APPROVAL: "awaiting approval",
    Reason.REJECTED: "rejected",
    Reason.NO_ANSWER: "approval not answered",
    Reason.BLOCKED_BY_DEPENDENCY: "blocked",
    Reason.FILES_UNVERIFIED: "files not verified",
    Reason.FAILED: "failed",
    Reason.SHARED_WITH_NOT_DUE: "also named by a record that is not due",
    Reason.UNSAFE_TARGET: "stored key or path unsafe to use; kept",
    Reason.BLOCKED_BY_REFERENCE: "still referenced by rows that stay",
    Reason.NO_PLAN: "no plan recorded; nothing erased",
    Reason.OVER_CAP: "more due at erase time than the cap or the approval allows; nothing erased",
    Reason.POLICY_CHANGE: "the policy set changed and the change was not approved; nothing erased",
}


class Decision(StrEnum):
    """A human's answer to an over-cap plan."""

    APPROVED = "approved"
    REJECTED = "rejected"
    NO_ANSWER = "no_answer"

    @property
    def skip(self) -> Skip | None:
        """What the decision means for the category's erasure: None = go ahead."""
        if self is Decision.APPROVED:
            return None
        return Skip(Reason.REJECTED if self is Decision.REJECTED else Reason.NO_ANSWER)


@dataclass(frozen=True)
class Skip:
    """Why a category's database step did not run in this run."""

    reason: Reason
    store: str | None = None
    """For ``FILES_UNVERIFIED`` and ``STORAGE_LOCK``: the file store concerned."""
    blocked_by: str | None = None
    """For ``BLOCKED_BY_DEPENDENCY``: the category this one waits for."""
    error: str | None = None
    """For ``FAILED``: the error's class name (never its message, which may name data)."""

    def accepted(self, skipped: Mapping[str, Skip]) -> bool:
        """Whether a run may end green with this skip; a blocked one inherits its dependency's answer."""
        seen: set[str] = set()
        skip: Skip | None = self
        while skip is not None and skip.reason is Reason.BLOCKED_BY_DEPENDENCY:
            if skip.blocked_by is None or skip.blocked_by in seen:
                return False
            seen.add(skip.blocked_by)
            skip = skipped.get(skip.blocked_by)
        return skip is not None and skip.reason.accepted

    def words(self) -> str:
        """The skip in words, for logs and the UI; never parsed."""
        text = _WORDS[self.reason]
        if self.blocked_by:
            text += f" by {self.blocked_by}"
        if self.store and self.reason is Reason.FILES_UNVERIFIED:
            text = f"{self.store} step not verified; its rows stay as the index"
        if self.error:
            text += f" ({self.error})"
        return text

    def detail(self) -> dict[str, str]:
        """The skip's particulars for the ledger's ``detail`` (names of stores, categories, errors)."""
        out = {"store": self.store, "blocked_by": self.blocked_by, "error": self.error}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_ledger(cls, reason: str | None, detail: Mapping[str, object] | None) -> Skip | None:
        """The skip a ledger entry recorded (``reason`` and ``detail``); None for an unknown reason."""
        try:
            known = Reason(reason or "")
        except ValueError:
            return None
        given = detail or {}
        store, blocked_by, error = (given.get(k) for k in ("store", "blocked_by", "error"))
        return cls(
            known,
            store=store if isinstance(store, str) else None,
            blocked_by=blocked_by if isinstance(blocked_by, str) else None,
            error=error if isinstance(error, str) else None,
        )


@dataclass(frozen=True)
class KeptByLaw:
    """In a customer's request: what a ``keep_until_due`` category keeps, under which law, until when."""

    count: int
    law: str
    until_earliest: str
    until_latest: str


@dataclass(frozen=True)
class ApprovalRequest:
    """What the approval form shows a human: counts only, no personal data."""

    subject: str
    body: str


@dataclass(frozen=True)
class CategoryPlan:
    """What a category's run would do, and whether it may run without a human."""

    category: str
    stores: tuple[str, ...]
    records: int
    """Records selected for erasure or anonymisation (not held)."""
    total: int | None
    """All records in the category's table where a nightly plan may be over the cap (the approval
    form shows it); None where the cap needed no full count (``engine.over_cap``) or has no say."""
    held: int
    locations: Mapping[str, int]
    """Location label -> items; -1 for a child table (its rows belong to the records counted)."""
    needs_approval: bool
    approval_reason: str | None
    dry_run: bool = False
    kept_by_law: KeptByLaw | None = None
    approval: ApprovalRequest | None = None
    """Set when ``needs_approval``: the form's subject and body."""
    on_request_only: bool = False
    """A nightly plan of a category without a retention clock: nothing is due by age."""
    undated: int = 0
    """A nightly plan: records (not held) with no date to count from: a NULL anchor (an event that
    has not happened: an open job, an active consent) or, through ``anchor_via``, a NULL reference
    (an orphaned row) or no dated row at all. Never due by age; reported, never guessed."""


@dataclass(frozen=True)
class StepResult:
    """What one category x store step did: counts and a digest, never items."""

    run_id: str
    category: str
    store: str
    mode: Mode
    dry_run: bool
    located: int = 0
    """Items the step acted on: located ones in a dry run; in a real run the ones its batches
    named, or for key ranges the rows they turned out to hold."""
    erased: int = 0
    anonymised: int = 0
    kept: Mapping[Reason, int] = field(default_factory=dict)
    kept_until: Mapping[Reason, str] = field(default_factory=dict)
    failed: int = 0
    remaining: int = 0
    verified: bool = False
    digest: str = ""
    errors: tuple[str, ...] = ()
    kept_by_law: KeptByLaw | None = None
    """Subject mode, database step of a ``keep_until_due`` category: the statutory keep."""

    @property
    def kept_total(self) -> int:
        return sum(self.kept.values())

    def line(self) -> str:
        """One-line summary for the end of a task log."""
        kept = ",".join(f"{k.value}={v}" for k, v in sorted(self.kept.items())) or "0"
        return (
            f"category={self.category} store={self.store} mode={self.mode} dry_run={self.dry_run} "
            f"located={self.located} erased={self.erased} anonymised={self.anonymised} kept={kept} "
            f"failed={self.failed} remaining={self.remaining} verified={self.verified}"
        )


@dataclass(frozen=True)
class DatabasePass:
    """The ordered database pass: one result per category that ran, a skip per one that did not."""

    results: tuple[StepResult, ...] = ()
    skipped: Mapping[str, Skip] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    """What every task of a run shares: its identity, clock, mode and the policy set it was planned with.

    Never the subject: a customer id stays in the trigger's params, not in XCom.
    """

    run_id: str
    mode: Mode
    now: datetime
    dry_run: bool
    policy_set_hash: str
    categories: tuple[str, ...]
    stores: Mapping[str, tuple[str, ...]]
    """Category -> its stores, file stores first."""
    reason: str | None = None
    """A request's reason (``params.REASONS``; None in a nightly run): it chose ``categories``."""
    places: Mapping[str, str] = field(default_factory=dict)
    """Where the policies' names point in this deployment (``retention_settings``):
    ``s3:<policy bucket>`` -> the real bucket, ``sftp``/``filesystem`` -> the root. Every later
    step must see the same, and the run summary records it."""
    approved_policy_set: str | None = None
    """The hash of the policy set last approved for erasing runs (the ledger's newest
    ``policy_set_approved``); None: none yet, and the first real nightly run puts its own in force."""

    def uses(self, category: str, store: str) -> bool:
        return store in self.stores.get(category, ())

    @property
    def policy_change(self) -> bool:
        """Whether this run's policy set differs from the one last approved (a human must approve it
        before a nightly run erases under it)."""
        return self.approved_policy_set is not None and self.approved_policy_set != self.policy_set_hash


@dataclass(frozen=True)
class Totals:
    located: int = 0
    erased: int = 0
    anonymised: int = 0
    kept: int = 0
    failed: int = 0

    @classmethod
    def of(cls, results: tuple[StepResult, ...] | list[StepResult]) -> Totals:
        return cls(
            located=sum(r.located for r in results),
            erased=sum(r.erased for r in results),
            anonymised=sum(r.anonymised for r in results),
            kept=sum(r.kept_total for r in results),
            failed=sum(r.failed for r in results),
        )


@dataclass(frozen=True)
class Proof:
    """Whether a run proved its work: every expected step verified, the ledger chain intact."""

    unproven: tuple[str, ...]
    """``category/store`` of steps that should have erased and verified but have no proof."""
    failed_tasks: tuple[str, ...]
    chain_ok: bool
    chain_checked: int
    chain_head: str
    chain_problem: str | None = None
    chain_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.chain_ok and not self.unproven and not self.failed_tasks


@dataclass(frozen=True)
class RunSummary:
    """The nightly run's answer: totals, what was not erased and why, and its proof."""

    run_id: str
    mode: Mode
    dry_run: bool
    now: datetime
    categories: int
    steps: int
    totals: Totals
    not_erased: Mapping[str, Skip]
    proof: Proof
    backlog: Mapping[str, Mapping[Reason, int]] = field(default_factory=dict)
    """Category -> reason -> due items (rows, object versions, files) left behind in this run."""
    persistent: tuple[str, ...] = ()
    """``category:reason`` backlogs, other than lawful keeps, left behind in consecutive nightly runs."""
    undated: Mapping[str, int] = field(default_factory=dict)
    """Category -> records with no date to count from (see ``CategoryPlan.undated``): never due by age."""
    places: Mapping[str, str] = field(default_factory=dict)
    """Where the run's policies pointed (``RunInfo.places``): the real buckets and roots."""


def backlog_of(
    results: Sequence[StepResult], skipped: Mapping[str, Skip], planned: Mapping[str, int]
) -> dict[str, dict[Reason, int]]:
    """Category -> reason -> due items not erased: what the steps kept, and the planned records of
    the categories that did not run (counted under their skip's reason)."""
    out: dict[str, dict[Reason, int]] = {}
    for r in results:
        for reason, n in r.kept.items():
            if n:
                out.setdefault(r.category, {})[reason] = out.get(r.category, {}).get(reason, 0) + n
        if r.kept_by_law is not None and r.kept_by_law.count:
            out.setdefault(r.category, {})[Reason.STATUTORY] = r.kept_by_law.count
    for category, skip in skipped.items():
        due = planned.get(category, 0)
        if due:
            reasons = out.setdefault(category, {})
            reasons[skip.reason] = reasons.get(skip.reason, 0) + due
    return {c: dict(sorted(r.items())) for c, r in sorted(out.items())}
