"""The notes that let a resumed step count what a stopped attempt erased."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from retention.intents import IntentItems, item_refs, unfinished

KEY = b"0123456789abcdef0123456789abcdef"


def test_an_announced_batch_without_an_outcome_is_unfinished() -> None:
    entries = [
        {"store": "sftp", "outcome": "planned", "items_digest": "a", "location": "sftp:{p}"},
        {"store": "sftp", "outcome": "erased", "items_digest": "a"},
        {"store": "sftp", "outcome": "planned", "items_digest": "b", "location": "sftp:{p}"},
        {"store": "s3", "outcome": "planned", "items_digest": "c", "location": "s3:x/{k}"},
        {"store": "sftp", "outcome": "planned", "items_digest": "d", "detail": {"named_by": "key_range"}},
        {"store": "sftp", "outcome": "verified", "items_digest": None},
    ]
    assert unfinished(entries, "sftp") == {"b": "sftp:{p}"}
    assert unfinished(entries, "s3") == {"c": "s3:x/{k}"}


def test_items_are_noted_as_keyed_pseudonyms_and_cleared_with_their_step(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    notes = IntentItems(engine)
    notes.ensure_schema()
    refs = item_refs(KEY, ["customers/42/a.pdf", "customers/42/b.pdf"])
    notes.add("run-1", "docs", "s3", "digest-1", refs)
    notes.add("run-1", "docs", "sftp", "digest-2", item_refs(KEY, ["42/a.txt"]))
    with engine.connect() as c:
        stored = " ".join(
            str(v)
            for row in c.execute(
                sa.text("SELECT run_id, category, store, batch_digest, item_ref FROM retention_intent_items")
            )
            for v in row
        )
    # (recorded_at left out: a time of day such as 11:30:38.742 contains "42" too)
    assert "42" not in stored.replace("run-1", ""), "the item keys themselves are never stored"
    assert notes.of("run-1", "docs", "s3", ["digest-1", "other"]) == {"digest-1": refs}
    notes.clear("run-1", "docs", "s3")
    assert notes.of("run-1", "docs", "s3", ["digest-1"]) == {}
    assert notes.of("run-1", "docs", "sftp", ["digest-2"]) != {}, "another step's notes stay"
