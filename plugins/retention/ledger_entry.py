"""Ledger entries: what one entry may hold, how it is stored, and its hash.

Every planned, erased, kept or failed piece of work leaves one entry: counts, a digest
of the keys touched (or, for a database batch named by a key range, of that range: its
``planned`` entry has count 0 and ``detail.named_by = key_range``, and its outcome entry the
rows it held), at most a pseudonym, never a list of items or personal data. Constructing a
``LedgerEntry`` validates every field, so a malformed or personal one never reaches the chain.

An entry's hash covers all its stored fields, including its sequence number, time and the
previous entry's hash (``retention.ledger`` chains the entries). ``key_period`` (the period of the
key its pseudonyms were made with, ``retention.keyring``) came later: it is hashed only when set,
so the entries written before it existed still match their hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from retention.dbutil import aware_utc
from retention.errors import TerminalError
from retention.guard import check_text
from retention.pseudonym import is_pseudonym

OUTCOMES = frozenset(
    {
        "planned",
        "erased",
        "anonymised",
        "kept",
        "failed",
        "verified",
        "verify_failed",
        "approval_requested",
        "approved",
        "rejected",
        "skipped",
        "summary",
    }
)

HASHED_FIELDS = (
    "seq",
    "entry_id",
    "recorded_at",
    "run_id",
    "category",
    "store",
    "location",
    "action",
    "outcome",
    "count",
    "items_digest",
    "subject_ref",
    "reason",
    "until",
    "policy_set_hash",
    "detail",
    "prev_hash",
)
"""Every stored column but ``entry_hash`` itself and ``key_period`` (hashed only when set)."""

KEY_PERIOD = "key_period"

MAX_DETAIL = 4096

_ACTION = re.compile(r"[a-z][a-z0-9_]{0,39}")
_KEY_PERIOD = re.compile(r"[0-9]{4}")
_HEX = re.compile(r"[0-9a-f]{16,128}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?")


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One fact for the ledger; constructing it raises TerminalError if a field is malformed or personal."""

    action: str
    """What kind of work: ``delete``, ``anonymise``, ``approval``, ``run``, ..."""
    outcome: str
    """One of ``OUTCOMES``."""
    run_id: str | None = None
    category: str | None = None
    store: str | None = None
    location: str | None = None
    count: int = 0
    items_digest: str | None = None
    """Hex digest of the keys touched (``KeyDigest``)."""
    subject_ref: str | None = None
    """A pseudonym (``retention.pseudonym``), never a raw identifier."""
    reason: str | None = None
    until: str | None = None
    """ISO 8601 date or date-time."""
    policy_set_hash: str | None = None
    detail: Mapping[str, Any] | None = None
    """A small JSON-serialisable dict of counts and codes."""
    key_period: str | None = None
    """The period (a year) of the pseudonym key the run used (``retention.keyring``); None: an entry
    written before keys had periods, or by a writer that uses no key."""
    entry_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        stored_fields(self)


def stored_fields(entry: LedgerEntry) -> dict[str, Any]:
    """The entry's columns as stored (detail as canonical JSON text), validated; TerminalError if refused."""
    return {
        "entry_id": _entry_id(entry.entry_id),
        "run_id": check_text("run_id", entry.run_id),
        "category": check_text("category", entry.category),
        "store": check_text("store", entry.store),
        "location": check_text("location", entry.location),
        "action": _matching("action", entry.action, _ACTION),
        "outcome": _outcome(entry.outcome),
        "count": _count(entry.count),
        "items_digest": _optional_matching("items_digest", entry.items_digest, _HEX),
        "subject_ref": _subject_ref(entry.subject_ref),
        "reason": check_text("reason", entry.reason),
        "until": _until(entry.until),
        "policy_set_hash": _optional_matching("policy_set_hash", entry.policy_set_hash, _HEX),
        "detail": _detail(entry.detail),
        KEY_PERIOD: check_key_period(entry.key_period),
    }


def check_key_period(value: str | None) -> str | None:
    """``value`` if it is None or a key period (a four-digit year); TerminalError otherwise."""
    return _optional_matching(KEY_PERIOD, value, _KEY_PERIOD)


def entry_hash(stored: Mapping[str, Any] | RowMapping) -> str:
    """SHA-256 over the canonical JSON of an entry's ``HASHED_FIELDS`` as stored, and its ``key_period``
    if it has one."""
    payload = {name: stored[name] for name in HASHED_FIELDS}
    if stored.get(KEY_PERIOD) is not None:
        payload[KEY_PERIOD] = stored[KEY_PERIOD]
    payload["recorded_at"] = aware_utc("recorded_at", stored["recorded_at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _entry_id(value: str) -> str:
    try:
        canonical = str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise TerminalError("entry_id must be a UUID") from None
    if canonical != value:
        raise TerminalError("entry_id must be a UUID in canonical lower-case form")
    return value


def _matching(name: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise TerminalError(f"{name} has an invalid form")
    return value


def _optional_matching(name: str, value: str | None, pattern: re.Pattern[str]) -> str | None:
    return None if value is None else _matching(name, value, pattern)


def _outcome(value: str) -> str:
    if value not in OUTCOMES:
        raise TerminalError(f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
    return value


def _count(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TerminalError("count must be a non-negative integer")
    return value


def _subject_ref(value: str | None) -> str | None:
    if value is not None and not (isinstance(value, str) and is_pseudonym(value)):
        raise TerminalError("subject_ref must be a pseudonym (psn:...), never a raw identifier")
    return value


def _until(value: str | None) -> str | None:
    if value is None:
        return None
    _matching("until", value, _ISO_DATE)
    try:
        (datetime if "T" in value else date).fromisoformat(value)
    except ValueError:
        raise TerminalError("until is not a valid ISO 8601 date") from None
    return value


def _detail(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TerminalError("detail must be a dict with text keys")
    try:
        text = _canonical_json(dict(value))
    except (TypeError, ValueError):
        raise TerminalError("detail must be JSON-serialisable (finite numbers, text, lists, dicts)") from None
    if len(text) > MAX_DETAIL:
        raise TerminalError(f"detail is longer than {MAX_DETAIL} characters: counts and codes only")
    for piece in _strings(value):
        check_text("detail", piece)
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
