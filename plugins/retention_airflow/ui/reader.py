"""What the monitoring page shows, read from the ledger: runs, approvals, receipts, entries, chain status.

Only counts, digests, codes and pseudonyms are read (the ledger holds nothing else). The
overview's queries look at the newest ``RECENT_WINDOW`` entries only, so that a page load
stays bounded however long the ledger grows; the ledger page reaches every entry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, check_table_name
from retention.ledger import ChainStatus, Ledger
from retention.results import Reason, Skip

log = logging.getLogger(__name__)

RECENT_WINDOW = 200_000
"""How many of the newest entries the overview's runs, approvals and receipts are taken from."""

APPROVAL_DECISIONS = ("approved", "rejected", "skipped")
"""Outcomes of an ``approval`` entry that answer a request (``skipped``: nobody answered in time)."""

NIGHTLY_DAG = "retention_nightly"
APPROVAL_TASK = "category.approve"


def _ledger_columns(name: str) -> sa.TableClause:
    return sa.table(
        check_table_name(name),
        sa.column("seq", sa.BigInteger()),
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
        sa.column("detail", sa.Text()),
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
class LedgerPage:
    """One page of entries (newest first) and where it lies among all matching entries."""

    entries: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    size: int


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
        self._head_name = f"{table_name}_head"
        self._window = window

    def exists(self) -> bool:
        """Whether the ledger table and its head have been created (by the first run)."""
        with db_errors("ledger read"):
            inspector = sa.inspect(self.engine)
            return inspector.has_table(self._t.name) and inspector.has_table(self._head_name)

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
            .where(self._recent(), t.c.run_id.is_not(None))
            .group_by(t.c.run_id)
            .order_by(sa.func.max(t.c.seq).desc())
            .limit(limit)
        )
        return [RunInfo(*row) for row in self._rows(query)]

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
            sa.select(t.c.seq, t.c.recorded_at, t.c.run_id, t.c.category, t.c.count, t.c.reason)
            .where(self._recent(), t.c.action == "approval", t.c.outcome == "approval_requested")
            .order_by(t.c.seq.desc())
            .limit(limit)
        )
        run_ids = sorted({run for _seq, _at, run, _cat, _n, _why in requests if run is not None})
        answered: dict[tuple[str, str], int] = {}
        if run_ids:
            decisions = self._rows(
                sa.select(t.c.run_id, t.c.category, sa.func.max(t.c.seq))
                .where(
                    t.c.run_id.in_(run_ids),
                    t.c.action == "approval",
                    t.c.outcome.in_(APPROVAL_DECISIONS),
                )
                .group_by(t.c.run_id, t.c.category)
            )
            answered = {(run, cat): seq for run, cat, seq in decisions}
        return [
            PendingApproval(seq, at, run, cat, n, why)
            for seq, at, run, cat, n, why in requests
            if run is not None and cat is not None and answered.get((run, cat), 0) < seq
        ]

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


@dataclass(frozen=True)
class CheckedChain:
    """A chain verification and when it was made."""

    status: ChainStatus
    checked_at: datetime
    seconds: float


class ChainCache:
    """The chain status, re-verified in the background once it is older than ``ttl`` seconds.

    A full walk reads and hashes every entry (seconds for a few hundred thousand), so only
    the very first request waits for it; later requests get the last result, with its time,
    while a fresh walk runs in one background thread.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._first = threading.Lock()
        self._last: tuple[float, CheckedChain] | None = None
        self._thread: threading.Thread | None = None

    def get(self, reader: LedgerReader) -> CheckedChain:
        """The last verification (starting a fresh one if it is stale); the first call verifies itself."""
        with self._lock:
            if self._last is not None:
                at, checked = self._last
                if self._clock() - at >= self._ttl and self._thread is None:
                    self._thread = threading.Thread(
                        target=self._background, args=(reader,), name="retention-chain-check", daemon=True
                    )
                    self._thread.start()
                return checked
        with self._first:
            if self._last is None:
                checked = self._walk(reader)
                with self._lock:
                    self._last = (self._clock(), checked)
            return self._last[1]

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a background verification that is running, if any."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _background(self, reader: LedgerReader) -> None:
        try:
            checked = self._walk(reader)
            with self._lock:
                self._last = (self._clock(), checked)
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


def _human_decision(reason: str | None) -> bool:
    """A skip because of the approval itself (waiting, rejected, unanswered), which the page shows apart."""
    return reason in _HUMAN_REASONS


_HUMAN_REASONS = frozenset(r.value for r in Reason if r.human_decision)


def skip_words(reason: str, detail: str | None) -> str:
    """A skip entry of the ledger in words; an entry from before reasons were an enum, as recorded."""
    skip = Skip.from_ledger(reason, json.loads(detail) if detail else None)
    return skip.words() if skip is not None else reason
