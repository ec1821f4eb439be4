"""Trigger parameters of the customer-erasure DAG: JSON schemas and a strict re-check.

The schemas are what Airflow's Params enforce before a run is created (trigger form
and REST API). For ``customer_id`` that is the generic id alphabet of every deployment
(``retention.subject.SAFE_SUBJECT_SCHEMA``): the DAG file cannot know the deployment's
format, which is declared beside the policies (``_subject.yaml``). ``check_erasure_params``
runs inside the first task, with the policy set at hand: it checks the customer id against
the deployment's ``SubjectFormat`` (full match, nothing normalised) and repeats the other
checks with full-string matching, so a value that slipped past (a trailing newline satisfies
a JSON-schema ``$``) never reaches a query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from retention.errors import TerminalError
from retention.subject import SubjectFormat

# ASCII digits only ([0-9], not \d, which admits other scripts' digits); (?!\n) closes the
# trailing-newline gap of "$" in Python's regex, which jsonschema uses.
REQUEST_REF_PATTERN = r"^PR-[0-9]{4}-[0-9]{4,6}(?!\n)$"
REASONS = ("erasure_request", "consent_withdrawn", "objection")

REQUEST_REF_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": REQUEST_REF_PATTERN,
    "minLength": 12,
    "maxLength": 14,
}
REASON_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(REASONS)}
AS_OF_SCHEMA: dict[str, Any] = {"type": ["null", "string"], "format": "date-time"}

_REQUEST_REF = re.compile(r"PR-[0-9]{4}-[0-9]{4,6}")


def check_erasure_params(params: Mapping[str, Any], subject_format: SubjectFormat) -> None:
    """Refuse anything but a customer id of the deployment's format, a request reference, a known
    reason and a boolean (``TerminalError`` naming the parameter and the problem, never the value)."""
    subject_format.check(params.get("customer_id"), "customer_id")
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
