"""The S3 adapter: erases every version and delete marker of the objects a target selects.

A target names a bucket and a key template filled from each selected record
(``documents/{customer_id}/{id}.pdf``: that key; ``exports/{customer_id}/``: every
key under that prefix). Items are object versions; erasing deletes them by version
id, so nothing of the object survives in the bucket's history. Versions of held
subjects or under held prefixes, and versions protected by S3 Object Lock, are
kept and reported. Every API call is counted in ``requests``.

Requests: a step makes list pages, DeleteObjects requests and the verifying list pages, and
nothing else while all goes well. A missing bucket fails the first listing (``NoSuchBucket``:
``UnknownLocationError``); where no record names a key nothing is listed, nothing can be erased
or left, and the bucket is not asked about. S3 itself refuses to delete a version under Object
Lock, so the lock is looked up (the bucket's configuration once, then HeadObject) only for
versions that were refused or that remain when looking again. A batch holds up to 1,000
versions that are not held when it is located, so that each DeleteObjects is full.

Listing: a batch of records naming two or more keys (or prefixes) is served by a single
listing of their common prefix that stops after the last of them, because listing each key
costs a request per key where the shared listing costs a request per 1,000 versions. Should
the shared listing turn out sparse (more pages than keys it has passed), the rest of the
batch goes back to one ListObjectVersions listing per key, so it never costs much more than
those would have. A batch naming one key is listed by that key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from retention.adapters.base import (
    Batch,
    EraseOutcome,
    HoldSet,
    HoldSource,
    Record,
    RecordSource,
    SharedCheck,
    VerifyOutcome,
    no_holds,
    not_shared,
)
from retention.errors import RetentionError, TerminalError, TransientError, UnknownLocationError
from retention.locations import S3Location
from retention.paths import is_prefix, placeholders, render
from retention.results import Reason
from retention.stores import TargetInputs

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_BATCH = 1000
"""Versions a batch may delete (those not held when it was located), and keys per DeleteObjects
request (the S3 maximum)."""
MAX_BATCH_ITEMS = 2 * MAX_BATCH
"""Versions per batch in all, the held ones riding along included (memory stays bounded)."""

SHARED_LISTING_FROM = 2
"""Keys (or prefixes) a record batch must name before they are listed through their common prefix.

Two: the sparse fallback bounds what a shared listing can cost, so there is no batch too small
to try it (a customer's few documents are one request, not one each)."""

_THROTTLING = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequests",
    }
)
_TRANSIENT_CODES = _THROTTLING | {"InternalError", "ServiceUnavailable", "RequestTimeout"}
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_LOCK_NOT_CONFIGURED = frozenset({"ObjectLockConfigurationNotFoundError"})
_VERSION_GONE = frozenset({"404", "NoSuchKey", "NoSuchVersion"})
_MAX_ERROR_CODES = 10


def build_target(location: S3Location, inputs: TargetInputs) -> S3Target:
    """The target of one S3 location: its real bucket and the key template filled per record."""
    return S3Target(
        category=inputs.category,
        bucket=inputs.bucket_map.get(location.bucket, location.bucket),
        key_template=location.key,
        records=inputs.records(placeholders(location.key)),
        subject_field=inputs.subject_field,
        holds=inputs.holds,
        key_field=inputs.key_field,
        shared=inputs.shared,
    )


@dataclass(frozen=True)
class S3Target:
    """The object versions one policy location selects in one bucket."""

    category: str
    bucket: str
    key_template: str
    """Filled per record by ``retention.paths.render()``; a trailing ``/`` selects every key under it."""
    records: RecordSource
    subject_field: str
    """The record field holding the subject (customer) id, for legal holds."""
    holds: HoldSource = no_holds
    key_field: str | None = None
    """The records' key column: a kept version names the records whose rows must stay with it."""
    shared: SharedCheck = not_shared
    """Of a batch's keys, those a record that may not be erased now also names (they stay)."""


class S3Version(NamedTuple):
    """One object version or delete marker, with the subjects and keys of the records that selected it."""

    key: str
    version_id: str
    is_delete_marker: bool
    subjects: frozenset[str]
    records: frozenset[str] = frozenset()


Wanted = tuple[str, str | None] | tuple[str, str | None, str | None]
"""A rendered key (or prefix), the subject of the record naming it, and that record's key if known."""


