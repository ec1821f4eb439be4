"""Keyed pseudonyms: a stable stand-in for an identifier that cannot be reversed without the key.

``psn:`` followed by the first 32 hex digits of HMAC-SHA256(key, namespace NUL value).
The same key, namespace and value always give the same pseudonym, so the ledger can
say "this subject's data" twice without ever naming the subject. The key is the key of one
period (``retention.keyring``: a year's random key, unwrapped with the master key of an Airflow
Connection), never from the repository; once that period's key is destroyed, no pseudonym made
with it can be linked to its value again, not even by pseudonymising every possible value.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from retention.errors import TerminalError

PSEUDONYM_PREFIX = "psn:"
MIN_KEY_BYTES = 16
_PSEUDONYM = re.compile(r"psn:[0-9a-f]{32}")


def pseudonymise(key: bytes, value: str, *, namespace: str = "subject") -> str:
    """Return the keyed pseudonym of ``value`` in ``namespace``; refuse a missing or short key."""
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise TerminalError(f"pseudonym key must be at least {MIN_KEY_BYTES} bytes")
    if not namespace or "\x00" in namespace:
        # the NUL separates namespace from value; one inside the namespace would make pairs collide
        raise TerminalError("pseudonym namespace must be non-empty and contain no NUL character")
    message = f"{namespace}\x00{value}".encode()
    return PSEUDONYM_PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def is_pseudonym(text: str) -> bool:
    """Whether ``text`` has exactly the form ``pseudonymise`` produces."""
    return _PSEUDONYM.fullmatch(text) is not None
