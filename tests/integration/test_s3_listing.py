"""The S3 adapter's shared listing for large record batches, against the real moto S3 server."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from retention.adapters.base import EraseOutcome, Record
from retention.adapters.s3 import MAX_BATCH, S3Adapter, S3Target


def stored(client: Any, bucket: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            found.add((entry["Key"], entry["VersionId"]))
    return found


def one_batch(bucket: str, template: str, records: Sequence[Record]) -> S3Target:
    def source() -> Iterator[Sequence[Record]]:
        yield records

    return S3Target(
        category="documents",
        bucket=bucket,
        key_template=template,
        records=source,
        subject_field="customer_id",
    )


def test_a_batch_of_many_keys_is_listed_once_and_erased_in_full_batches(
    s3_client: Any, s3_bucket: str
) -> None:
    objects = 2 * MAX_BATCH + 100

    def put(i: int) -> None:
        for v in range(2):
            s3_client.put_object(Bucket=s3_bucket, Key=f"docs/{i}/{i}.txt", Body=f"v{v}".encode())
        if i % 10 == 0:  # a delete marker on top of some
            s3_client.delete_object(Bucket=s3_bucket, Key=f"docs/{i}/{i}.txt")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(objects)))
    s3_client.put_object(Bucket=s3_bucket, Key="other/1.txt", Body=b"x")
    before = stored(s3_client, s3_bucket)
    due = {i for i in range(objects) if i % 2 == 0}
    selected = {kv for kv in before if kv[0].startswith("docs/") and int(kv[0].split("/")[1]) in due}
    records: list[Record] = [{"id": i, "customer_id": f"c{i}"} for i in sorted(due)]
    t = one_batch(s3_bucket, "docs/{id}/{id}.txt", records)
    adapter = S3Adapter(s3_client)

    outcome = EraseOutcome()
    for batch in adapter.locate(t):
        outcome.add(adapter.erase(t, batch))
    erase_requests = adapter.requests
    check = adapter.verify(t)

    assert (outcome.erased, outcome.failed) == (len(selected), 0)
    assert stored(s3_client, s3_bucket) == before - selected
    assert check.remaining == 0
    listed = len(before) - 1  # everything under "docs/"
    # One shared listing + DeleteObjects per 1,000 versions, instead of a listing per record
    # (1,100 requests); verify lists what is left once more.
    assert erase_requests <= math.ceil(listed / 1000) + math.ceil(len(selected) / MAX_BATCH)
    assert adapter.requests - erase_requests <= math.ceil((listed - len(selected)) / 1000)
