"""What the monitoring page shows, read from the ledger: runs, approvals, receipts, backlog, the last
sweep and coverage report, entries, chain status; and, beside the ledger, the pseudonym keys' periods.

Only counts, digests, codes and pseudonyms are read (the ledger holds nothing else). The
overview's queries look at the newest ``RECENT_WINDOW`` entries (and the newest
``BACKLOG_NIGHTS`` nightly summaries) only, so that a page load stays bounded however long the
ledger grows; the ledger page reaches every entry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from retention.anchor import Anchor
from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, check_table_name
from retention.keyring import KeyPeriod, Keyring
from retention.ledger import GENESIS_HASH, ChainStatus, Ledger
from retention.locks import Lease, Leases
from retention.results import Reason, Skip

log = logging.getLogger(__name__)

RECENT_WINDOW = 200_000
"""How many of the newest entries the overview's runs, approvals and receipts are taken from."""

APPROVAL_DECISIONS = ("approved", "rejected", "skipped")
"""Outcomes of an ``approval`` entry that answer a request (``skipped``: nobody answered in time)."""

SWEEP_ROOT_ACTION = "orphan_sweep"
"""A root's summary of the orphan sweep (``retention.sweep``): its counts in ``detail``."""
COVERAGE_ACTION = "coverage"
"""The coverage report's entry of the sweep (``retention_airflow.sweep_tasks``): findings in ``detail``."""
OTHER_RUN_ACTIONS = (SWEEP_ROOT_ACTION, "sweep", COVERAGE_ACTION, "housekeeping", "access_report")
"""Ledger actions of the DAGs that are no retention run: their runs are not listed as recent runs."""

BACKLOG_NIGHTS = 30
"""How many of the newest real nightly summaries the backlog's age (consecutive nights) is counted over."""

CHAIN_SYNC_LIMIT = 20_000
"""New entries a page load verifies itself; more are verified in the background meanwhile."""

NIGHTLY_DAG = "retention_nightly"
APPROVAL_TASK = "category.approve"


def _ledger_columns(name: str) -> sa.TableClause:
    return sa.table(
        check_table_name(name),
        sa.column("seq", sa.BigInteger()),
        sa.column("entry_id", sa.Text()),
        sa.column("recorded_at", UtcDateTime()),
        sa.column("run_id", sa.Text()),
        sa.column("category", sa.Text()),
        sa.column("store", sa.Text()),
        sa.column("location", sa.Text()),
        sa.column("action", sa.Text()),
        sa.column("outcome", sa.Text()),
        sa.column("count", sa.BigInteger()),
        sa.column("items_digest", sa.Text()),
        sa.column("subject_ref", sa.Text()),
        sa.column("reason", sa.Text()),
        sa.column("until", sa.Text()),
        sa.column("policy_set_hash", sa.Text()),
        sa.column("detail", sa.Text()),
        sa.column("prev_hash", sa.Text()),
        sa.column("entry_hash", sa.Text()),
    )


def _head_columns(name: str) -> sa.TableClause:
    return sa.table(
        name, sa.column("id", sa.Integer()), sa.column("last_seq", sa.BigInteger()), sa.column("last_hash")
    )


@dataclass(frozen=True)
class RunInfo:
    """One run as the ledger knows it: when its entries were written and whose erasure it was, if any."""

    run_id: str
    started: datetime
    ended: datetime
    entries: int
    subject_ref: str | None

    @property
    def kind(self) -> str:
        """``customer erasure`` when the run acted for one subject, else ``nightly``."""
        return "customer erasure" if self.subject_ref else "nightly"


