"""The deployment's customer (subject) id format and the identities a customer can be found by.

Declared beside the policies in ``_subject.yaml`` (files starting with ``_`` are not
categories). Without the file, the default is today's format: digits only, no leading zero,
at most 12 digits. Example::

    pattern: "K-[0-9]{5}"
    max_length: 7
    description: "the customer number, K- and five digits"
    example: "K-00042"
    identities:
      - name: email
        description: "the customer's e-mail address"
        table: customers
        column: email
        subject: customer_no
        normalise: casefold

``SubjectFormat.check`` is the one test of a subject id wherever one enters (an erasure
request, a legal hold): it full-matches the pattern and never normalises, because every store
compares subjects as this exact text. Its errors say what is wrong, never the value.

Before the deployment's pattern is applied, a value must pass ``SAFE_SUBJECT_SCHEMA``: a strict,
generic alphabet (ASCII letters, digits, ``.``, ``_``, ``-``; 1-64 characters, starting with a
letter or digit) that the trigger form and the REST API enforce before a run exists, so that a
value which can never be an id (an e-mail, a name, a path) is refused without being stored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from retention.errors import PolicyError, TerminalError
from retention.locations import Identifier, Strict

SUBJECT_FILE = "_subject.yaml"

SAFE_SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(?!\n)$"
"""The generic alphabet of any subject id, as a JSON-schema pattern (``(?!\\n)`` closes ``$``'s gap)."""
SAFE_SUBJECT_MAX = 64
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SAFE_CHARS = re.compile(r"[A-Za-z0-9._-]+")

SAFE_SUBJECT_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": SAFE_SUBJECT_PATTERN,
    "minLength": 1,
    "maxLength": SAFE_SUBJECT_MAX,
}
"""What Airflow's Params (trigger form and REST API) accept as a customer id in any deployment."""


def _alphabet_problem(value: str) -> str | None:
    """What puts ``value`` outside the generic id alphabet (length aside), or None."""
    if not value:
        return "it is empty"
    if value != value.strip():
        return "it has surrounding whitespace"
    if not value.isascii():
        if all(c.isdigit() for c in value):
            return "it uses digits other than 0-9 (another script, full-width or superscript digits)"
        return "it contains characters outside ASCII"
    if not value[0].isalnum():
        return "it starts with a character other than a letter or digit"
    if not _SAFE_CHARS.fullmatch(value):
        return "it contains a character other than ASCII letters, digits, '.', '_' and '-'"
    return None


_INLINE_FLAG = re.compile(r"\(\?[aiLmsux-]+[:)]")


def _compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"not a valid regular expression: {e}") from None


class IdentityType(Strict):
    """A way to find a customer's internal id: a column of a table that also holds the subject."""

    name: Identifier
    """What ops choose in the "Find a customer" page, e.g. ``email``."""
    description: str = Field(min_length=3)
    table: Identifier
    column: Identifier
    """The column holding the identity value (e.g. the e-mail address)."""
    subject: Identifier
    """The column of the same table holding the internal customer id."""
    format: str | None = None
    """A full-match regex the value must satisfy after normalising (None: any non-empty text)."""
    normalise: Literal["none", "strip", "casefold", "digits"] = "none"
    """``strip``: surrounding whitespace; ``casefold``: stripped and lower-cased (compared with
    the column's SQL ``lower()``); ``digits``: only the ASCII digits kept (phone numbers)."""
    max_length: int = Field(default=320, ge=1, le=1000)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        return None if v is None else _compiled(v).pattern

    def normalised(self, value: str) -> str:
        """The value as it is compared with the column (see ``normalise``)."""
        if self.normalise == "strip":
            return value.strip()
        if self.normalise == "casefold":
            # lower(), not casefold(): the database compares with SQL's lower() ("ß" stays "ß").
            return value.strip().lower()
        if self.normalise == "digits":
            return "".join(c for c in value if c in "0123456789")
        return value

    def check(self, value: object) -> str:
        """The normalised value if acceptable for this identity; else TerminalError (never with the value)."""
        if not isinstance(value, str) or not value:
            raise TerminalError(f"{self.name}: a non-empty text value is required")
        if len(value) > self.max_length:
            raise TerminalError(f"{self.name}: longer than {self.max_length} characters")
        norm = self.normalised(value)
        if not norm:
            raise TerminalError(f"{self.name}: nothing is left after normalising ({self.normalise})")
        if self.format is not None and not re.fullmatch(self.format, norm):
            raise TerminalError(f"{self.name}: not in the declared format ({self.description})")
        return norm


