"""The personal-data guard: short, printable text without contact data, or a TerminalError.

Used for every free-text field that is stored where personal data must never go (the
ledger's fields, a legal hold's reason). The errors name the field and the problem,
never the value.
"""

from __future__ import annotations

import re

from retention.errors import TerminalError

MAX_TEXT = 1000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 8 to 15 digits, optionally separated by spaces, dots, dashes or parentheses: Danish
# phone numbers ("12 34 56 78", "+45 12345678") and CPR numbers ("010190-1234").
_PHONE = re.compile(r"(?<![0-9A-Za-z])\+?\d(?:[ ().-]{0,2}\d){7,14}(?![0-9A-Za-z])")
# Dates and times (Airflow run ids carry them) would otherwise look like phone numbers.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


def personal_data_kind(text: str) -> str | None:
    """Name the kind of contact data ``text`` seems to contain, or None.

    A cheap last line of defence, not a classifier: it catches e-mail addresses and
    phone- or CPR-number-like digit runs, nothing else (no names, no free text).
    """
    if _EMAIL.search(text):
        return "an e-mail address"
    if _PHONE.search(_TIMESTAMP.sub("/", text)):
        return "a phone-number-like digit sequence"
    return None


def check_text(name: str, value: str | None) -> str | None:
    """Return ``value`` if it is None or short, printable text without contact data; TerminalError otherwise.

    The message names the field and the problem, never the value.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TerminalError(f"{name} must be text")
    if len(value) > MAX_TEXT:
        raise TerminalError(f"{name} is longer than {MAX_TEXT} characters")
    if _CONTROL.search(value):
        raise TerminalError(f"{name} contains a control character")
    kind = personal_data_kind(value)
    if kind:
        raise TerminalError(f"{name} looks like it contains {kind}; personal data never goes in the ledger")
    return value
