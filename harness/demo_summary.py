"""What the demo prints after a run: per category and store from the ledger, the receipt, where to look.

``ledger_cells`` reads one run's ledger entries (counts, digests and pseudonyms only, never
personal data) into a ``Cell`` per category and store: erased, anonymised, kept and why,
verified; ``render_table`` prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from harness.airflow_api import RunOutcome
from harness.demo_config import ADMIN, ERASURE, NIGHTLY, SWEEP, policy_stores
from harness.demo_stores import Stores
from harness.world_rules import NOW
from retention.results import Reason, RunSummary, Skip
from retention.serde import from_json

KEPT_LABELS = {
    Reason.LEGAL_HOLD.value: "legal hold",
    Reason.STORAGE_LOCK.value: "storage lock",
    Reason.STATUTORY.value: "kept by law",
}


@dataclass
class Cell:
    """What one run did in one category and store, from the ledger."""

    erased: int = 0
    anonymised: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    kept_until: dict[str, str] = field(default_factory=dict)
    failed: int = 0
    verified: bool | None = None
    """True: looked again and found nothing; False: something was left; None: not verified."""
    note: str = ""

    def add_kept(self, reason: str, count: int, until: str | None) -> None:
        """Add ``count`` records kept for ``reason`` (latest until-date wins)."""
        self.kept[reason] = self.kept.get(reason, 0) + count
        if until and until > self.kept_until.get(reason, ""):
            self.kept_until[reason] = until


def ledger_cells(
    entries: Iterable[Mapping[str, Any]], stores: Mapping[str, Sequence[str]]
) -> dict[tuple[str, str], Cell]:
    """Category x store -> Cell from one run's ledger entries (``stores``: category -> stores, in order)."""
    cells = {(c, s): Cell() for c, ss in stores.items() for s in ss}
    held_in_db: dict[tuple[str, str], int] = {}
    for e in sorted(entries, key=lambda e: int(e["seq"])):
        category, store = str(e.get("category")), str(e.get("store"))
        if store == "*" and category in stores:
            _approval(cells, stores[category], category, e["outcome"])
        elif (category, store) in cells:
            _account(cells[(category, store)], e)
            if store == "database" and e["outcome"] in ("verified", "verify_failed"):
                # Held rows are never located, so looking again is where they are counted.
                held = int((e.get("detail") or {}).get("kept") or 0)
                held_in_db[(category, store)] = max(held_in_db.get((category, store), 0), held)
    for key, held in held_in_db.items():
        # as the engine's step summary does: the larger of the two views of the held rows
        most = max(cells[key].kept.get(Reason.LEGAL_HOLD.value, 0), held)
        if most:
            cells[key].kept[Reason.LEGAL_HOLD.value] = most
    return cells


def _account(cell: Cell, e: Mapping[str, Any]) -> None:
    """Add one ledger entry's outcome to its cell."""
    outcome, count = e["outcome"], int(e.get("count") or 0)
    if outcome == "erased":
        cell.erased += count
    elif outcome == "anonymised":
        cell.anonymised += count
    elif outcome == "kept":
        cell.add_kept(str(e.get("reason") or "kept"), count, e.get("until"))
    elif outcome == "failed":
        cell.failed += count
    elif outcome in ("verified", "verify_failed"):
        cell.verified = cell.verified is not False and outcome == "verified"
    elif outcome == "skipped":
        skip = Skip.from_ledger(e.get("reason"), e.get("detail"))
        cell.note = f"not erased: {skip.words() if skip else e.get('reason')}"


def _approval(cells: dict[tuple[str, str], Cell], stores: Sequence[str], category: str, outcome: str) -> None:
    note = {
        "approval_requested": "over its cap: waits for approval",
        "approved": "over its cap: approved",
        "rejected": "over its cap: rejected, nothing erased",
        "skipped": "over its cap: no answer, nothing erased",
    }.get(outcome)
    if note is None:
        return
    for store in stores:
        cell = cells[(category, store)]
        if not cell.note.startswith("not erased"):
            cell.note = note


def _why(cell: Cell) -> str:
    parts = []
    for reason, n in sorted(cell.kept.items()):
        until = cell.kept_until.get(reason)
        parts.append(f"{n} {KEPT_LABELS.get(reason, reason)}" + (f" until {until[:10]}" if until else ""))
    if cell.note:
        parts.append(cell.note)
    return "; ".join(parts)


