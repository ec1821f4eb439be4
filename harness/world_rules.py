"""The reference world's clock and default retention rules: which row is due when.

``RULES`` mirrors the default policies in include/retention_policies/; the generator places
every anchor at least ``MARGIN`` away from its rule's cutoff at ``NOW``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

COPENHAGEN = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2026, 6, 15, 2, 0, tzinfo=COPENHAGEN)
"""The fixed "now" of the reference world (the nightly run at 02:00 Danish time)."""

MARGIN = timedelta(days=2)
"""Every non-NULL anchor is at least this far from its rule's cutoff, on either side."""

Action = Literal["delete", "anonymise"]
AnchorKind = Literal["timestamp", "financial_year_end"]
_PERIOD = re.compile(r"P(\d+)Y")


def _plus_years(moment: datetime, years: int) -> datetime:
    """Same wall-clock time ``years`` later (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values (as SQLite returns them) are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Rule:
    """A default retention rule: a row of ``table`` is due once ``anchor`` + ``period`` <= now."""

    table: str
    action: Action
    anchor: str
    period: str
    columns: tuple[str, ...] = ()
    """The columns an ``anonymise`` rule blanks."""
    files: tuple[str, ...] = ()
    """Columns naming files (S3 key, archive path) erased together with the row."""
    anchor_kind: AnchorKind = "timestamp"
    subject: str = "customer_id"
    """The column holding the customer a legal hold names."""

    @property
    def years(self) -> int:
        """The period in whole years (the only unit the default rules use)."""
        match = _PERIOD.fullmatch(self.period)
        if match is None:
            raise ValueError(f"{self.table}: period {self.period!r} is not whole years")
        return int(match.group(1))

    def deadline(self, anchor: datetime | date | None) -> datetime | None:
        """The UTC instant from which a row with this anchor value is due; None: never due."""
        if anchor is None:
            return None
        if self.anchor_kind == "financial_year_end":
            year_end = datetime(anchor.year + 1, 1, 1, tzinfo=COPENHAGEN)
            return as_utc(_plus_years(year_end, self.years))
        if not isinstance(anchor, datetime):
            raise TypeError(f"{self.table}.{self.anchor} must be a datetime")
        return as_utc(_plus_years(as_utc(anchor).astimezone(COPENHAGEN), self.years))

    def is_due(self, anchor: datetime | date | None, now: datetime = NOW) -> bool:
        """Whether a row with this anchor value is due at ``now``."""
        deadline = self.deadline(anchor)
        return deadline is not None and deadline <= now

    def cutoff(self, now: datetime = NOW) -> datetime | date:
        """Timestamp rules: rows with anchor <= cutoff are due; financial year: invoice_date < cutoff."""
        local_now = as_utc(now).astimezone(COPENHAGEN)
        if self.anchor_kind == "financial_year_end":
            return date(local_now.year - self.years, 1, 1)
        return as_utc(_plus_years(local_now, -self.years))


RULES: tuple[Rule, ...] = (
    Rule(
        "customers",
        "anonymise",
        "last_activity_at",
        "P5Y",
        columns=("name", "email", "phone", "address"),
        subject="id",
    ),
    Rule("contact_persons", "delete", "last_activity_at", "P3Y"),
    Rule("translation_jobs", "delete", "delivered_at", "P5Y"),
    Rule("documents", "delete", "delivered_at", "P1Y", files=("s3_key", "archive_path")),
    Rule(
        "interpreting_assignments", "anonymise", "assignment_at", "P2Y", columns=("topic", "notes", "venue")
    ),
    Rule("invoices", "delete", "invoice_date", "P5Y", anchor_kind="financial_year_end"),
    Rule("marketing_consents", "delete", "withdrawn_at", "P2Y"),
    Rule("third_party_data", "delete", "received_at", "P1Y"),
    Rule("correspondence", "delete", "sent_at", "P3Y"),
    Rule("privacy_requests", "delete", "completed_at", "P5Y"),
)
"""What is due in the reference world; mirrors the default policies in include/retention_policies/."""

RULE_BY_TABLE: dict[str, Rule] = {rule.table: rule for rule in RULES}
TABLES: tuple[str, ...] = tuple(rule.table for rule in RULES)
"""Every business table, parents before children."""
