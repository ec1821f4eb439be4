"""The reference world's business schema: Alles-klar's tables, as the policies name them.

``metadata`` holds the DDL (PostgreSQL and SQLite); ``create_schema`` creates what is missing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
)

metadata = MetaData()
"""The agency's business schema; policies are written against these exact names."""

_ID = BigInteger().with_variant(Integer(), "sqlite")


def _pk() -> Column[Any]:
    return Column("id", _ID, primary_key=True, autoincrement=False)


def _customer_fk() -> Column[Any]:
    return Column("customer_id", _ID, ForeignKey("customers.id"), nullable=False, index=True)


def _ts(name: str, *, nullable: bool = False, index: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable, index=index)


def _text(name: str, *, nullable: bool = False, unique: bool = False, index: bool = False) -> Column[Any]:
    return Column(name, Text(), nullable=nullable, unique=unique, index=index)


Table(
    "customers",
    metadata,
    _pk(),
    _text("customer_no", unique=True),
    _text("name"),
    _text("email", nullable=True),
    _text("phone", nullable=True),
    _text("address"),
    _ts("created_at"),
    _ts("last_activity_at", index=True),
)
Table(
    "contact_persons",
    metadata,
    _pk(),
    _customer_fk(),
    _text("name"),
    _text("email"),
    _text("phone"),
    _text("role"),
    _ts("created_at"),
    _ts("last_activity_at", index=True),
)
Table(
    "translation_jobs",
    metadata,
    _pk(),
    _customer_fk(),
    _text("title"),
    _text("source_lang"),
    _text("target_lang"),
    _ts("ordered_at"),
    _ts("delivered_at", nullable=True, index=True),
    _text("notes"),
)
Table(
    "documents",
    metadata,
    _pk(),
    Column("job_id", _ID, ForeignKey("translation_jobs.id"), nullable=False, index=True),
    _customer_fk(),
    _text("filename"),
    # Indexed: the engine looks up which records name a key or path before erasing it.
    _text("s3_key", index=True),
    _text("archive_path", nullable=True, index=True),
    _text("content_sha256"),
    _ts("created_at"),
    _ts("delivered_at", nullable=True, index=True),
)
Table(
    "interpreting_assignments",
    metadata,
    _pk(),
    _customer_fk(),
    _text("interpreter_name"),
    _text("venue", nullable=True),
    _text("topic"),
    _ts("assignment_at", index=True),
    _text("notes", nullable=True),
)
Table(
    "invoices",
    metadata,
    _pk(),
    _customer_fk(),
    _text("invoice_no", unique=True),
    Column("invoice_date", Date(), nullable=False, index=True),
    Column("amount_dkk", Numeric(12, 2), nullable=False),
    _text("billing_name"),
    _text("billing_address"),
)
Table(
    "marketing_consents",
    metadata,
    _pk(),
    _customer_fk(),
    _text("email"),
    _text("channel"),
    _ts("given_at"),
    _ts("withdrawn_at", nullable=True, index=True),
)
Table(
    "third_party_data",
    metadata,
    _pk(),
    _customer_fk(),
    _text("source"),
    _text("description"),
    _ts("received_at", index=True),
    # Indexed: the daily deadline watch reads the open items (not yet notified) only.
    _ts("customer_notified_at", nullable=True, index=True),
)
Table(
    "correspondence",
    metadata,
    _pk(),
    _customer_fk(),
    _text("subject"),
    _text("body"),
    _ts("sent_at", index=True),
    _text("direction"),
)
Table(
    "privacy_requests",
    metadata,
    _pk(),
    _customer_fk(),
    _text("request_ref", unique=True),
    _text("kind"),
    _ts("received_at"),
    _ts("completed_at", nullable=True, index=True),
    # GDPR Art. 12(3): when the customer was told the answer takes up to two further months, and why.
    _ts("extended_at", nullable=True),
    _text("extension_reason", nullable=True),
)

# Written by the retention system itself, not by the business (the world generates no rows here):
# one row per access report (GDPR Art. 15) made for a customer, with the random id that names its
# place in the receipts bucket (access-reports/<report_id>/). Policy access_reports erases report
# and row 30 days after it was made available.
Table(
    "access_reports",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("customer_id", _ID, nullable=False, index=True),
    _text("request_ref"),
    _ts("made_available_at", index=True),
    _text("report_id", unique=True),
)

# One row per erasure receipt (dry runs and replays after a restore included), written before the
# receipt's objects (receipts/<request_ref>/<run>.json and .md). Policy erasure_receipts erases
# receipts and rows five years after the receipt; a later erasure request of the customer keeps them.
Table(
    "erasure_receipts",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("customer_id", _ID, nullable=False, index=True),
    _text("request_ref", index=True),
    _text("run_id"),
    _ts("made_at", index=True),
)

SYSTEM_TABLES: tuple[str, ...] = ("access_reports", "erasure_receipts")
"""Tables of ``metadata`` that the retention system writes, not the business: the world has no rows there."""


def create_schema(engine: Engine) -> None:
    """Create the business tables and their indexes where they do not exist yet."""
    metadata.create_all(engine)