@dataclass(frozen=True)
class Listing:
    """One ListObjectVersions prefix serving the rendered keys (or prefixes) of several records.

    ``owners`` maps each rendered key or prefix to the subjects of the records that named it,
    ``records`` to those records' keys.
    """

    prefix: str
    owners: Mapping[str, frozenset[str]]
    records: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def subjects_of(self, key: str, exact: bool) -> frozenset[str] | None:
        """The subjects owning a listed ``key``, or ``None`` if no record selects it."""
        return _union(self.owners, self.named_by(key, exact))

    def records_of(self, key: str, exact: bool) -> frozenset[str]:
        """The keys of the records that select a listed ``key``."""
        return _union(self.records, self.named_by(key, exact)) or frozenset()

    def named_by(self, key: str, exact: bool) -> list[str]:
        """The rendered keys or prefixes of this listing that select ``key``."""
        if exact:
            return [key] if key in self.owners else []
        # Prefix templates end in "/", so a key's candidate owners are its "/"-terminated prefixes.
        return [
            key[: end + 1]
            for end in range(len(self.prefix) - 1, len(key))
            if key[end] == "/" and key[: end + 1] in self.owners
        ]


def _union(sets: Mapping[str, frozenset[str]], names: Sequence[str]) -> frozenset[str] | None:
    found = [sets[n] for n in names if n in sets]
    return frozenset().union(*found) if found else None


def group_listings(wanted: Iterable[Wanted]) -> list[Listing]:
    """Group (rendered key or prefix, subject[, record key]) so that each version is listed once.

    Identical keys share a listing, and so does every key starting with another wanted
    key: listing that shorter prefix already returns its versions. Listings never overlap.
    """
    owners: dict[str, set[str]] = {}
    records: dict[str, set[str]] = {}
    for key, subject, *record in wanted:
        subjects = owners.setdefault(key, set())
        keys = records.setdefault(key, set())
        if subject is not None:
            subjects.add(subject)
        keys.update(r for r in record if r is not None)
    groups: list[tuple[str, dict[str, frozenset[str]], dict[str, frozenset[str]]]] = []
    for key in sorted(owners):
        if groups and key.startswith(groups[-1][0]):
            groups[-1][1][key] = frozenset(owners[key])
            groups[-1][2][key] = frozenset(records[key])
        else:
            groups.append((key, {key: frozenset(owners[key])}, {key: frozenset(records[key])}))
    return [Listing(prefix, members, keys) for prefix, members, keys in groups]


def error_code(response: Mapping[str, Any]) -> str:
    """The error code of an S3 error response, reduced to a short token safe for logs."""
    error = response.get("Error")
    raw = str(error.get("Code", "")) if isinstance(error, Mapping) else ""
    return re.sub(r"[^A-Za-z0-9._-]", "", raw)[:64] or "Unknown"


def classify(error: Exception, operation: str, bucket: str) -> RetentionError:
    """Map a botocore error to a transient or terminal engine error naming only the bucket and the code."""
    where = f"S3 {operation} on bucket {bucket!r}"
    if isinstance(error, ClientError):
        code = error_code(error.response)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket" or (operation == "HeadBucket" and status == 404):
            return UnknownLocationError(f"S3 bucket {bucket!r} does not exist")
        if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
            return TransientError(f"{where} failed with {code} (HTTP {status})")
        return TerminalError(f"{where} was refused with {code} (HTTP {status})")
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return TransientError(f"{where} failed: {type(error).__name__}")
    return TerminalError(f"{where} failed: {type(error).__name__}")


@dataclass(frozen=True)
class _Lock:
    until: str | None


_Entry = tuple[str, str, bool]
"""(key, version id, is delete marker) as listed."""


@dataclass(frozen=True)
class _Resume:
    """Where a shared listing stopped: the version it last listed after, and that version itself."""

    after: tuple[str, str]
    held: list[_Entry]


