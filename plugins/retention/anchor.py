"""Anchors of the ledger's chain head, kept where the ledger's writer cannot rewrite them.

The hash chain (``retention.ledger``) finds an edited entry, but its head row lives in the same
database: whoever deletes the last entries and rewrites the head, or rewrites an entry and every
later one consistently, leaves a chain that verifies. So every real run publishes its head (an
``Anchor``: sequence number and entry hash) outside that database, twice: as the extra of the
``retention_ledger`` asset event in Airflow's metadata database, and as an object under
``anchors/`` in the receipts bucket, write-once (S3 Object Lock, COMPLIANCE mode) where the bucket
has Object Lock enabled. The next run checks the chain against the latest anchors
(``check_against_anchor``): the anchored entry must still be there with the anchored hash, and
the head at or after it. Together with ``Ledger.verify_chain`` (every entry up to the head links
to the one before), that pins every entry up to the anchored one.

Object keys sort newest first (``anchors/<999999999999 - seq>-<seq>-<hash16>.json``), so the latest
anchor is found by one bounded listing however many runs there were. An anchor names its
``bucket`` (the receipts bucket, i.e. the deployment): asset events of another deployment's ledger
sharing the metadata database are not compared with this one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from retention.errors import TerminalError
from retention.ledger import Ledger

__all__ = [
    "ANCHOR_PREFIX",
    "EVENT_LIMIT",
    "LIST_LIMIT",
    "LOCK_DAYS",
    "Anchor",
    "AnchorStore",
    "anchor_key",
    "check_against_anchor",
    "from_event_extra",
    "head_anchor",
    "latest_anchors",
    "publish",
]

ANCHOR_PREFIX = "anchors/"
"""Where the anchors lie in the receipts bucket (excluded from the orphan sweep and coverage report)."""

MAX_SEQ = 999_999_999_999
"""The highest sequence number an anchor key can hold (keys sort by ``MAX_SEQ - seq``)."""

LIST_LIMIT = 20
"""Keys listed to find the latest anchor: the first well-formed one is the latest."""

LOCK_DAYS = 3653
"""How long an anchor object is locked (COMPLIANCE) where Object Lock is on: ten years, the longest
statutory keep of the records the ledger proves erased."""

_HASH = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"anchors/(\d{12})-(\d+)-([0-9a-f]{16})\.json")


@dataclass(frozen=True)
class Anchor:
    """The ledger's head as one run left it: entry ``seq`` had hash ``entry_hash``."""

    seq: int
    entry_hash: str
    run_id: str
    at: datetime
    bucket: str
    """The receipts bucket the anchor belongs to (its object's bucket): which deployment's ledger."""

    def __post_init__(self) -> None:
        if not 1 <= self.seq <= MAX_SEQ or not _HASH.fullmatch(self.entry_hash):
            raise TerminalError("an anchor needs a sequence number >= 1 and a 64-hex-digit entry hash")
        if self.at.tzinfo is None:
            raise TerminalError("an anchor's time must be timezone-aware")

    def document(self) -> dict[str, Any]:
        """The anchor as JSON-ready data (the object's body and the asset event's ``anchor`` extra)."""
        return {**asdict(self), "at": self.at.isoformat()}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Anchor:
        """Parse ``document()``'s output; TerminalError if it is not one."""
        try:
            seq, at = doc["seq"], datetime.fromisoformat(str(doc["at"]))
            entry, run_id, bucket = doc["entry_hash"], doc["run_id"], doc["bucket"]
        except (KeyError, TypeError, ValueError):
            raise TerminalError("an anchor document is malformed") from None
        if type(seq) is not int or not all(isinstance(f, str) for f in (entry, run_id, bucket)):
            raise TerminalError("an anchor document is malformed")
        return cls(seq, entry, run_id, at, bucket)


def anchor_key(anchor: Anchor) -> str:
    """The object key: newest first in a listing, and naming the sequence number for a human."""
    return f"{ANCHOR_PREFIX}{MAX_SEQ - anchor.seq:012d}-{anchor.seq}-{anchor.entry_hash[:16]}.json"


def head_anchor(ledger: Ledger, run_id: str, bucket: str, at: datetime | None = None) -> Anchor | None:
    """The ledger's head now as an anchor; None while the ledger has no entry."""
    head = ledger.head()
    if head is None or head[0] == 0:
        return None
    return Anchor(head[0], head[1], run_id, at or datetime.now(UTC), bucket)


