"""Trigger parameters of the customer-erasure DAG: JSON schemas and a strict re-check.

The schemas are what Airflow's Params enforce before a run is created (trigger form
and REST API). ``check_erasure_params`` repeats the check with full-string matching
inside the first task, so a value that slipped past (a trailing newline satisfies a
JSON-schema ``$``) never reaches a query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from retention.errors import TerminalError

# ASCII digits only ([0-9], not \d, which admits other scripts' digits); (?!\n) closes the
# trailing-newline gap of "$" in Python's regex, which jsonschema uses.
CUSTOMER_ID_PATTERN = r"^[1-9][0-9]{0,11}(?!\n)$"
REQUEST_REF_PATTERN = r"^PR-[0-9]{4}-[0-9]{4,6}(?!\n)$"
REASONS = ("erasure_request", "consent_withdrawn", "objection")

CUSTOMER_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": CUSTOMER_ID_PATTERN,
    "minLength": 1,
    "maxLength": 12,
}
REQUEST_REF_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": REQUEST_REF_PATTERN,
    "minLength": 12,
    "maxLength": 14,
}
REASON_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(REASONS)}
AS_OF_SCHEMA: dict[str, Any] = {"type": ["null", "string"], "format": "date-time"}

_CUSTOMER_ID = re.compile(r"[1-9][0-9]{0,11}")
CUSTOMER_ID_FORMAT = "the internal customer id (digits only, no leading zero)"
_REQUEST_REF = re.compile(r"PR-[0-9]{4}-[0-9]{4,6}")


def canonical_subject(value: object, what: str = "customer id") -> str:
    """``value`` if it is exactly a canonical customer id; TerminalError otherwise.

    The one test of a subject (customer) id, wherever one enters: an erasure request's
    ``customer_id``, a legal hold's subject. Nothing is normalised (no stripping, no
    ``int()``, which reads "042" and Arabic-Indic "٤٢" as 42): every store compares subjects
    as this exact text (the database as the integer it spells), so a value in any other form
    would be matched in one store and not in another. The error names ``what`` and the
    problem, never the value (it may be personal data).
    """
    if isinstance(value, str) and _CUSTOMER_ID.fullmatch(value):
        return value
    raise TerminalError(f"{what} must be {CUSTOMER_ID_FORMAT}: {_subject_problem(value)}")


def _subject_problem(value: object) -> str:
    """What keeps ``value`` from being a canonical customer id, in words that do not repeat it."""
    if value is None:
        return "it is missing"
    if not isinstance(value, str):
        return f"it is {type(value).__name__}, not text"
    if not value:
        return "it is empty"
    if value != value.strip():
        return "it has surrounding whitespace"
    if all(c.isdigit() for c in value):
        if not value.isascii():
            return "it uses digits other than 0-9 (another script, full-width or superscript digits)"
        if value.startswith("0"):
            return "it has a leading zero" if len(value) > 1 else "it is zero"
        return "it has more than 12 digits"
    return "it contains a character other than the digits 0-9"


def check_erasure_params(params: Mapping[str, Any]) -> None:
    """Refuse anything but an internal customer id, a request reference, a known reason and a boolean."""
    canonical_subject(params.get("customer_id"), "customer_id")
    ref = params.get("request_ref")
    if not isinstance(ref, str) or not _REQUEST_REF.fullmatch(ref):
        raise TerminalError("request_ref must look like PR-2026-00042")
    if params.get("reason") not in REASONS:
        raise TerminalError(f"reason must be one of {', '.join(REASONS)}")
    if not isinstance(params.get("dry_run"), bool):
        raise TerminalError("dry_run must be true or false")


def parse_as_of(as_of: str | None, run_after: datetime) -> datetime:
    """The run's business clock: ``as_of`` if given (never in the future), else the run's time, in UTC."""
    if not as_of:
        return run_after.astimezone(UTC)
    try:
        value = datetime.fromisoformat(as_of)
    except ValueError:
        raise TerminalError("as_of is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise TerminalError("as_of needs a time zone (e.g. 2026-06-15T02:00:00+02:00)")
    if value > datetime.now(UTC):
        # A clock in the future would make data due early: refuse.
        raise TerminalError("as_of lies in the future; only the present or the past may be evaluated")
    return value.astimezone(UTC)