class SubjectFormat(Strict):
    """The deployment's customer-id format (``_subject.yaml``)."""

    pattern: str
    """A full-match regex (no anchors needed): what an internal customer id looks like."""
    max_length: int = Field(ge=1, le=SAFE_SUBJECT_MAX)
    description: str = Field(min_length=3)
    """Shown in errors and forms: what the id is, in words ("digits only, no leading zero")."""
    example: str
    """An id of the right form (not a real customer's): checked against the pattern."""
    identities: list[IdentityType] = Field(default_factory=list)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        compiled = _compiled(v)
        if compiled.fullmatch(""):
            raise ValueError("the pattern must not match the empty string")
        if compiled.flags & (re.IGNORECASE | re.VERBOSE) or _INLINE_FLAG.search(v):
            # Two spellings of one id would pass, and the stores compare ids as exact text.
            raise ValueError("the pattern must not use inline flags such as (?i)")
        return v

    @field_validator("example")
    @classmethod
    def _example(cls, v: str, info: ValidationInfo) -> str:
        # A field validator (not a model validator) so that the error names the field. The
        # fields before it are in ``info.data`` only if they were valid.
        pattern, max_length = info.data.get("pattern"), info.data.get("max_length")
        if pattern is not None and not re.fullmatch(pattern, v):
            raise ValueError("example does not match pattern")
        if max_length is not None and len(v) > max_length:
            raise ValueError("example is longer than max_length")
        if not _SAFE.fullmatch(v):
            raise ValueError(
                "example uses characters outside the generic id alphabet "
                "(ASCII letters, digits, '.', '_', '-'; at most 64, starting with a letter or digit)"
            )
        return v

    @field_validator("identities")
    @classmethod
    def _identities(cls, v: list[IdentityType]) -> list[IdentityType]:
        names = [i.name for i in v]
        if len(names) != len(set(names)):
            raise ValueError("two identity types have the same name")
        return v

    def check(self, value: object, what: str = "customer id") -> str:
        """``value`` if it is exactly an id of this format; TerminalError naming ``what`` otherwise.

        Nothing is normalised (no stripping, no ``int()``, which reads "042" and Arabic-Indic
        "٤٢" as 42): every store compares subjects as this exact text.
        """
        if (
            isinstance(value, str)
            and len(value) <= self.max_length
            and _SAFE.fullmatch(value)
            and re.fullmatch(self.pattern, value)
        ):
            return value
        raise TerminalError(f"{what} must be {self.description}: {self.problem(value)}")

    def problem(self, value: object) -> str:
        """What keeps ``value`` from being an id of this format, in words that do not repeat it."""
        if value is None:
            return "it is missing"
        if not isinstance(value, str):
            return f"it is {type(value).__name__}, not text"
        outside = _alphabet_problem(value)
        if outside is not None:
            return outside
        if len(value) > self.max_length:
            return f"it is longer than {self.max_length} characters"
        if value.isdigit() and value.startswith("0"):
            unpadded = value.lstrip("0")
            if not unpadded:
                return "it is zero"
            if re.fullmatch(self.pattern, unpadded):
                return "it has a leading zero"
        if any(re.fullmatch(self.pattern, v) for v in (value.upper(), value.lower()) if v != value):
            return "it has letters in the wrong case"
        return f"it does not match the format (e.g. {self.example})"

    def identity(self, name: str) -> IdentityType:
        """The identity type called ``name``; TerminalError if there is none."""
        for identity in self.identities:
            if identity.name == name:
                return identity
        raise TerminalError(f"no identity type {name!r} is declared in {SUBJECT_FILE}")


DEFAULT_SUBJECT = SubjectFormat(
    pattern="[1-9][0-9]{0,11}",
    max_length=12,
    description="the internal customer id (digits only, no leading zero)",
    example="42",
)


def subject_from(data: object) -> SubjectFormat:
    """The format a parsed ``_subject.yaml`` declares; PolicyError naming the file and the field."""
    if not isinstance(data, dict):
        raise PolicyError(SUBJECT_FILE, "<document>", "expected a mapping (pattern, max_length, ...)")
    try:
        return SubjectFormat.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]]
        field = "".join(parts).lstrip(".") or "<document>"
        raise PolicyError(SUBJECT_FILE, field, err["msg"].removeprefix("Value error, ")) from None
