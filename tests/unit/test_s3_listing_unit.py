"""How the S3 adapter lists a large batch of records: one shared listing, or one listing per key.

Runs against an in-memory stand-in for ListObjectVersions that pages like S3 and, like moto,
returns an empty page when the version a page starts after has been deleted, so the tests
also catch a listing that deletes its own marker.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError

from retention.adapters.base import Batch, EraseOutcome, HoldSet, Record, VerifyOutcome
from retention.adapters.s3 import MAX_BATCH, S3Adapter, S3Target


class FakeS3:
    """Versioned objects of one bucket, listed in key order (newest version first), with call counts."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, int, str, bool]] = []
        """(key, -sequence, version id, is delete marker), kept sorted: S3's listing order."""
        self._seq = 0
        self.calls: dict[str, int] = {}

    def put(self, key: str, versions: int = 2, delete_marker: bool = False) -> None:
        for _ in range(versions):
            self._add(key, False)
        if delete_marker:
            self._add(key, True)

    def _add(self, key: str, is_marker: bool) -> None:
        self._seq += 1
        bisect.insort(self._entries, (key, -self._seq, f"v{self._seq}", is_marker))

    def stored(self) -> set[tuple[str, str]]:
        return {(key, vid) for key, _, vid, _ in self._entries}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def head_bucket(self, **_: Any) -> dict[str, Any]:
        self._count("head_bucket")
        return {}

    def get_object_lock_configuration(self, **_: Any) -> dict[str, Any]:
        self._count("get_object_lock_configuration")
        error = {"Error": {"Code": "ObjectLockConfigurationNotFoundError"}}
        raise ClientError(error, "GetObjectLockConfiguration")  # type: ignore[arg-type]

    def list_object_versions(
        self,
        *,
        Bucket: str,  # noqa: N803 - boto3's parameter names
        Prefix: str,  # noqa: N803
        MaxKeys: int,  # noqa: N803
        KeyMarker: str | None = None,  # noqa: N803
        VersionIdMarker: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        self._count("list_object_versions")
        start = bisect.bisect_left(self._entries, (Prefix,))
        if KeyMarker is not None:
            found = [i for i, e in enumerate(self._entries) if e[0] == KeyMarker and e[2] == VersionIdMarker]
            if not found:
                return {"IsTruncated": False}  # as moto does when the marker version is gone
            start = max(start, found[0] + 1)
        page = []
        for entry in self._entries[start:]:
            if not entry[0].startswith(Prefix):
                break
            page.append(entry)
            if len(page) == MaxKeys:
                break
        last = start + len(page)
        more = bool(page) and last < len(self._entries) and self._entries[last][0].startswith(Prefix)
        response: dict[str, Any] = {
            "Versions": [{"Key": k, "VersionId": v} for k, _, v, m in page if not m],
            "DeleteMarkers": [{"Key": k, "VersionId": v} for k, _, v, m in page if m],
            "IsTruncated": more,
        }
        if more:
            response.update(NextKeyMarker=page[-1][0], NextVersionIdMarker=page[-1][2])
        return response

    def delete_objects(self, *, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        self._count("delete_objects")
        doomed = {(o["Key"], o["VersionId"]) for o in Delete["Objects"]}
        assert len(doomed) == len(Delete["Objects"]), "a version was sent twice"
        self._entries = [e for e in self._entries if (e[0], e[2]) not in doomed]
        return {}


def target(template: str, records: Sequence[Record], batch_size: int = 100_000) -> S3Target:
    def source() -> Iterator[Sequence[Record]]:
        for start in range(0, len(records), batch_size):
            yield records[start : start + batch_size]

    return S3Target(
        category="documents", bucket="b", key_template=template, records=source, subject_field="customer_id"
    )


def erase_all(adapter: S3Adapter, t: S3Target) -> EraseOutcome:
    total = EraseOutcome()
    for batch in adapter.locate(t):
        total.add(adapter.erase(t, batch))
    return total


def dense_world(objects: int) -> tuple[FakeS3, list[Record], set[tuple[str, str]]]:
    """``objects`` keys with two versions each; every other key is due."""
    s3 = FakeS3()
    for i in range(objects):
        s3.put(f"docs/{i}.txt")
    records: list[Record] = [{"id": i, "customer_id": f"c{i}"} for i in range(0, objects, 2)]
    kept = {kv for kv in s3.stored() if int(kv[0][5:-4]) % 2}
    return s3, records, kept


def test_a_large_batch_is_listed_once_through_its_common_prefix() -> None:
    s3, records, kept = dense_world(3000)
    adapter = S3Adapter(s3)
    t = target("docs/{id}.txt", records)

    outcome = erase_all(adapter, t)

    assert (outcome.erased, outcome.failed) == (3000, 0)
    assert s3.stored() == kept
    # 6,000 versions: at most 6 pages, against 1,500 listings one key at a time.
    assert s3.calls["list_object_versions"] <= math.ceil(6000 / 1000)
    assert s3.calls["delete_objects"] == math.ceil(3000 / MAX_BATCH)
    before = s3.calls["list_object_versions"]
    assert adapter.verify(t).remaining == 0
    assert s3.calls["list_object_versions"] - before <= math.ceil(3000 / 1000)


def test_below_the_threshold_each_key_keeps_its_own_listing() -> None:
    s3, records, kept = dense_world(600)
    adapter = S3Adapter(s3, shared_listing_from=len(records) + 1)

    outcome = erase_all(adapter, target("docs/{id}.txt", records))

    assert (outcome.erased, s3.stored()) == (600, kept)
    assert s3.calls["list_object_versions"] == len(records)


def test_by_default_two_keys_share_a_listing_and_one_key_has_its_own() -> None:
    s3, records, kept = dense_world(600)
    adapter = S3Adapter(s3)

    outcome = erase_all(adapter, target("docs/{id}.txt", records[:2]))
    assert outcome.erased == 4
    assert s3.calls["list_object_versions"] == 1, "one listing for a batch of two keys"
    outcome = erase_all(adapter, target("docs/{id}.txt", records[2:], batch_size=1))
    assert (outcome.erased, s3.stored()) == (596, kept)
    assert s3.calls["list_object_versions"] == 1 + len(records) - 2, "batches of one key: one listing each"


def test_a_page_boundary_inside_a_key_loses_no_version_or_delete_marker() -> None:
    s3 = FakeS3()
    for i in range(40):
        s3.put(f"docs/{i:02d}", versions=3, delete_marker=i % 3 == 0)
    records: list[Record] = [{"id": f"{i:02d}", "customer_id": "c"} for i in range(40) if i % 4]
    expected = {kv for kv in s3.stored() if int(kv[0][5:]) % 4 == 0}
    # Pages of 7 split keys, and batches of 5 versions are erased between pages.
    adapter = S3Adapter(s3, page_size=7, shared_listing_from=2)
    t = target("docs/{id}", records)

    outcome = EraseOutcome()
    for batch in adapter.locate(t):
        for start in range(0, batch.count, 5):
            part = Batch(items=batch.items[start : start + 5], keys=batch.keys[start : start + 5])
            outcome.add(adapter.erase(t, part))

    assert outcome.failed == 0
    assert s3.stored() == expected
    assert adapter.verify(t).remaining == 0


def test_a_sparse_batch_goes_back_to_one_listing_per_key() -> None:
    s3 = FakeS3()
    for i in range(5000):
        s3.put(f"docs/{i:05d}.txt", versions=1)
    wanted = list(range(0, 5000, 250))  # 20 keys spread over 5,000
    records: list[Record] = [{"id": f"{i:05d}", "customer_id": "c"} for i in wanted]
    adapter = S3Adapter(s3, page_size=100, shared_listing_from=2)

    outcome = erase_all(adapter, target("docs/{id}.txt", records))

    assert outcome.erased == len(wanted)
    assert len(s3.stored()) == 5000 - len(wanted)
    # Two pages of the shared listing show it is sparse; then one listing per remaining key.
    assert s3.calls["list_object_versions"] <= 2 + len(wanted)


def test_going_back_to_single_listings_inside_a_prefix_resumes_without_loss_or_repeat() -> None:
    s3 = FakeS3()
    for n in range(60):
        s3.put(f"cust/1/{n:03d}.pdf")  # 120 versions under the first prefix: many pages of 10
    for c in range(2, 30):
        s3.put(f"cust/{c}/a.pdf", versions=1)
        s3.put(f"cust/{c}x/other.pdf", versions=1)  # between the prefixes, never selected
    records: list[Record] = [{"customer_id": c} for c in range(1, 30)]
    untouched = {kv for kv in s3.stored() if "x/" in kv[0]}
    adapter = S3Adapter(s3, page_size=10, shared_listing_from=2)

    outcome = erase_all(adapter, target("cust/{customer_id}/", records))

    assert (outcome.erased, outcome.failed) == (120 + 28, 0)
    assert s3.stored() == untouched


def test_holds_still_apply_to_a_shared_listing() -> None:
    s3, records, kept = dense_world(2400)
    on_hold = {kv for kv in s3.stored() if kv[0] in ("docs/0.txt", "docs/2.txt")}
    t = dataclasses.replace(
        target("docs/{id}.txt", records), holds=lambda: HoldSet(subjects=frozenset({"c0", "c2"}))
    )
    adapter = S3Adapter(s3)

    outcome = erase_all(adapter, t)

    assert (outcome.erased, outcome.kept) == (2400 - 4, {"legal_hold": 4})
    assert s3.stored() == kept | on_hold
    assert adapter.verify(t) == VerifyOutcome(remaining=0, kept=4)


def test_held_versions_ride_along_and_every_deletion_request_is_full() -> None:
    s3, records, kept = dense_world(2400)  # 1,200 due keys, 2,400 versions
    held = frozenset(f"c{i}" for i in range(0, 400, 2))  # 200 of them held: 400 versions
    on_hold = {kv for kv in s3.stored() if f"c{int(kv[0][5:-4])}" in held}
    t = dataclasses.replace(target("docs/{id}.txt", records), holds=lambda: HoldSet(subjects=held))
    adapter = S3Adapter(s3)

    batches = list(adapter.locate(t))
    outcome = EraseOutcome()
    for batch in batches:
        outcome.add(adapter.erase(t, batch))

    free = [sum(1 for v in b.items if not v.subjects & held) for b in batches]
    assert free == [1000, 1000] and sum(b.count for b in batches) == 2400  # the held ride along
    assert (outcome.erased, outcome.kept) == (2000, {"legal_hold": 400})
    assert s3.calls["delete_objects"] == 2
    assert "head_bucket" not in s3.calls and "get_object_lock_configuration" not in s3.calls
    assert s3.stored() == kept | on_hold


@pytest.mark.parametrize("value", [0, 1])
def test_the_shared_listing_threshold_must_name_at_least_two_keys(value: int) -> None:
    with pytest.raises(ValueError, match="shared_listing_from"):
        S3Adapter(FakeS3(), shared_listing_from=value)