@dataclass
class CategoryRow:
    """One category of one run: summed counts per outcome and the stores proven clean."""

    category: str
    erased: int = 0
    erased_by_store: dict[str, int] = field(default_factory=dict)
    """The erased count per store (rows, object versions, files are different units)."""
    anonymised: int = 0
    kept: int = 0
    failed: int = 0
    verified: list[str] = field(default_factory=list)
    """Stores whose last verification found nothing left (per location)."""
    unverified: list[str] = field(default_factory=list)
    """Stores whose last verification found items still present."""
    status: str = ""
    """Approval or skip state, if any (``awaiting approval``, ``approved``, ``skipped``...)."""

    def record_verification(self, store: str, clean: bool, held: int) -> None:
        """Take in one location's last verification; a store is verified only if all its locations are."""
        if not clean:
            if store in self.verified:
                self.verified.remove(store)
            if store not in self.unverified:
                self.unverified.append(store)
        elif store not in self.verified and store not in self.unverified:
            self.verified.append(store)
        if store == "database":
            self.kept += held


@dataclass(frozen=True)
class Housekeeping:
    """The newest purge of Airflow's own records of per-customer runs (``retention_housekeeping``)."""

    recorded_at: datetime
    run_id: str | None
    outcome: str
    """``erased``, ``planned`` (a dry run) or ``verify_failed`` (something was left)."""
    removed: int
    """Rows and log files removed (or, in a dry run, found)."""
    runs: int
    dry_run: bool


@dataclass(frozen=True)
class PendingApproval:
    """A category over its cap whose run has no later decision in the ledger."""

    seq: int
    recorded_at: datetime
    run_id: str
    category: str
    records: int
    reason: str | None

    @property
    def run_link(self) -> str:
        """Path of the run's *Required actions* tab in the Airflow UI."""
        return f"/dags/{NIGHTLY_DAG}/runs/{_quote(self.run_id)}/required_actions"

    @property
    def task_link(self) -> str:
        """Path of the approval task's mapped instances (one per category) in the Airflow UI."""
        return f"/dags/{NIGHTLY_DAG}/runs/{_quote(self.run_id)}/tasks/{APPROVAL_TASK}/mapped"


@dataclass(frozen=True)
class Receipt:
    """The ledger's reference to one stored erasure receipt."""

    seq: int
    recorded_at: datetime
    run_id: str
    subject_ref: str | None
    location: str | None
    digest: str | None
    erased: int
    kept: int
    verified: bool | None


@dataclass(frozen=True)
class PolicySetUse:
    """Since when the ledger shows a policy set at work: its first run summary (a run's ``summary``, dry
    runs included, or an erasure receipt's) after the newest summary under another policy set."""

    policy_set_hash: str
    since: datetime | None
    """When that first summary was recorded; None: no run has used this policy set yet."""
    first_run: str | None
    runs: int
    """Summaries under this policy set since then."""
    at_least: bool
    """No summary under another policy set among the entries read, and the ledger has older ones:
    the policy set may have been at work since earlier."""
    previous_hash: str | None
    """The policy set of the newest summary under another one (None: none among the entries read)."""
    previous_at: datetime | None


@dataclass(frozen=True)
class LedgerPage:
    """One page of entries (newest first) and where it lies among all matching entries."""

    entries: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    size: int


@dataclass(frozen=True)
class BacklogItem:
    """Due items of one category the newest nightly run did not erase, for one reason, and since when."""

    category: str
    reason: str
    """As the ledger recorded it (a ``Reason`` value)."""
    count: int
    nights: int
    """Consecutive real nightly runs, the newest included, whose summary has this category and reason."""
    at_least: bool
    """The run of nights reaches the oldest summary read: it may be longer."""

    @property
    def known(self) -> Reason | None:
        try:
            return Reason(self.reason)
        except ValueError:
            return None

    @property
    def words(self) -> str:
        """The reason in words (an unknown one as recorded)."""
        known = self.known
        if known is None:
            return self.reason
        return _BACKLOG_WORDS.get(known) or Skip(known).words()

    @property
    def lawful_keep(self) -> bool:
        """Kept because the law or the store requires it (hold, statute, storage lock); else: needs action."""
        known = self.known
        return known is not None and known.lawful_keep


