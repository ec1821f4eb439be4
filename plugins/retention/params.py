"""Trigger parameters of the customer-erasure DAG: JSON schemas and a strict re-check.

The schemas are what Airflow's Params enforce before a run is created (trigger form
and REST API). ``check_erasure_params`` repeats the check with full-string matching
inside the first task, so a value that slipped past (a trailing newline satisfies a
JSON-schema ``$``) never reaches a query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
_REQUEST_REF = re.compile(r"PR-[0-9]{4}-[0-9]{4,6}")


def check_erasure_params(params: Mapping[str, Any]) -> None:
    """Refuse anything but an internal customer id, a request reference, a known reason and a boolean."""
    customer = params.get("customer_id")
    if not isinstance(customer, str) or not _CUSTOMER_ID.fullmatch(customer):
        raise TerminalError("customer_id must be the internal customer id (digits only, no leading zero)")
    ref = params.get("request_ref")
    if not isinstance(ref, str) or not _REQUEST_REF.fullmatch(ref):
        raise TerminalError("request_ref must look like PR-2026-00042")
    if params.get("reason") not in REASONS:
        raise TerminalError(f"reason must be one of {', '.join(REASONS)}")
    if not isinstance(params.get("dry_run"), bool):
        raise TerminalError("dry_run must be true or false")