def render_table(cells: Mapping[tuple[str, str], Cell]) -> str:
    """A plain-text table: category, store, erased, anonymised, kept, verified, and why kept / notes."""
    head = ("category", "store", "erased", "anonymised", "kept", "verified", "kept because / note")
    rows = [
        (
            category,
            store,
            str(c.erased),
            str(c.anonymised),
            str(sum(c.kept.values())),
            {True: "yes", False: "NO", None: "-"}[c.verified],
            _why(c),
        )
        for (category, store), c in cells.items()
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    right = {2, 3, 4}

    def line(row: Sequence[str]) -> str:
        cols = [row[i].rjust(w) if i in right else row[i].ljust(w) for i, w in enumerate(widths)]
        return "  ".join([*cols, row[-1]]).rstrip()

    rule = "  ".join("-" * w for w in widths) + "  " + "-" * len(head[-1])
    totals = ("total", "", *(str(sum(int(r[i]) for r in rows)) for i in (2, 3, 4)), "", "")
    return "\n".join([line(head), rule, *(line(r) for r in rows), rule, line(totals)])


def run_entries(engine: sa.Engine, run_id: str) -> list[dict[str, Any]]:
    """Every ledger entry of one run (paged; the ledger returns newest first)."""
    from retention.ledger import MAX_PAGE, Ledger

    ledger, out, offset = Ledger(engine), [], 0
    while page := ledger.entries(run_id=run_id, offset=offset, limit=MAX_PAGE):
        out.extend(page)
        offset += len(page)
    return out


def nightly_summary(engine: sa.Engine, outcome: RunOutcome, final: Mapping[str, Any] | None) -> str:
    """The nightly run's table and totals, from the ledger and ``finish_nightly``'s return value."""
    cells = ledger_cells(run_entries(engine, outcome.run_id), policy_stores())
    lines = [f"Nightly retention run {outcome.run_id} (as of {NOW.isoformat()}): {outcome.state}", ""]
    lines.append(render_table(cells))
    if final:
        summary = from_json(RunSummary, final)
        totals, proof = summary.totals, summary.proof
        lines += [
            "",
            f"finish_nightly: erased {totals.erased}, anonymised {totals.anonymised}, "
            f"kept {totals.kept}, failed {totals.failed}; "
            f"ledger chain {'intact' if proof.chain_ok else 'BROKEN'} "
            f"({proof.chain_checked} entries, head {proof.chain_head[:16]}…)",
        ]
        lines += [f"  not erased: {c}: {skip.words()}" for c, skip in summary.not_erased.items()]
    if outcome.waiting:
        lines += [
            "",
            "The run is not finished: its database pass (every category's rows) starts only when the file",
            "steps of all categories are done, so no rows are erased yet. Still waiting for a human:",
        ]
        lines += [f"  - {s}" for s in outcome.waiting]
    return "\n".join(lines)


SWEEP_COLUMNS = {
    "found": "orphans",
    "reported": "reported",
    "erased": "erased",
    "held": "held",
    "recent": "recent",
}
"""What the demo prints per root of the sweep: column -> key of the root's ``orphan_sweep`` summary."""


def sweep_summary(engine: sa.Engine, outcome: RunOutcome) -> str:
    """The sweep's counts per root and the coverage report's findings, from the sweep run's ledger entries."""
    entries = sorted(run_entries(engine, outcome.run_id), key=lambda e: int(e["seq"]))
    roots = {
        str(e["location"]): e.get("detail") or {}
        for e in entries
        if e["action"] == "orphan_sweep" and e["outcome"] == "summary"
    }
    coverage = [e for e in entries if e["action"] == "coverage" and e["outcome"] == "summary"]
    lines = [f"Orphan sweep {outcome.run_id}: {outcome.state}", ""]
    width = max([len("root"), *(len(r) for r in roots)])
    lines.append(f"  {'root':<{width}}  " + "  ".join(f"{c:>8}" for c in SWEEP_COLUMNS))
    for root, detail in roots.items():
        counts = [detail.get(k, 0) if isinstance(detail, Mapping) else 0 for k in SWEEP_COLUMNS.values()]
        lines.append(f"  {root:<{width}}  " + "  ".join(f"{n:>8}" for n in counts))
    if not roots:
        lines.append("  (no root wrote its summary: see the run's task logs)")
    if any(isinstance(d, Mapping) and d.get("reported") for d in roots.values()):
        lines += [
            "",
            "Reported orphans fail finish_sweep (red, and an alert): decide per item, see the runbook",
            "'A red retention_sweep' and the DAG page. Recent items are younger than the grace (7 days).",
        ]
    lines.append("")
    if not coverage:
        lines.append("check_coverage: no coverage report in the ledger (see the task's log)")
        return "\n".join(lines)
    report = coverage[-1]
    detail = report.get("detail") or {}
    lines.append(
        f"check_coverage: {report['count']} finding(s) no policy covers (names and counts, never a value)"
    )
    lines += [f"  - {line}" for line in detail.get("findings") or ()]
    hidden = int(report["count"]) - len(detail.get("findings") or ())
    if hidden > 0:
        lines.append(f"  ... and {hidden} more in the task's log")
    return "\n".join(lines)


def receipt_markdown(stores: Stores, receipt: Mapping[str, Any] | None) -> str:
    """The Markdown receipt as stored in the receipts bucket."""
    if not receipt:
        return "(no receipt: write_receipt did not return one; see its log)"
    where = receipt["location"]
    body = stores.s3.client().get_object(Bucket=where["bucket"], Key=where["markdown_key"])["Body"].read()
    return f"(s3://{where['bucket']}/{where['markdown_key']})\n\n{body.decode()}"


def where_to_look(
    url: str, password: str, nightly: RunOutcome, erasure: RunOutcome | None, sweep: RunOutcome | None = None
) -> str:
    """The UI addresses worth opening, and the login."""
    lines = [
        f"Airflow UI             {url}/   (login: {ADMIN} / {password})",
        f"nightly DAG            {url}/dags/{NIGHTLY}",
        f"  this run             {url}/dags/{NIGHTLY}/runs/{quote(nightly.run_id, safe='')}",
        f"customer erasure DAG   {url}/dags/{ERASURE}",
    ]
    if erasure is not None:
        lines.append(f"  this run             {url}/dags/{ERASURE}/runs/{quote(erasure.run_id, safe='')}")
    if sweep is not None:
        lines.append(f"orphan sweep           {url}/dags/{SWEEP}/runs/{quote(sweep.run_id, safe='')}")
    lines += [
        f"Required actions       {url}/required_actions   (approvals of categories over their cap)",
        f"Retention monitoring   {url}/retention/   (ledger, chain, receipts, last sweep; in the menu)",
    ]
    return "\n".join(lines)