class S3Adapter:
    """Locate, erase and verify object versions through one boto3 S3 client."""

    store = "s3"
    requests: int
    """Every S3 API call made through this adapter (botocore's own retries not included)."""

    def __init__(
        self, client: S3Client, *, page_size: int = 1000, shared_listing_from: int = SHARED_LISTING_FROM
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        if shared_listing_from < 2:
            raise ValueError("shared_listing_from must be at least 2")
        self._client = client
        self._page_size = page_size
        self._shared_from = shared_listing_from
        self._known_buckets: set[str] = set()
        self._lock_enabled: dict[str, bool] = {}
        self.requests = 0

    def locate(self, target: S3Target) -> Iterator[Batch[S3Version]]:
        """Yield every version and delete marker the target selects; touch nothing.

        A batch holds up to ``MAX_BATCH`` versions not held now (one full DeleteObjects), and the
        held ones listed among them, at most ``MAX_BATCH_ITEMS`` in all. ``erase`` reads the holds again.
        """
        yield from self._located(target, target.holds())

    def _located(self, target: S3Target, holds: HoldSet) -> Iterator[Batch[S3Version]]:
        buffer: list[S3Version] = []
        free = 0
        for version in self._selected(target):
            buffer.append(version)
            free += not _held(version, holds)
            if free == MAX_BATCH or len(buffer) == MAX_BATCH_ITEMS:
                yield _batch(buffer)
                buffer, free = [], 0
        if buffer:
            yield _batch(buffer)

    def named(self, target: S3Target) -> Iterator[Batch[S3Version]]:
        """Version ids are in the bucket only, not in the index: a real run's batches are located too."""
        return self.locate(target)

    def erase(self, target: S3Target, batch: Batch[S3Version]) -> EraseOutcome:
        """Delete the batch's versions not held or shared now; S3 refuses those under Object Lock, which
        are then kept with their until-date (``_refused``); other per-key refusals are counted as failed."""
        outcome = EraseOutcome()
        holds = target.holds()
        shared = target.shared(sorted({v.key for v in batch.items}))
        doomed: list[S3Version] = []
        for version in batch.items:
            if _held(version, holds):
                outcome.keep(Reason.LEGAL_HOLD, records=version.records)
            elif version.key in shared:
                outcome.keep(Reason.SHARED_WITH_NOT_DUE, records=version.records)
            else:
                doomed.append(version)
        for start in range(0, len(doomed), MAX_BATCH):
            self._delete(target.bucket, doomed[start : start + MAX_BATCH], outcome)
        return outcome

    def verify(self, target: S3Target) -> VerifyOutcome:
        """Look again: versions still selected count as remaining unless held, shared or locked (kept)."""
        holds = target.holds()
        remaining = kept = 0
        for batch in self._located(target, holds):
            shared = target.shared(sorted({v.key for v in batch.items}))
            left = [v for v in batch.items if not (_held(v, holds) or v.key in shared)]
            locked = len(self._locks(target.bucket, left))
            kept += batch.count - len(left) + locked
            remaining += len(left) - locked
        return VerifyOutcome(remaining=remaining, kept=kept)

    def _selected(self, target: S3Target) -> Iterator[S3Version]:
        exact = not is_prefix(target.key_template)
        what = f"S3 key of category {target.category!r}"
        for records in target.records():
            wanted: list[Wanted] = [
                (
                    render(target.key_template, r, what),
                    _subject(r, target.subject_field),
                    _key(r, target.key_field),
                )
                for r in records
            ]
            listings = group_listings(wanted)
            if len(listings) >= self._shared_from:
                yield from self._shared(target.bucket, listings, exact)
            else:
                yield from self._each(target.bucket, listings, exact)

    def _each(
        self, bucket: str, listings: Sequence[Listing], exact: bool, resume: _Resume | None = None
    ) -> Iterator[S3Version]:
        """One listing per key or prefix; ``resume``: the first goes on where a shared listing stopped."""
        for n, listing in enumerate(listings):
            for entry in self._versions(bucket, listing.prefix, resume if n == 0 else None):
                yield from _owned(listing, [entry], exact)

    def _shared(self, bucket: str, listings: Sequence[Listing], exact: bool) -> Iterator[S3Version]:
        """One listing of the common prefix of ``listings`` (sorted, disjoint), stopping after the last."""
        prefix = os.path.commonprefix([listing.prefix for listing in listings])
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": self._page_size}
        at = pages = 0
        held: list[_Entry] = []
        while True:
            page = self._call("list_object_versions", bucket, **params)
            pages += 1
            marker = _next_marker(page, bucket)
            # Versions and delete markers come in two lists: merged, the page is in key order.
            entries = sorted([*held, *_entries(page)], key=lambda e: e[0])
            held = [e for e in entries if marker is not None and e[:2] == marker]
            for entry in entries:
                at = _advance(listings, at, entry[0])
                if at == len(listings):
                    return
                # The entry the next page starts after is released with that page (see _versions).
                if marker is None or entry[:2] != marker:
                    yield from _owned(listings[at], [entry], exact)
            if marker is None:
                return
            if pages > at + 1:
                # Sparse: more pages than keys passed so far; one listing per remaining key is cheaper.
                inside = marker[0].startswith(listings[at].prefix)
                resume = _Resume(marker, held) if inside else None
                yield from self._each(bucket, listings[at:], exact, resume)
                return
            params.update(KeyMarker=marker[0], VersionIdMarker=marker[1])

    def _versions(self, bucket: str, prefix: str, resume: _Resume | None = None) -> Iterator[_Entry]:
        """Every (key, version id, is delete marker) under ``prefix``, one page in memory at a time."""
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": self._page_size}
        if resume is not None:
            params.update(KeyMarker=resume.after[0], VersionIdMarker=resume.after[1])
        page = self._call("list_object_versions", bucket, **params)
        if resume is not None:
            yield from resume.held
        while True:
            marker = _next_marker(page, bucket)
            held_back: list[_Entry] = []
            for entry in _entries(page):
                # The entry the next page starts after is released only once that page is
                # fetched: the caller may delete what we yield, and a marker naming a deleted
                # version makes some servers (moto) return an empty page.
                if marker is not None and entry[:2] == marker:
                    held_back.append(entry)
                else:
                    yield entry
            if marker is None:
                return
            params.update(KeyMarker=marker[0], VersionIdMarker=marker[1])
            page = self._call("list_object_versions", bucket, **params)
            yield from held_back

    def _delete(self, bucket: str, versions: Sequence[S3Version], outcome: EraseOutcome) -> None:
        objects = [{"Key": v.key, "VersionId": v.version_id} for v in versions]
        response = self._call(
            "delete_objects", bucket, Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
        )
        errors = response.get("Errors") or []
        outcome.erased += len(versions) - len(errors)
        for error in self._refused(bucket, versions, errors, outcome):
            outcome.failed += 1
            code = error_code({"Error": error})
            if code not in outcome.errors and len(outcome.errors) < _MAX_ERROR_CODES:
                outcome.errors.append(code)

    def _refused(
        self,
        bucket: str,
        versions: Sequence[S3Version],
        errors: Sequence[Mapping[str, Any]],
        outcome: EraseOutcome,
    ) -> list[Mapping[str, Any]]:
        """Count the refused versions Object Lock keeps as kept; return the refusals it does not explain.

        S3 refuses to delete a locked version itself, so the lock is looked up only after a refusal
        (the bucket's configuration once, then HeadObject per refused version). An error names its
        key, and its version where the server says it (moto does not).
        """
        if not errors or not self._object_lock_enabled(bucket):
            return list(errors)
        unexplained: list[Mapping[str, Any]] = []
        candidates = list(versions)
        now = datetime.now(UTC)
        for error in errors:
            lock: _Lock | None = None
            for version in [v for v in candidates if _names(error, v) and not v.is_delete_marker]:
                lock = self._lock_of(bucket, version, now)
                if lock is not None:
                    outcome.keep(Reason.STORAGE_LOCK, until=lock.until, records=version.records)
                    candidates.remove(version)
                    break
            if lock is None:
                unexplained.append(error)
        return unexplained

    def _locks(self, bucket: str, versions: Sequence[S3Version]) -> dict[int, _Lock]:
        """The Object Lock in force on each version, by position; empty if the bucket has no Object Lock."""
        candidates = [(i, v) for i, v in enumerate(versions) if not v.is_delete_marker]
        if not candidates or not self._object_lock_enabled(bucket):
            return {}
        locks: dict[int, _Lock] = {}
        now = datetime.now(UTC)
        for index, version in candidates:
            lock = self._lock_of(bucket, version, now)
            if lock is not None:
                locks[index] = lock
        return locks

    def _lock_of(self, bucket: str, version: S3Version, now: datetime) -> _Lock | None:
        # HeadObject reports retention and legal hold in one call; moto 5.2 does not
        # implement GetObjectRetention (it answers with the object body).
        head = self._call(
            "head_object",
            bucket,
            tolerate=_VERSION_GONE,
            Bucket=bucket,
            Key=version.key,
            VersionId=version.version_id,
        )
        if head is None:
            return None
        until = head.get("ObjectLockRetainUntilDate")
        if head.get("ObjectLockMode") and isinstance(until, datetime) and until > now:
            return _Lock(until.astimezone(UTC).isoformat(timespec="seconds"))
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return _Lock(None)
        return None

    def _object_lock_enabled(self, bucket: str) -> bool:
        if bucket not in self._lock_enabled:
            config = self._call(
                "get_object_lock_configuration", bucket, tolerate=_LOCK_NOT_CONFIGURED, Bucket=bucket
            )
            enabled = (config or {}).get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            self._lock_enabled[bucket] = enabled
        return self._lock_enabled[bucket]

    def _check_bucket(self, bucket: str) -> None:
        if bucket not in self._known_buckets:
            self._call("head_bucket", bucket, Bucket=bucket)

    def _call(self, method: str, bucket: str, tolerate: frozenset[str] = frozenset(), **params: Any) -> Any:
        """Call one S3 API, counting it; ``None`` for a tolerated error code, else a classified error.

        A call that succeeds proves the bucket exists (``_check_bucket`` then asks no more)."""
        self.requests += 1
        try:
            response = getattr(self._client, method)(**params)
            self._known_buckets.add(bucket)
            return response
        except ClientError as exc:
            if error_code(exc.response) in tolerate:
                return None
            failure: Exception = exc
        except BotoCoreError as exc:
            failure = exc
        # "from None": botocore messages may carry the object key (the request URL).
        raise classify(failure, _operation(method), bucket) from None

    # -- read-only, for the orphan sweep (``retention.sweep``) -------------------------------------

    def listed_versions(self, bucket: str, prefix: str) -> Iterator[tuple[str, str, bool, datetime]]:
        """Every version and delete marker under ``prefix`` as (key, version id, is delete marker,
        last modified), in key order, one page in memory at a time; touches nothing.

        As in ``_versions``, the entry the next page starts after is released only once that page
        is fetched, so the caller may delete what it was given while the listing goes on.
        """
        self._check_bucket(bucket)
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": self._page_size}
        page = self._call("list_object_versions", bucket, **params)
        while True:
            marker = _next_marker(page, bucket)
            listed = [
                (str(v["Key"]), str(v["VersionId"]), kind == "DeleteMarkers", v["LastModified"])
                for kind in ("Versions", "DeleteMarkers")
                for v in page.get(kind) or ()
            ]
            held_back = []
            # Versions and delete markers come in two lists: merged, the page is in key order.
            for entry in sorted(listed, key=lambda e: e[0]):
                if marker is not None and entry[:2] == marker:
                    held_back.append(entry)
                else:
                    yield entry
            if marker is None:
                return
            params.update(KeyMarker=marker[0], VersionIdMarker=marker[1])
            page = self._call("list_object_versions", bucket, **params)
            yield from held_back

    def object_locks(self, bucket: str, versions: Sequence[S3Version]) -> dict[int, str | None]:
        """The versions (by position) that S3 Object Lock keeps now, each with its retention's
        until-date (None for a legal hold); empty if the bucket has no Object Lock. Touches nothing."""
        return {index: lock.until for index, lock in self._locks(bucket, versions).items()}


def _operation(method: str) -> str:
    return "".join(part.title() for part in method.split("_"))


def _subject(record: Record, field: str) -> str | None:
    if field not in record:
        raise TerminalError(f"selected records lack the subject field {field!r}")
    value = record[field]
    return None if value is None else str(value)


def _key(record: Record, field: str | None) -> str | None:
    value = record.get(field) if field else None
    return None if value is None else str(value)


def _names(error: Mapping[str, Any], version: S3Version) -> bool:
    """Whether a DeleteObjects error is about ``version`` (by key, and by version id if it has one)."""
    named = error.get("VersionId")
    return error.get("Key") == version.key and (not named or named == version.version_id)


def _held(version: S3Version, holds: HoldSet) -> bool:
    return any(holds.subject_held(s) for s in version.subjects) or holds.path_held(version.key)


def _advance(listings: Sequence[Listing], at: int, key: str) -> int:
    """The first listing from ``at`` that ``key`` has not passed (listings are sorted and disjoint)."""
    while at < len(listings):
        prefix = listings[at].prefix
        if key <= prefix or key.startswith(prefix):
            return at
        at += 1
    return at


def _owned(listing: Listing, entries: Iterable[_Entry], exact: bool) -> Iterator[S3Version]:
    """The entries a listing's records select, with their subjects."""
    for key, version_id, is_marker in entries:
        if not key.startswith(listing.prefix):
            continue
        names = listing.named_by(key, exact)
        if names:
            subjects = _union(listing.owners, names) or frozenset()
            yield S3Version(
                key, version_id, is_marker, subjects, _union(listing.records, names) or frozenset()
            )


def _batch(versions: list[S3Version]) -> Batch[S3Version]:
    return Batch(items=versions, keys=[f"{v.key}@{v.version_id}" for v in versions])


def _entries(page: Mapping[str, Any]) -> Iterator[_Entry]:
    for version in page.get("Versions") or ():
        yield version["Key"], version["VersionId"], False
    for marker in page.get("DeleteMarkers") or ():
        yield marker["Key"], marker["VersionId"], True


def _next_marker(page: Mapping[str, Any], bucket: str) -> tuple[str, str] | None:
    """Where the next page starts, or ``None`` after the last page."""
    if not page.get("IsTruncated"):
        return None
    key, version_id = page.get("NextKeyMarker"), page.get("NextVersionIdMarker")
    if not key or not version_id:
        raise TerminalError(f"S3 ListObjectVersions on bucket {bucket!r} was truncated without a next marker")
    return key, version_id
