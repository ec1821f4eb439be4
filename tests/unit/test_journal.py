"""Which database batches a resumed step must look up in the erase journal."""

from __future__ import annotations

import pytest

from retention import failpoints
from retention.journal import unfinished_ranges


def entry(
    outcome: str, digest: str | None, location: str = "database:invoices", **more: object
) -> dict[str, object]:
    return {"store": "database", "location": location, "outcome": outcome, "items_digest": digest, **more}


def test_announced_batches_without_an_outcome_are_unfinished_with_their_action() -> None:
    entries = [
        entry("planned", "d1", action="delete"),
        entry("erased", "d1"),
        entry("planned", "d2", action="anonymise"),
        entry("planned", "d3", action="delete"),
        entry("kept", "d3", reason="legal_hold"),
        entry("verified", None),
    ]
    assert unfinished_ranges(entries) == {("database:invoices", "d2"): "anonymise"}


def test_the_same_range_text_in_two_tables_is_two_batches() -> None:
    entries = [
        entry("planned", "d1", location="database:jobs", action="delete"),
        entry("planned", "d1", location="database:documents", action="delete"),
        entry("erased", "d1", location="database:jobs"),
    ]
    assert unfinished_ranges(entries) == {("database:documents", "d1"): "delete"}


def test_file_store_batches_are_not_the_journals() -> None:
    entries = [{"store": "sftp", "location": "sftp:x", "outcome": "planned", "items_digest": "d1"}]
    assert unfinished_ranges(entries) == {}


def test_a_kill_point_that_does_not_exist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(failpoints.KILL_AT, "after_erase:nowhere")
    with pytest.raises(ValueError, match="no such point"):
        failpoints.reach("after_erase:database")
    monkeypatch.setenv(failpoints.KILL_AT, "before_database_pass")
    failpoints.reach("after_erase:database")  # another point: nothing happens
