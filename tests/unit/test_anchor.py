"""Anchors of the ledger's head (SQLite ledger, no services): the document, the key order, the check."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.anchor import (
    MAX_SEQ,
    Anchor,
    anchor_key,
    check_against_anchor,
    from_event_extra,
    head_anchor,
)
from retention.errors import TerminalError
from retention.ledger import Ledger, LedgerEntry, entry_hash
from tests.unit.test_ui_app import auth_manager, token  # noqa: F401 - auth_manager is a fixture

RUN = "scheduled__2026-05-01T02:00:00+00:00"
AT = datetime(2026, 5, 1, 2, 30, tzinfo=UTC)
BUCKET = "receipts"


def entry(i: int) -> LedgerEntry:
    return LedgerEntry(
        run_id=RUN, category="docs", store="s3", action="delete", outcome="erased", count=i, detail={"i": i}
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    ledger = Ledger(engine)
    ledger.ensure_schema()
    ledger.append_many([entry(i) for i in range(1, 6)])
    return ledger


def sql(engine: Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement))


def truncate(engine: Engine, keep: int) -> None:
    """Delete the entries after ``keep`` and point the head at entry ``keep``, as an attacker would."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM retention_ledger WHERE seq > :k"), {"k": keep})
        conn.execute(
            sa.text(
                "UPDATE retention_ledger_head SET last_seq = :k, "
                "last_hash = (SELECT entry_hash FROM retention_ledger WHERE seq = :k)"
            ),
            {"k": keep},
        )


def anchored(ledger: Ledger) -> Anchor:
    found = head_anchor(ledger, RUN, BUCKET, AT)
    assert found is not None
    return found


def test_the_head_anchor_names_the_last_entry_and_its_hash(ledger: Ledger) -> None:
    a = anchored(ledger)
    assert (a.seq, a.entry_hash) == (5, ledger.hash_at(5)) == ledger.head()
    assert check_against_anchor(ledger, a) is None
    ledger.append(entry(6))
    assert check_against_anchor(ledger, a) is None  # later entries are fine


def test_an_empty_ledger_has_no_anchor(engine: Engine) -> None:
    empty = Ledger(engine)
    empty.ensure_schema()
    assert head_anchor(empty, RUN, BUCKET) is None
    assert empty.hash_at(1) is None


def test_a_truncated_tail_with_a_rewritten_head_fails_naming_the_anchored_seq(
    ledger: Ledger, engine: Engine
) -> None:
    a = anchored(ledger)
    truncate(engine, 3)
    assert ledger.verify_chain().ok  # the chain alone cannot tell
    problem = check_against_anchor(ledger, a)
    assert problem is not None and "entry 5" in problem and "truncated" in problem


def test_a_truncated_tail_appended_again_fails_on_the_other_hash(ledger: Ledger, engine: Engine) -> None:
    a = anchored(ledger)
    truncate(engine, 3)
    ledger.append_many([entry(40), entry(50)])
    assert ledger.verify_chain().ok and ledger.head() is not None
    problem = check_against_anchor(ledger, a)
    assert problem is not None and "entry 5 has another hash" in problem


def test_a_consistently_rewritten_chain_fails(ledger: Ledger, engine: Engine) -> None:
    a = anchored(ledger)
    rewrite_from(engine, 4)
    assert ledger.verify_chain().ok
    problem = check_against_anchor(ledger, a)
    assert problem is not None and "entry 5 has another hash" in problem and RUN in problem


def rewrite_from(engine: Engine, first: int) -> None:
    """Edit entry ``first`` and re-hash it and every later entry and the head, as an attacker would."""
    with engine.begin() as conn:
        rows = [
            dict(r) for r in conn.execute(sa.text("SELECT * FROM retention_ledger ORDER BY seq")).mappings()
        ]
        prev = next(r["entry_hash"] for r in rows if r["seq"] == first - 1)
        for row in rows[first - 1 :]:
            row["count"] += 1000 if row["seq"] == first else 0
            row["recorded_at"] = datetime.fromisoformat(str(row["recorded_at"])).replace(tzinfo=UTC)
            row["prev_hash"] = prev
            prev = row["entry_hash"] = entry_hash(row)
            conn.execute(
                sa.text(
                    "UPDATE retention_ledger SET count = :c, prev_hash = :p, entry_hash = :h WHERE seq = :s"
                ),
                {"c": row["count"], "p": row["prev_hash"], "h": row["entry_hash"], "s": row["seq"]},
            )
        conn.execute(sa.text("UPDATE retention_ledger_head SET last_hash = :h"), {"h": prev})


