"""The orphan sweep on a local share (``filesystem`` store) over a SQLite business database, and the
rules of a whole sweep's end (``finish``): what fails the run, what a rejection means."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, create_engine

from retention.adapters.database import DatabaseAdapter
from retention.adapters.filesystem import FilesystemAdapter
from retention.engine import RunContext
from retention.ledger import Ledger
from retention.policy import PolicySet, parse_policy
from retention.results import Decision
from retention.sweep import RootOutcome, SweepPlan, SweepResult, SweepRun, finish, roots, sweep_root

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
POLICY = """
id: scans
description: Scanned letters on the office share.
legal_basis: {basis: contract, gdpr: "Art. 6(1)(b)"}
rationale: Scans are kept one year for complaints, then erased.
retention: {period: P1Y, counts_from: event, event: scanning, anchor: made_at}
records: {table: scans, key: id, subject: customer_id}
erasure_request: {action: erase}
cap: {max_items: 10, max_fraction: 1.0}
locations:
  - store: filesystem
    path: "scans/{customer_id}/{id}.pdf"
    orphans: {action: erase, law: "GDPR Art. 5(1)(e)", grace: P2D}
  - {store: database, table: scans, action: delete}
"""


@pytest.fixture
def share(tmp_path: Path) -> tuple[RunContext, Path, Path]:
    engine: Engine = create_engine(f"sqlite:///{tmp_path / 'business.db'}")
    with engine.begin() as c:
        c.execute(
            sa.text("CREATE TABLE scans (id integer PRIMARY KEY, customer_id integer, made_at timestamp)")
        )
        c.execute(sa.text("INSERT INTO scans VALUES (1, 7, '2026-01-01 00:00:00')"))
    Ledger(engine).ensure_schema()
    root = tmp_path / "share"
    outside = tmp_path / "outside"
    old = (NOW - timedelta(days=3)).timestamp()
    for rel in ("scans/7/1.pdf", "scans/7/2.pdf", "scans/8/1.pdf", "scans/new.pdf"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
        if rel != "scans/new.pdf":
            os.utime(path, (old, old))
    (outside / "kept").mkdir(parents=True)
    (outside / "kept" / "1.pdf").write_text("outside")
    os.symlink(outside / "kept", root / "scans" / "9")
    policies = PolicySet((parse_policy(POLICY, "scans.yaml"),), {"scans": "scans.yaml"})
    ctx = RunContext(
        run_id="share-sweep",
        now=NOW,
        policies=policies,
        database=DatabaseAdapter(engine),
        pseudonym_key=b"k" * 32,
        ledger=Ledger(engine),
        adapters={"filesystem": FilesystemAdapter()},
        roots={"filesystem": str(root)},
    )
    return ctx, root, outside


def test_a_share_loses_its_old_orphans_and_keeps_its_links(share: tuple[RunContext, Path, Path]) -> None:
    ctx, root, outside = share
    (found,) = roots(ctx)

    result = sweep_root(ctx, found)

    assert found.label == "filesystem:scans/*"
    assert (result.listed, result.named, result.recent, result.links, result.orphans) == (5, 1, 1, 1, 2)
    assert (result.erased, result.verified) == (2, True)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    # scans/8 emptied and pruned; scans itself is the root's prefix: never pruned by the share.
    assert left == ["scans", "scans/7", "scans/7/1.pdf", "scans/9", "scans/new.pdf"]
    assert (outside / "kept" / "1.pdf").read_text() == "outside"


def test_a_dry_run_counts_and_erases_nothing(share: tuple[RunContext, Path, Path]) -> None:
    ctx, root, _outside = share
    ctx.dry_run = True

    result = sweep_root(ctx, roots(ctx)[0])

    assert (result.erasable, result.erased, result.verified) == (2, 0, False)
    assert (root / "scans/8/1.pdf").exists()
    assert [e["action"] for e in Ledger(ctx.database.engine).entries(run_id=ctx.run_id)] == ["orphan_sweep"]


def _plan(**kw: Any) -> SweepPlan:
    fields: dict[str, Any] = {
        "root": "s3:files/a/*",
        "store": "s3",
        "scanned": True,
        "listed": 9,
        "orphans": 5,
        "held": 0,
        "reported": 0,
        "erasable": 5,
        "cap": 3,
        "needs_approval": True,
        "dry_run": False,
    }
    return SweepPlan(**(fields | kw))


def _result(reported: int) -> SweepResult:
    counts = dict.fromkeys(
        ("listed", "named", "recent", "links", "excluded", "orphans", "held", "unsafe", "erasable"), 0
    )
    return SweepResult(
        root="s3:files/a/*",
        store="s3",
        dry_run=False,
        reported=reported,
        erased=0,
        kept={},
        failed=0,
        remaining=0,
        verified=True,
        digest="0" * 64,
        **counts,
    )


@pytest.mark.parametrize(
    ("outcome", "dry_run", "problem"),
    [
        (RootOutcome(_plan(), Decision.REJECTED, None), False, None),
        (RootOutcome(_plan(), None, None), False, "approval was not answered"),
        (RootOutcome(None, None, None), False, "no plan"),
        (RootOutcome(_plan(needs_approval=False), None, None), False, "not swept"),
        (
            RootOutcome(_plan(needs_approval=False), None, _result(reported=2)),
            False,
            "2 unnamed item(s) reported",
        ),
        (RootOutcome(_plan(needs_approval=False), None, _result(reported=2)), True, None),
    ],
)
def test_what_fails_a_sweep(
    share: tuple[RunContext, Path, Path], outcome: RootOutcome, dry_run: bool, problem: str | None
) -> None:
    ctx = share[0]
    run = SweepRun("share-sweep", NOW, dry_run, 3, ctx.policies.hash, ("s3:files/a/*",))

    summary = finish(ctx, run, {"s3:files/a/*": outcome})

    assert len(summary.problems) == (problem is not None), summary.problems
    assert problem is None or problem in summary.problems[0]
    assert summary.chain_ok
    decisions = [e["outcome"] for e in Ledger(ctx.database.engine).entries(run_id="share-sweep")]
    assert decisions[0] == "summary"
    if outcome.decision is Decision.REJECTED:
        assert summary.rejected == ("s3:files/a/*",) and "rejected" in decisions