@dataclass(frozen=True)
class Backlog:
    """The newest real nightly summary's ``backlog``, per category and reason, with each one's age."""

    items: list[BacklogItem]
    nights_read: int
    """How many real nightly summaries the ages were counted over (at most ``BACKLOG_NIGHTS``)."""

    @property
    def needs_action(self) -> int:
        return sum(1 for item in self.items if not item.lawful_keep)


@dataclass(frozen=True)
class SweepRoot:
    """The newest orphan-sweep summary of one root: found, reported, erased, held, and left as recent."""

    root: str
    recorded_at: datetime
    run_id: str | None
    found: int
    """Orphans: unnamed items older than the grace."""
    reported: int
    unsafe: int
    erased: int
    held: int
    recent: int
    dry_run: bool


@dataclass(frozen=True)
class CoverageReport:
    """The newest coverage report: findings per kind and their lines (names and counts only)."""

    recorded_at: datetime
    run_id: str | None
    total: int
    kinds: dict[str, int]
    lines: list[str]


@dataclass(frozen=True)
class LastSweep:
    """The overview's *Last sweep*: per root the newest summary, and the newest coverage report."""

    roots: list[SweepRoot]
    coverage: CoverageReport | None


def _int(detail: dict[str, Any], key: str) -> int:
    value = detail.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


COVERAGE_KINDS = ("table", "column", "prefix", "directory")

_BACKLOG_WORDS = {Reason.BLOCKED_BY_DEPENDENCY: "blocked by a category it runs after"}
"""Where ``Skip.words()`` needs particulars the summary's backlog does not record (which category blocked)."""