def test_a_missing_anchored_entry_below_the_head_fails(ledger: Ledger, engine: Engine) -> None:
    a = anchored(ledger)
    sql(engine, "DELETE FROM retention_ledger WHERE seq = 5")
    problem = check_against_anchor(ledger, a)
    assert problem is not None and "entry 5 is missing" in problem


def test_the_document_round_trips_and_refuses_what_is_not_one() -> None:
    a = Anchor(7, "ab" * 32, RUN, AT, BUCKET)
    assert Anchor.from_document(a.document()) == a
    for broken in ({**a.document(), "seq": "7"}, {**a.document(), "entry_hash": "x"}, {"seq": 7}):
        with pytest.raises(TerminalError):
            Anchor.from_document(broken)
    with pytest.raises(TerminalError):
        Anchor(0, "ab" * 32, RUN, AT, BUCKET)
    with pytest.raises(TerminalError):
        Anchor(1, "ab" * 32, RUN, AT.replace(tzinfo=None), BUCKET)


def test_keys_sort_newest_first() -> None:
    seqs = [1, 9, 10, 99, 100_000, MAX_SEQ]
    keys = [anchor_key(Anchor(s, hashlib.sha256(str(s).encode()).hexdigest(), RUN, AT, BUCKET)) for s in seqs]
    assert sorted(keys) == keys[::-1]
    assert all(k.startswith("anchors/") and f"-{s}-" in k for k, s in zip(keys, seqs, strict=True))


def test_the_highest_anchor_of_this_bucket_is_taken_from_the_events() -> None:
    mine = [Anchor(s, "cd" * 32, RUN, AT, BUCKET).document() for s in (4, 9)]
    other = Anchor(50, "ef" * 32, RUN, AT, "another-deployment").document()
    extras = [{"anchor": mine[0]}, None, {}, {"anchor": other}, {"anchor": mine[1]}, {"unrelated": 1}]
    found = from_event_extra(extras, BUCKET)
    assert found is not None and found.seq == 9
    assert from_event_extra([{"anchor": other}], BUCKET) is None


# --- the monitoring page ------------------------------------------------------------------------


@pytest.fixture
def ops(auth_manager: Any) -> dict[str, str]:  # noqa: F811 - the imported fixture
    return {"Authorization": f"Bearer {token(auth_manager)}"}


def page_anchor(engine: Engine, viewer: dict[str, str], factory: Callable[[], Anchor | None]) -> Any:
    from fastapi.testclient import TestClient

    from retention_airflow.ui import create_app
    from tests.unit.test_ui_app import dom

    app = create_app(engine_factory=lambda: engine, chain_ttl=0, anchor_factory=factory)
    with TestClient(app) as c:
        return dom(c.get("/", headers=viewer).text).one(data_testid="chain-anchor")


def test_the_page_shows_where_the_ledger_is_anchored_and_a_disagreement(
    ledger: Ledger, engine: Engine, ops: dict[str, str]
) -> None:
    a = anchored(ledger)
    agreeing = page_anchor(engine, ops, lambda: a)
    assert agreeing.attrs["data-ok"] == "true" and "Anchored at seq 5" in agreeing.text()
    truncate(engine, 3)
    disagreeing = page_anchor(engine, ops, lambda: a)
    assert disagreeing.tag == "section" and disagreeing.attrs["data-ok"] == "false"
    assert disagreeing.attrs["data-seq"] == "5" and "truncated" in disagreeing.text()

    def unreadable() -> Anchor | None:
        raise ConnectionError("no S3 here")

    assert page_anchor(engine, ops, unreadable).attrs["data-ok"] == "unknown"
