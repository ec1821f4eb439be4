"""The S3 adapter against a real moto S3 server over HTTP (no in-process mocking)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.config import Config

from harness.clients import s3_client
from retention.adapters.base import EraseOutcome, HoldSet, HoldSource, Record, no_holds
from retention.adapters.s3 import MAX_BATCH, S3Adapter, S3Target
from retention.errors import TransientError, UnknownLocationError, UnsafeTargetError
from retention.results import Reason


def put_versions(client: Any, bucket: str, key: str, n: int = 2, **extra: Any) -> list[str]:
    """Write ``n`` versions of ``key``; return their version ids."""
    return [
        client.put_object(Bucket=bucket, Key=key, Body=f"v{i}".encode(), **extra)["VersionId"]
        for i in range(n)
    ]


def stored(client: Any, bucket: str, prefix: str = "") -> set[tuple[str, str]]:
    """Every (key, version id) of versions and delete markers under ``prefix``, listed independently."""
    found: set[tuple[str, str]] = set()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            found.add((entry["Key"], entry["VersionId"]))
    return found


def target(
    bucket: str, template: str, records: Sequence[Record], holds: HoldSource = no_holds, batch_size: int = 100
) -> S3Target:
    def source() -> Iterator[Sequence[Record]]:
        for start in range(0, len(records), batch_size):
            yield records[start : start + batch_size]

    return S3Target(
        category="documents",
        bucket=bucket,
        key_template=template,
        records=source,
        subject_field="customer_id",
        holds=holds,
    )


def run(adapter: S3Adapter, t: S3Target) -> EraseOutcome:
    total = EraseOutcome()
    for batch in adapter.locate(t):
        assert batch.count <= MAX_BATCH
        total.add(adapter.erase(t, batch))
    return total


def test_exact_keys_lose_every_version_and_delete_marker_and_nothing_else(
    s3_client: Any, s3_bucket: str
) -> None:
    put_versions(s3_client, s3_bucket, "docs/1", 2)
    s3_client.delete_object(Bucket=s3_bucket, Key="docs/1")  # a delete marker on top
    put_versions(s3_client, s3_bucket, "docs/3", 1)
    s3_client.delete_object(Bucket=s3_bucket, Key="docs/3")
    for key in ("docs/10", "docs/1.bak", "docs/1/x", "docs/2"):  # the first three share the prefix "docs/1"
        put_versions(s3_client, s3_bucket, key, 2)
    untouched = {kv for kv in stored(s3_client, s3_bucket) if kv[0] not in ("docs/1", "docs/3")}
    adapter = S3Adapter(s3_client)
    t = target(s3_bucket, "docs/{id}", [{"id": 1, "customer_id": "c1"}, {"id": 3, "customer_id": "c3"}])

    batches = list(adapter.locate(t))
    assert [b.count for b in batches] == [5]
    assert {k.rsplit("@", 1)[0] for k in batches[0].keys} == {"docs/1", "docs/3"}
    assert sum(v.is_delete_marker for v in batches[0].items) == 2
    outcome = adapter.erase(t, batches[0])

    assert (outcome.erased, outcome.failed, outcome.kept, outcome.errors) == (5, 0, {}, [])
    assert stored(s3_client, s3_bucket) == untouched
    assert adapter.verify(t).remaining == 0


def test_keys_extending_another_due_key_are_listed_once(s3_client: Any, s3_bucket: str) -> None:
    for key in ("docs/1", "docs/10", "docs/100"):
        put_versions(s3_client, s3_bucket, key, 2)
    untouched = stored(s3_client, s3_bucket, "docs/100")
    adapter = S3Adapter(s3_client)
    t = target(s3_bucket, "docs/{id}", [{"id": 10, "customer_id": "c"}, {"id": 1, "customer_id": "c"}])

    outcome = run(adapter, t)

    assert (outcome.erased, outcome.failed) == (4, 0)
    assert stored(s3_client, s3_bucket) == untouched
    # One listing (prefix "docs/1") + DeleteObjects: nothing else while S3 refuses nothing
    assert adapter.requests == 2


def test_prefix_template_erases_everything_under_the_prefix_only(s3_client: Any, s3_bucket: str) -> None:
    put_versions(s3_client, s3_bucket, "cust/1/a.pdf", 2)
    put_versions(s3_client, s3_bucket, "cust/1/deep/b.pdf", 3)
    s3_client.delete_object(Bucket=s3_bucket, Key="cust/1/deep/b.pdf")
    for key in ("cust/10/a.pdf", "cust/1", "cust/2/a.pdf", "other/1/a.pdf"):
        put_versions(s3_client, s3_bucket, key, 2)
    before = stored(s3_client, s3_bucket)
    adapter = S3Adapter(s3_client)
    t = target(s3_bucket, "cust/{customer_id}/", [{"customer_id": 1}])

    outcome = run(adapter, t)

    assert (outcome.erased, outcome.failed) == (6, 0)
    assert stored(s3_client, s3_bucket, "cust/1/") == set()
    assert stored(s3_client, s3_bucket) == {kv for kv in before if not kv[0].startswith("cust/1/")}
    assert adapter.verify(t).remaining == 0


def test_held_subjects_and_held_prefixes_are_kept_and_reported(s3_client: Any, s3_bucket: str) -> None:
    for customer in ("1", "2", "3"):
        put_versions(s3_client, s3_bucket, f"cust/{customer}/a.pdf", 2)
        put_versions(s3_client, s3_bucket, f"cust/{customer}/keep/b.pdf", 2)
    holds_read = 0

    def holds() -> HoldSet:
        nonlocal holds_read
        holds_read += 1
        return HoldSet(subjects=frozenset({"2"}), prefixes=("cust/3/keep",))

    records = [{"customer_id": c} for c in (1, 2, 3)]
    t = target(s3_bucket, "cust/{customer_id}/", records, holds=holds)
    adapter = S3Adapter(s3_client)

    outcome = run(adapter, t)

    # Read when locating (a batch holds 1,000 versions to delete) and again right before erasing.
    assert holds_read == 2
    assert (outcome.erased, outcome.kept, outcome.failed) == (6, {"legal_hold": 6}, 0)
    assert {k for k, _ in stored(s3_client, s3_bucket)} == {
        "cust/2/a.pdf",
        "cust/2/keep/b.pdf",
        "cust/3/keep/b.pdf",
    }
    verified = adapter.verify(t)
    assert (verified.remaining, verified.kept) == (0, 6)


def test_a_key_named_by_two_records_is_kept_if_either_subject_is_held(s3_client: Any, s3_bucket: str) -> None:
    put_versions(s3_client, s3_bucket, "jobs/7/source.docx", 2)
    records = [{"job": 7, "customer_id": "free"}, {"job": 7, "customer_id": "held"}]
    t = target(
        s3_bucket, "jobs/{job}/source.docx", records, holds=lambda: HoldSet(subjects=frozenset({"held"}))
    )
    adapter = S3Adapter(s3_client)

    assert [b.count for b in adapter.locate(t)] == [2]
    outcome = run(adapter, t)

    assert (outcome.erased, outcome.kept) == (0, {"legal_hold": 2})
    assert len(stored(s3_client, s3_bucket)) == 2


def test_object_lock_retention_and_legal_hold_are_kept_with_their_until_date(
    s3_server: Any, s3_client: Any
) -> None:
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket, versioned=True, object_lock=True)
    now = datetime.now(UTC).replace(microsecond=0)
    later, latest = now + timedelta(days=2), now + timedelta(days=30)
    put_versions(
        s3_client, bucket, "d/compliance", 1, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=later
    )
    put_versions(
        s3_client, bucket, "d/governance", 1, ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=latest
    )
    put_versions(s3_client, bucket, "d/legal", 1, ObjectLockLegalHoldStatus="ON")
    put_versions(s3_client, bucket, "d/plain", 2)
    locked = stored(s3_client, bucket) - stored(s3_client, bucket, "d/plain")
    names = ("compliance", "governance", "legal", "plain")
    t = target(bucket, "d/{name}", [{"name": n, "customer_id": "c"} for n in names])
    adapter = S3Adapter(s3_client)

    outcome = run(adapter, t)

    assert (outcome.erased, outcome.failed, outcome.kept) == (2, 0, {Reason.STORAGE_LOCK: 3})
    assert outcome.kept_until == {Reason.STORAGE_LOCK: latest.isoformat(timespec="seconds")}
    assert outcome.errors == []  # the refusals are explained by the locks
    assert stored(s3_client, bucket) == locked
    # A listing, DeleteObjects (S3 refuses the 3 locked versions), the bucket's lock configuration,
    # HeadObject per refused version.
    assert adapter.requests == 1 + 1 + 1 + 3
    verified = adapter.verify(t)
    assert (verified.remaining, verified.kept) == (0, 3)


def test_verify_catches_a_version_written_after_the_erase(s3_client: Any, s3_bucket: str) -> None:
    put_versions(s3_client, s3_bucket, "docs/5.txt", 2)
    t = target(s3_bucket, "docs/{id}.txt", [{"id": 5, "customer_id": "c5"}])
    adapter = S3Adapter(s3_client)
    assert run(adapter, t).erased == 2
    assert adapter.verify(t).remaining == 0

    put_versions(s3_client, s3_bucket, "docs/5.txt", 1)

    assert adapter.verify(t).remaining == 1


def test_a_second_run_finds_nothing_and_changes_nothing(s3_client: Any, s3_bucket: str) -> None:
    put_versions(s3_client, s3_bucket, "docs/1.txt", 2)
    put_versions(s3_client, s3_bucket, "docs/2.txt", 2)
    t = target(s3_bucket, "docs/{id}.txt", [{"id": 1, "customer_id": "c1"}])
    adapter = S3Adapter(s3_client)
    assert run(adapter, t).erased == 2
    after_first = stored(s3_client, s3_bucket)

    assert list(adapter.locate(t)) == []
    assert run(adapter, t) == EraseOutcome()
    assert stored(s3_client, s3_bucket) == after_first


def test_per_key_refusals_by_the_server_are_failures_not_erasures(s3_client: Any, s3_bucket: str) -> None:
    put_versions(s3_client, s3_bucket, "docs/denied/1.txt", 2)
    put_versions(s3_client, s3_bucket, "docs/open/1.txt", 2)
    denied = stored(s3_client, s3_bucket, "docs/denied/")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                "Resource": f"arn:aws:s3:::{s3_bucket}/docs/denied/*",
            }
        ],
    }
    s3_client.put_bucket_policy(Bucket=s3_bucket, Policy=json.dumps(policy))
    t = target(s3_bucket, "docs/{dir}/1.txt", [{"dir": d, "customer_id": "c"} for d in ("denied", "open")])
    adapter = S3Adapter(s3_client)
    try:
        outcome = run(adapter, t)
        verified = adapter.verify(t)
    finally:
        s3_client.delete_bucket_policy(Bucket=s3_bucket)

    assert (outcome.erased, outcome.failed, outcome.errors) == (2, 2, ["AccessDenied"])
    assert not any("docs/" in e for e in outcome.errors)
    assert stored(s3_client, s3_bucket) == denied
    assert (verified.remaining, verified.kept) == (2, 0)


def test_an_unknown_bucket_is_refused_by_name(s3_client: Any) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    t = target(bucket, "docs/{id}.txt", [{"id": 1, "customer_id": "c1"}])
    adapter = S3Adapter(s3_client)

    with pytest.raises(UnknownLocationError, match=bucket):
        list(adapter.locate(t))
    with pytest.raises(UnknownLocationError, match=bucket):
        adapter.verify(t)
    assert adapter.requests == 2


@pytest.mark.parametrize(
    ("template", "value"),
    [("docs/{id}/x.txt", ".."), ("{id}", "/etc/passwd"), ("docs/{id}.txt", ""), ("docs/{id}.txt", None)],
    ids=["dot-dot", "absolute", "empty", "missing"],
)
def test_an_unsafe_rendered_key_is_refused_before_any_listing(
    s3_client: Any, s3_bucket: str, template: str, value: object
) -> None:
    put_versions(s3_client, s3_bucket, "docs/x.txt", 1)
    before = stored(s3_client, s3_bucket)
    records: list[Record] = [{"id": "ok", "customer_id": "c"}, {"id": value, "customer_id": "c"}]
    adapter = S3Adapter(s3_client)

    with pytest.raises(UnsafeTargetError):
        list(adapter.locate(target(s3_bucket, template, records)))

    assert adapter.requests == 0  # nothing listed
    assert stored(s3_client, s3_bucket) == before


def test_a_target_naming_nothing_asks_nothing(s3_client: Any) -> None:
    adapter = S3Adapter(s3_client)
    t = target(f"missing-{uuid.uuid4().hex[:12]}", "docs/{id}.txt", [])

    assert list(adapter.locate(t)) == []
    assert (adapter.verify(t).remaining, adapter.verify(t).kept) == (0, 0)
    assert adapter.requests == 0


def test_a_connection_failure_is_transient() -> None:
    dead = s3_client("http://127.0.0.1:9", config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    adapter = S3Adapter(dead)

    with pytest.raises(TransientError, match="my-bucket"):
        list(adapter.locate(target("my-bucket", "docs/{id}.txt", [{"id": 1, "customer_id": "c"}])))


def test_a_listing_larger_than_a_batch_is_paged_and_erased_completely(s3_client: Any, s3_bucket: str) -> None:
    objects = 520  # 1,040 versions: two batches, the first ending mid-listing
    for i in range(objects):
        put_versions(s3_client, s3_bucket, f"big/1/{i:04d}", 2)
    put_versions(s3_client, s3_bucket, "big/2/0000", 2)
    adapter = S3Adapter(s3_client, page_size=100)
    t = target(s3_bucket, "big/{customer_id}/", [{"customer_id": 1}])

    outcome = run(adapter, t)

    assert (outcome.erased, outcome.failed) == (2 * objects, 0)
    assert stored(s3_client, s3_bucket, "big/1/") == set()
    assert len(stored(s3_client, s3_bucket, "big/2/")) == 2
    pages = math.ceil(2 * objects / 100)
    # List pages + DeleteObjects per 1,000 versions
    assert adapter.requests == pages + math.ceil(2 * objects / MAX_BATCH)


def test_request_count_for_erasing_n_objects_with_two_versions_each(s3_client: Any, s3_bucket: str) -> None:
    n = 600
    for i in range(n):
        put_versions(s3_client, s3_bucket, f"docs/{i:04d}.txt", 2)
    records = [{"id": f"{i:04d}", "customer_id": f"c{i}"} for i in range(n)]
    deletes = math.ceil(2 * n / MAX_BATCH)

    # One record batch: one shared listing of "docs/0" (1,200 versions: two pages).
    shared = S3Adapter(s3_client)
    t = target(s3_bucket, "docs/{id}.txt", records, batch_size=n)
    outcome = run(shared, t)
    erase_requests = shared.requests
    assert shared.verify(t).remaining == 0
    assert (outcome.erased, outcome.failed) == (2 * n, 0)
    # Two listing pages + DeleteObjects; verify lists once
    assert erase_requests == 2 + deletes
    assert shared.requests == erase_requests + 1

    # Listed key by key (what a batch of one key gets): a listing per record, each way.
    for i in range(n):
        put_versions(s3_client, s3_bucket, f"docs/{i:04d}.txt", 2)
    each = S3Adapter(s3_client, shared_listing_from=n + 1)
    outcome = run(each, t)
    erase_requests = each.requests
    assert each.verify(t).remaining == 0
    assert (outcome.erased, outcome.failed) == (2 * n, 0)
    assert erase_requests == n + deletes
    assert each.requests == erase_requests + n
    print(f"\nS3 requests for {n} objects x 2 versions: shared {shared.requests}, per key {each.requests}")
