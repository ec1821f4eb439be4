"""The orphan sweep's roots and its reading of keys, without any store: which places and prefixes are
listed, which locations decide an item's fate, which keys are never erased and whose holds apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine

from retention.adapters.database import DatabaseAdapter
from retention.engine import RunContext
from retention.errors import TerminalError
from retention.policy import PolicySet, parse_policy
from retention.sweep import fixed_part, grace_of, root_named, roots, unsafe_key
from retention.sweep_stores import Entry

LAW = "GDPR Art. 5(1)(e): storage limitation"


def _policy(pid: str, table: str, locations: list[dict[str, Any]]) -> Any:
    doc = {
        "id": pid,
        "description": "Test data of one category.",
        "legal_basis": {"basis": "contract", "gdpr": "Art. 6(1)(b)"},
        "rationale": "Kept for the test only, then erased everywhere.",
        "retention": {"period": "P1Y", "counts_from": "event", "event": "made", "anchor": "made_at"},
        "records": {"table": table, "key": "id", "subject": "customer_id"},
        "erasure_request": {"action": "erase"},
        "cap": {"max_items": 10, "max_fraction": 1.0},
        "locations": [*locations, {"store": "database", "table": table, "action": "delete"}],
    }
    return parse_policy(yaml.safe_dump(doc), f"{pid}.yaml")


def _ctx(*policies: Any, bucket_map: dict[str, str] | None = None) -> RunContext:
    return RunContext(
        run_id="unit",
        now=datetime(2026, 6, 1, tzinfo=UTC),
        policies=PolicySet(tuple(policies), {p.id: f"{p.id}.yaml" for p in policies}),
        database=DatabaseAdapter(create_engine("sqlite://")),
        pseudonym_key=b"k" * 32,
        bucket_map=bucket_map or {},
        roots={"sftp": "/srv/archive"},
    )


ERASE = {"action": "erase", "law": LAW}

LETTERS = _policy(
    "letters",
    "letters",
    [
        {"store": "s3", "bucket": "files", "key": "letters/{customer_id}/{id}.pdf", "orphans": ERASE},
        {"store": "s3", "bucket": "files", "key": "letters/scans/{id}.pdf"},
        {"store": "sftp", "path": "{archive_path}", "orphans": {**ERASE, "grace": "P30D"}},
    ],
)
EXPORTS = _policy(
    "exports",
    "exports",
    [
        {"store": "s3", "bucket": "other-files", "key": "exports/{customer_id}/{id}/"},
        {"store": "s3", "bucket": "files", "key": "letters/{customer_id}/{letter_id}.pdf", "orphans": ERASE},
    ],
)


@pytest.mark.parametrize(
    ("template", "fixed"),
    [
        ("documents/{customer_id}/{id}.pdf", "documents/"),
        ("{s3_key}", ""),
        ("exports/{customer_id}/", "exports/"),
        ("a/b-{id}.pdf", "a/"),
        ("doc-{id}.pdf", ""),
        ("a/b/c/{x}/d/{y}", "a/b/c/"),
    ],
)
def test_a_root_is_the_fixed_part_cut_back_to_a_slash(template: str, fixed: str) -> None:
    assert fixed_part(template) == fixed


def test_roots_merge_every_category_in_one_place_and_nested_prefixes() -> None:
    ctx = _ctx(LETTERS, EXPORTS, bucket_map={"files": "real-files", "other-files": "real-files"})

    found = roots(ctx)

    # Both policy buckets are one real bucket: one place; letters/scans/ is inside letters/.
    assert [(r.store, r.place, r.prefix, r.label) for r in found] == [
        ("s3", "real-files", "exports/", "s3:files+other-files/exports/*"),
        ("s3", "real-files", "letters/", "s3:files+other-files/letters/*"),
        ("sftp", "/srv/archive", "", "sftp:*"),
    ]
    letters = found[1]
    assert letters.categories == ["exports", "letters"]
    assert letters.may_erase and not found[0].may_erase
    assert letters.laws == [LAW]
    # Who decides an item's fate: every location whose root covers it.
    assert {n.template for n in letters.covering("letters/7/1.pdf")} == {
        "letters/{customer_id}/{id}.pdf",
        "letters/{customer_id}/{letter_id}.pdf",
    }
    assert len(letters.covering("letters/scans/3.pdf")) == 3
    assert root_named(ctx, "sftp:*").namers[0].template == "{archive_path}"
    with pytest.raises(TerminalError, match="no orphan-sweep root"):
        root_named(ctx, "s3:files/nowhere/*")


def test_excluded_prefixes_belong_to_their_place_only() -> None:
    ctx = _ctx(LETTERS, bucket_map={"files": "real-files"})

    found = roots(ctx, [("s3", "real-files", "letters/receipts/"), ("s3", "elsewhere", "letters/")])

    assert {r.label: r.excluded for r in found} == {
        "s3:files/letters/*": ("letters/receipts/",),
        "sftp:*": (),
    }


def test_an_archive_location_without_a_root_directory_is_refused() -> None:
    ctx = _ctx(LETTERS)
    ctx.roots = {}
    with pytest.raises(TerminalError, match="root directory of store 'sftp'"):
        roots(ctx)


def test_keys_the_engine_would_never_use_are_unsafe() -> None:
    namers = roots(_ctx(LETTERS))[0].covering("letters/7/1.pdf")
    assert not unsafe_key("letters/7/1.pdf", namers)
    assert not unsafe_key("letters/unparsable name.txt", namers)
    for key in ("letters//1.pdf", "/letters/7/1.pdf", "letters/../x", "letters/7/\x01.pdf"):
        assert unsafe_key(key, namers), key
    # Readable only with a padded value: a row may hold " 7", but the engine never renders it.
    assert unsafe_key("letters/ 7/1.pdf", namers)
    assert unsafe_key("letters/7/1 .pdf", namers)


def test_held_customers_are_read_back_only_where_a_template_names_the_subject() -> None:
    from retention.adapters.base import HoldSet
    from retention.sweep import _orphan, held

    letters, archive = roots(_ctx(LETTERS))
    old = datetime(2026, 1, 1, tzinfo=UTC)
    by_customer = _orphan(letters, Entry("letters/42/9.pdf", old))
    assert by_customer.subjects == {"42"} and by_customer.erase
    assert held(HoldSet(subjects=frozenset({"42"})), by_customer)
    assert not held(HoldSet(subjects=frozenset({"4"})), by_customer)
    anywhere = _orphan(archive, Entry("42/9.pdf", old))
    assert anywhere.subjects == frozenset()  # {archive_path}: only prefix holds keep it
    assert held(HoldSet(prefixes=("42/",)), anywhere)
    assert grace_of(archive.namers[-1].orphans) == timedelta(days=30)