def _backlog_counts(detail: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(category, reason) -> due items not erased, from a summary's ``detail`` (malformed parts left out)."""
    recorded = detail.get("backlog")
    out: dict[tuple[str, str], int] = {}
    if not isinstance(recorded, dict):
        return out
    for category, reasons in recorded.items():
        if not isinstance(reasons, dict):
            continue
        for reason, n in reasons.items():
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                out[(str(category), str(reason))] = n
    return out


def _quote(value: str) -> str:
    return quote(value, safe="")


def _detail(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


class LedgerReader:
    """Read-only queries over one ledger table (and its head) for the monitoring page."""

    def __init__(self, engine: Engine, table_name: str = "retention_ledger", *, window: int = RECENT_WINDOW):
        self.engine = engine
        self.ledger = Ledger(engine, table_name)
        self._t = _ledger_columns(table_name)
        self._head = _head_columns(f"{table_name}_head")
        self._window = window

    def exists(self) -> bool:
        """Whether the ledger table and its head have been created (by the first run)."""
        with db_errors("ledger read"):
            inspector = sa.inspect(self.engine)
            return inspector.has_table(self._t.name) and inspector.has_table(self._head.name)

    def _recent(self) -> sa.ColumnElement[bool]:
        """Entries among the newest ``window`` (seq is dense from 1, so this is a range on the key)."""
        newest = sa.select(sa.func.coalesce(sa.func.max(self._t.c.seq), 0)).scalar_subquery()
        return self._t.c.seq > newest - self._window

    def _rows(self, query: sa.Executable) -> list[Any]:
        with db_errors("ledger read"), self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def recent_runs(self, limit: int = 10) -> list[RunInfo]:
        """The runs with the newest entries, newest first."""
        t = self._t
        query = (
            sa.select(
                t.c.run_id,
                sa.func.min(t.c.recorded_at),
                sa.func.max(t.c.recorded_at),
                sa.func.count(),
                sa.func.max(t.c.subject_ref),
            )
            .where(self._recent(), t.c.run_id.is_not(None), t.c.run_id.not_in(self._other_runs()))
            .group_by(t.c.run_id)
            .order_by(sa.func.max(t.c.seq).desc())
            .limit(limit)
        )
        return [RunInfo(*row) for row in self._rows(query)]

    def _other_runs(self) -> sa.Select[Any]:
        """Run ids of the DAGs that are no retention run (sweep, housekeeping, access report): the
        overview's recent runs are the nightly runs and the erasures."""
        t = self._t
        return sa.select(t.c.run_id).where(
            self._recent(), t.c.run_id.is_not(None), t.c.action.in_(OTHER_RUN_ACTIONS)
        )

    def run_info(self, run_id: str) -> RunInfo | None:
        """One run's span and subject, or None if the ledger has no entry of it."""
        t = self._t
        query = sa.select(
            sa.func.min(t.c.recorded_at),
            sa.func.max(t.c.recorded_at),
            sa.func.count(),
            sa.func.max(t.c.subject_ref),
        ).where(t.c.run_id == run_id)
        started, ended, entries, subject = self._rows(query)[0]
        return RunInfo(run_id, started, ended, entries, subject) if entries else None

    def run_categories(self, run_id: str) -> list[CategoryRow]:
        """Per category of one run: erased, anonymised, kept, failed, and the stores verified.

        Database rows under a legal hold are never located, so no ``kept`` entry names them;
        the database's verification counts them (``detail.kept``), and that count is added.
        """
        rows: dict[str, CategoryRow] = {}

        def row(category: str) -> CategoryRow:
            return rows.setdefault(category, CategoryRow(category))

        outcomes = self.ledger.outcomes_for_run(run_id)
        for (category, store, outcome), total in sorted(outcomes.items(), key=str):
            if category is None:
                continue
            r = row(category)
            if outcome in ("erased", "anonymised", "kept", "failed"):
                setattr(r, outcome, getattr(r, outcome) + total)
            if outcome == "erased" and store is not None:
                r.erased_by_store[store] = r.erased_by_store.get(store, 0) + total
        for category, store, clean, held in self._last_verifications(run_id):
            row(category).record_verification(store, clean, held)
        for category, status in self._statuses(run_id).items():
            row(category).status = status
        return sorted(rows.values(), key=lambda r: r.category)

    def _last_verifications(self, run_id: str) -> Iterable[tuple[str, str, bool, int]]:
        """(category, store, clean, held) of the last verification of each location of the run."""
        t = self._t
        query = (
            sa.select(t.c.category, t.c.store, t.c.location, t.c.outcome, t.c.detail)
            .where(t.c.run_id == run_id, t.c.outcome.in_(("verified", "verify_failed")))
            .order_by(t.c.seq)
        )
        last: dict[tuple[str, str, str | None], tuple[bool, int]] = {}
        for category, store, location, outcome, detail in self._rows(query):
            if category is not None and store is not None:
                held = _detail(detail).get("kept", 0)
                last[(category, store, location)] = (
                    outcome == "verified",
                    held if isinstance(held, int) else 0,
                )
        return sorted((c, s, ok, held) for (c, s, _loc), (ok, held) in last.items())

    def _statuses(self, run_id: str) -> dict[str, str]:
        """Category -> its approval state and why its database step was skipped, if either, in words.

        A skip because of the approval itself (waiting, rejected, unanswered) is not repeated.
        """
        t = self._t
        query = (
            sa.select(t.c.category, t.c.action, t.c.outcome, t.c.reason, t.c.detail)
            .where(t.c.run_id == run_id, t.c.outcome.in_(("approval_requested", *APPROVAL_DECISIONS)))
            .order_by(t.c.seq)
        )
        words = {"approval_requested": "awaiting approval", "approved": "approved", "rejected": "rejected"}
        approval: dict[str, str] = {}
        skip: dict[str, str] = {}
        for category, action, outcome, reason, detail in self._rows(query):
            if category is None:
                continue
            if action == "approval":
                approval[category] = words.get(outcome, "approval not answered")
            elif not _human_decision(reason):
                skip[category] = f"skipped: {skip_words(reason, detail)}" if reason else "skipped"
        return {
            c: "; ".join(part for part in (approval.get(c), skip.get(c)) if part)
            for c in sorted(approval.keys() | skip.keys())
        }

    def pending_approvals(self, limit: int = 50) -> list[PendingApproval]:
        """Approval requests among the recent entries that no later decision of the same run answers."""
        t = self._t
        requests = self._rows(
            sa.select(t.c.seq, t.c.recorded_at, t.c.run_id, self._asked_about(), t.c.count, t.c.reason)
            .where(self._recent(), t.c.action == "approval", t.c.outcome == "approval_requested")
            .order_by(t.c.seq.desc())
            .limit(limit)
        )
        run_ids = sorted({run for _seq, _at, run, _cat, _n, _why in requests if run is not None})
        answered: dict[tuple[str, str], int] = {}
        if run_ids:
            decisions = self._rows(
                sa.select(t.c.run_id, self._asked_about(), sa.func.max(t.c.seq))
                .where(
                    t.c.run_id.in_(run_ids),
                    t.c.action == "approval",
                    t.c.outcome.in_(APPROVAL_DECISIONS),
                )
                .group_by(t.c.run_id, self._asked_about())
            )
            answered = {(run, cat): seq for run, cat, seq in decisions}
        return [
            PendingApproval(seq, at, run, cat, n, why)
            for seq, at, run, cat, n, why in requests
            if run is not None and cat is not None and answered.get((run, cat), 0) < seq
        ]

    def _asked_about(self) -> sa.ColumnElement[Any]:
        """What an approval is about: its category, or (an orphan sweep's) the location's root."""
        return sa.func.coalesce(self._t.c.category, self._t.c.location)

    def receipts(self, limit: int = 20) -> list[Receipt]:
        """The newest erasure receipts referenced from the ledger (action ``receipt``)."""
        t = self._t
        query = (
            sa.select(
                t.c.seq,
                t.c.recorded_at,
                t.c.run_id,
                t.c.subject_ref,
                t.c.location,
                t.c.items_digest,
                t.c.count,
                t.c.detail,
            )
            .where(self._recent(), t.c.action == "receipt")
            .order_by(t.c.seq.desc())
            .limit(limit)
        )
        out = []
        for seq, at, run_id, subject, location, digest, count, detail in self._rows(query):
            d = _detail(detail)
            kept, verified = d.get("kept"), d.get("verified")
            out.append(
                Receipt(
                    seq=seq,
                    recorded_at=at,
                    run_id=run_id,
                    subject_ref=subject,
                    location=location,
                    digest=digest,
                    erased=count,
                    kept=kept if isinstance(kept, int) else 0,
                    verified=verified if isinstance(verified, bool) else None,
                )
            )
        return out

    def policy_set_use(self, policy_set_hash: str) -> PolicySetUse:
        """Since when runs have used ``policy_set_hash`` without a run under another policy set in between,
        as far as the newest ``window`` entries show (the ledger records each summary's policy set)."""
        t = self._t
        summaries = (self._recent(), t.c.outcome == "summary", t.c.policy_set_hash.is_not(None))
        other = self._rows(
            sa.select(t.c.seq, t.c.recorded_at, t.c.policy_set_hash)
            .where(*summaries, t.c.policy_set_hash != policy_set_hash)
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        after, previous_at, previous_hash = other[0] if other else (0, None, None)
        current = (*summaries, t.c.policy_set_hash == policy_set_hash, t.c.seq > after)
        first, runs = self._rows(sa.select(sa.func.min(t.c.seq), sa.func.count()).where(*current))[0]
        if first is None:
            return PolicySetUse(policy_set_hash, None, None, 0, False, previous_hash, previous_at)
        since, run_id = self._rows(sa.select(t.c.recorded_at, t.c.run_id).where(t.c.seq == first))[0]
        newest = self._rows(sa.select(sa.func.coalesce(sa.func.max(t.c.seq), 0)))[0][0]
        at_least = not other and int(newest) > self._window
        return PolicySetUse(policy_set_hash, since, run_id, int(runs), at_least, previous_hash, previous_at)

    def backlog(self, nights: int = BACKLOG_NIGHTS) -> Backlog | None:
        """What the newest real (not dry) nightly run left due, per category and reason, and for how many
        nightly runs in a row (among the newest ``nights``); None if the ledger has no such run yet.

        Dry runs and customer erasures are not nights here, as for the engine's backlog alert.
        """
        summaries = [_backlog_counts(d) for d in self.ledger.summaries(nights, mode="due")]
        if not summaries:
            return None
        newest, *earlier = summaries
        items = []
        for (category, reason), count in newest.items():
            streak = 1
            for older in earlier:
                if (category, reason) not in older:
                    break
                streak += 1
            items.append(BacklogItem(category, reason, count, streak, streak == len(summaries) == nights))
        items.sort(key=lambda i: (i.category, i.lawful_keep, i.reason))
        return Backlog(items, len(summaries))

    def last_housekeeping(self) -> Housekeeping | None:
        """The newest ``retention_housekeeping`` entry among the recent ones (None: none yet)."""
        t = self._t
        rows = self._rows(
            sa.select(t.c.recorded_at, t.c.run_id, t.c.outcome, t.c.count, t.c.detail)
            .where(self._recent(), t.c.action == "housekeeping")
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        if not rows:
            return None
        at, run_id, outcome, count, detail = rows[0]
        decoded = _detail(detail)
        return Housekeeping(
            at, run_id, outcome, int(count or 0), int(decoded.get("runs") or 0), bool(decoded.get("dry_run"))
        )

    def leases(self) -> list[Lease]:
        """The runs holding a category or a customer now, and leases left by runs that stopped."""
        return Leases(self.engine).all()

    def pseudonym_keys(self) -> list[KeyPeriod]:
        """Every period of the pseudonym keys, oldest first, linkable or destroyed (none before a run)."""
        keyring = Keyring(self.engine)
        return keyring.periods() if keyring.exists() else []

    def last_sweep(self) -> LastSweep | None:
        """Per root, the newest orphan-sweep summary, and the newest coverage report, among the newest
        ``window`` entries; None if there is neither."""
        t = self._t
        newest = (
            sa.select(sa.func.max(t.c.seq))
            .where(self._recent(), t.c.action == SWEEP_ROOT_ACTION, t.c.outcome == "summary")
            .group_by(t.c.location)
        )
        query = (
            sa.select(t.c.location, t.c.recorded_at, t.c.run_id, t.c.count, t.c.detail)
            .where(t.c.seq.in_(newest))
            .order_by(t.c.location)
        )
        roots = [_sweep_root(*row) for row in self._rows(query)]
        report = self._rows(
            sa.select(t.c.recorded_at, t.c.run_id, t.c.count, t.c.detail)
            .where(self._recent(), t.c.action == COVERAGE_ACTION, t.c.outcome == "summary")
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        coverage = _coverage(*report[0]) if report else None
        if not roots and coverage is None:
            return None
        return LastSweep(roots, coverage)

    def head(self) -> tuple[int, str] | None:
        """The ledger head's last entry number and hash (one row); None if there is no head."""
        h = self._head
        row = self._rows(sa.select(h.c.last_seq, h.c.last_hash).where(h.c.id == 1))
        return (int(row[0][0]), str(row[0][1])) if row else None

    def verify_after(self, seq: int, entry_hash: str, *, batch_size: int = 10_000) -> ChainStatus:
        """Verify the chain from entry ``seq`` on, whose hash ``entry_hash`` an earlier walk found good, to
        the head: the ledger's own checks (``Ledger.verify_chain``) over the newer entries only."""
        return self.ledger.verify_chain(batch_size=batch_size, after=(seq, entry_hash))

    def categories(self) -> list[str]:
        """Every category named in the ledger (for the filter)."""
        t = self._t
        query = sa.select(t.c.category).where(t.c.category.is_not(None)).distinct().order_by(t.c.category)
        return [row[0] for row in self._rows(query)]

    def page(self, *, run_id: str | None, category: str | None, page: int, size: int) -> LedgerPage:
        """One page of entries (1-based ``page``), newest first, optionally of one run and/or category."""
        total = self.ledger.count(run_id=run_id, category=category)
        pages = max(1, -(-total // size))
        page = min(max(1, page), pages)
        entries = self.ledger.entries(run_id=run_id, category=category, offset=(page - 1) * size, limit=size)
        return LedgerPage(entries, total, page, pages, size)


def _sweep_root(
    root: str | None, at: datetime, run_id: str | None, count: int, text: str | None
) -> SweepRoot:
    d = _detail(text)
    return SweepRoot(
        root=root or "",
        recorded_at=at,
        run_id=run_id,
        found=_int(d, "orphans") if "orphans" in d else int(count),
        reported=_int(d, "reported"),
        unsafe=_int(d, "unsafe"),
        erased=_int(d, "erased"),
        held=_int(d, "held"),
        recent=_int(d, "recent"),
        dry_run=d.get("dry_run") is True,
    )


def _coverage(at: datetime, run_id: str | None, count: int, text: str | None) -> CoverageReport:
    d = _detail(text)
    lines = d.get("findings")
    shown = [str(line) for line in lines] if isinstance(lines, list) else []
    return CoverageReport(at, run_id, int(count), {k: _int(d, k) for k in COVERAGE_KINDS}, shown)


@dataclass(frozen=True)
class CheckedChain:
    """A chain verification, when it was made, and how many entries the ledger had when a page asked."""

    status: ChainStatus
    checked_at: datetime
    seconds: float
    entries: int | None = None
    """The ledger's entries (its head) when the page asked; None: as many as the verification covered."""
    anchor: Anchor | None = None
    """The latest anchor of the head kept outside the ledger's database (``retention.anchor``), if read."""
    anchor_problem: str | None = None
    """How the ledger disagrees with ``anchor`` (a truncated or rewritten tail); None: it agrees."""
    anchor_unreadable: bool = False
    """The anchors were to be read but could not be (the page says so, and claims nothing about them)."""

    @property
    def total(self) -> int:
        return self.status.checked if self.entries is None else max(self.entries, self.status.checked)

    @property
    def state(self) -> str:
        """``broken``; ``checking`` while entries the verification has not reached exist; else ``intact``."""
        if not self.status.ok:
            return "broken"
        return "checking" if self.status.checked < self.total else "intact"


class ChainCache:
    """The chain status the pages show: it never covers fewer entries than the ledger had when asked.

    A full walk reads and hashes every entry (seconds for a few hundred thousand), so only the
    very first request waits for it; it is repeated in one background thread once it is older
    than ``ttl`` seconds, which is what finds an edited old entry. Every request reads the head
    (one row): entries appended since the last verification are verified from the last verified
    entry and hash on, at a cost in proportion to the new entries only, by the request itself up
    to ``sync_limit`` of them, else in the background while the status says how far it got. A
    head that no longer continues the verified chain (it went back, or changed) is walked again
    in full; until then nothing is claimed for it.
    """

    def __init__(
        self, ttl: float, clock: Callable[[], float] = time.monotonic, *, sync_limit: int = CHAIN_SYNC_LIMIT
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._sync_limit = sync_limit
        self._lock = threading.Lock()
        """Guards the fields below."""
        self._walking = threading.Lock()
        """Held by the request that walks (the first walk, an extension), so that others do not repeat it."""
        self._last: CheckedChain | None = None
        self._full_at = 0.0
        self._thread: threading.Thread | None = None

    def get(self, reader: LedgerReader) -> CheckedChain:
        """The chain's status up to the ledger's head as it is now; read it after what the page shows."""
        last = self._current()
        if last is None:
            with self._walking:
                if self._current() is None:
                    self._keep(self._walk(reader))
            last = self._known()
        head = reader.head()
        if head is None:
            status = ChainStatus(False, 0, GENESIS_HASH, None, "the head row is missing")
            return CheckedChain(status, datetime.now(UTC), 0.0, 0)
        entries, head_hash = head
        if self._clock() - self._full_at >= self._ttl:
            self._start(reader, full=True)
        verified = last.status
        if not verified.ok or (entries, head_hash) == (verified.checked, verified.head_hash):
            return last
        if entries > verified.checked:
            if entries - verified.checked > self._sync_limit:
                self._start(reader, full=False)
                return replace(last, entries=entries)
            with self._walking:
                last = self._known()
                if last.status.ok and last.status.checked < entries:
                    self._keep(self._extend(reader, last), after=last)
                    last = self._known()
            return replace(last, entries=entries)
        log.warning(
            "retention page: the ledger head (entry %d) does not continue the chain verified up to entry %d;"
            " walking the whole chain again",
            entries,
            verified.checked,
        )
        self._start(reader, full=True)
        return CheckedChain(ChainStatus(True, 0, GENESIS_HASH), last.checked_at, 0.0, entries)

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a background verification that is running, if any."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _current(self) -> CheckedChain | None:
        with self._lock:
            return self._last

    def _known(self) -> CheckedChain:
        last = self._current()
        if last is None:  # pragma: no cover - only after a first walk, which stores its result
            raise RuntimeError("no chain verification yet")
        return last

    def _keep(self, checked: CheckedChain, *, after: CheckedChain | None = None) -> None:
        """Keep a full walk's result; an extension's only if it extends the result kept now (``after``):
        one that went on from an older result must not hide what a full walk found meanwhile."""
        with self._lock:
            if after is None:
                self._last, self._full_at = checked, self._clock()
            elif self._last is after:
                self._last = checked

    def _start(self, reader: LedgerReader, *, full: bool) -> None:
        """A background walk (in full, or from the last verified entry on) unless one is running."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._background, args=(reader, full), name="retention-chain-check", daemon=True
                )
                self._thread.start()

    def _background(self, reader: LedgerReader, full: bool) -> None:
        try:
            last = self._current()
            if full or last is None or not last.status.ok:
                self._keep(self._walk(reader))
            else:
                self._keep(self._extend(reader, last), after=last)
        except Exception as e:  # noqa: BLE001 - the page keeps showing the last result, with its time
            log.warning("retention page: background chain check failed (%s)", type(e).__name__)
        finally:
            with self._lock:
                self._thread = None

    @staticmethod
    def _walk(reader: LedgerReader) -> CheckedChain:
        started = time.perf_counter()
        status = reader.ledger.verify_chain()
        return CheckedChain(status, datetime.now(UTC), time.perf_counter() - started)

    @staticmethod
    def _extend(reader: LedgerReader, last: CheckedChain) -> CheckedChain:
        started = time.perf_counter()
        status = reader.verify_after(last.status.checked, last.status.head_hash)
        return CheckedChain(status, datetime.now(UTC), time.perf_counter() - started)


def _human_decision(reason: str | None) -> bool:
    """A skip because of the approval itself (waiting, rejected, unanswered), which the page shows apart."""
    return reason in _HUMAN_REASONS


_HUMAN_REASONS = frozenset(r.value for r in Reason if r.human_decision)


def skip_words(reason: str, detail: str | None) -> str:
    """A skip entry of the ledger in words; an entry from before reasons were an enum, as recorded."""
    skip = Skip.from_ledger(reason, json.loads(detail) if detail else None)
    return skip.words() if skip is not None else reason