def check_against_anchor(ledger: Ledger, anchor: Anchor) -> str | None:
    """What disagrees between the ledger and ``anchor`` (a sentence naming the anchored seq), or None.

    The entry at ``anchor.seq`` must exist with ``anchor.entry_hash`` and the head must be at or after
    it; ``Ledger.verify_chain`` must pass as well for the entries before it to be pinned too.
    """
    where = f"the anchor of entry {anchor.seq} (run {anchor.run_id}, {anchor.at.isoformat()})"
    head = ledger.head()
    if head is None:
        return f"the ledger's head row is missing, but {where} exists"
    if head[0] < anchor.seq:
        return f"the ledger ends at entry {head[0]}, before {where}: its tail was truncated"
    found = ledger.hash_at(anchor.seq)
    if found is None:
        return f"entry {anchor.seq} is missing, but {where} names it"
    if found != anchor.entry_hash:
        return f"entry {anchor.seq} has another hash than {where}: the chain was rewritten"
    return None


def from_event_extra(extras: Iterable[Mapping[str, Any] | None], bucket: str) -> Anchor | None:
    """The highest anchor of ``bucket`` among asset events' extras (newest first; others ignored)."""
    found: list[Anchor] = []
    for extra in extras:
        doc = (extra or {}).get("anchor")
        if isinstance(doc, Mapping) and doc.get("bucket") == bucket:
            found.append(Anchor.from_document(doc))
    return max(found, key=lambda a: a.seq, default=None)


@dataclass(frozen=True)
class AnchorStore:
    """The anchors in one S3 bucket (the receipts bucket) through a boto3 client."""

    client: Any
    bucket: str

    def locked(self) -> bool:
        """Whether the bucket has Object Lock enabled (then anchors are written write-once)."""
        from botocore.exceptions import ClientError

        from retention.adapters.s3 import classify, error_code

        try:
            cfg = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as e:
            if error_code(e.response) == "ObjectLockConfigurationNotFoundError":
                return False
            raise classify(e, "GetObjectLockConfiguration", self.bucket) from None
        return bool(cfg.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def write(self, anchor: Anchor) -> str:
        """Store ``anchor`` under ``anchors/`` (locked until ``LOCK_DAYS`` after it if the bucket can
        lock); return its key."""
        if anchor.bucket != self.bucket:
            raise TerminalError("an anchor is written to the bucket it names")
        key = anchor_key(anchor)
        body = json.dumps(anchor.document(), sort_keys=True).encode()
        lock: dict[str, Any] = {}
        if self.locked():
            lock = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": anchor.at + _LOCK}
        self._call(
            "PutObject",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **lock
            ),
        )
        return key

    def latest(self) -> Anchor | None:
        """The anchor with the highest sequence number, from one listing of ``LIST_LIMIT`` keys."""
        listed = self._call(
            "ListObjectsV2",
            lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=ANCHOR_PREFIX, MaxKeys=LIST_LIMIT),
        )
        for item in listed.get("Contents", []):
            match = _KEY.fullmatch(str(item.get("Key", "")))
            if match is None or int(match[1]) != MAX_SEQ - int(match[2]):
                continue
            got = self._call(
                "GetObject", lambda k=item["Key"]: self.client.get_object(Bucket=self.bucket, Key=k)
            )
            try:
                anchor = Anchor.from_document(json.loads(got["Body"].read()))
            except ValueError:
                raise TerminalError(f"the anchor of entry {match[2]} is not JSON") from None
            if anchor_key(anchor) != match[0] or anchor.bucket != self.bucket:
                raise TerminalError(f"the anchor of entry {match[2]} does not match its key")
            return anchor
        return None

    def _call(self, operation: str, fn: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        from retention.adapters.s3 import classify

        try:
            return fn()
        except (ClientError, BotoCoreError) as e:
            raise classify(e, operation, self.bucket) from None


_LOCK = timedelta(days=LOCK_DAYS)


EVENT_LIMIT = 20
"""Asset events read (newest first) to find the latest anchor of this deployment."""


def latest_anchors(
    store: AnchorStore, event_extras: Iterable[Mapping[str, Any] | None]
) -> tuple[Anchor, ...]:
    """The latest anchor from the asset events and the latest anchor object, those that exist: the chain
    must agree with each (either may be ahead: a run whose object was written but whose task failed)."""
    found = (from_event_extra(event_extras, store.bucket), store.latest())
    return tuple(a for a in found if a is not None)


def publish(store: AnchorStore, ledger: Ledger, run_id: str) -> Anchor | None:
    """Anchor the ledger's head now as an object in ``store``; return it (for the asset event's extra)."""
    anchor = head_anchor(ledger, run_id, store.bucket)
    if anchor is not None:
        store.write(anchor)
    return anchor
