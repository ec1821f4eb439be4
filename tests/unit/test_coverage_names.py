"""The coverage report's patterns (names and values), what the policies cover, and the tree walk on a
local directory: no services needed."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.coverage import SYSTEM_TABLES, Finding, cover_of, database_coverage
from retention.coverage_patterns import (
    ADDRESS,
    BIRTH_DATE,
    CPR,
    EMAIL,
    NAME,
    PHONE,
    column_name_kind,
    looks_like_cpr,
    table_name_looks_personal,
    value_patterns,
    words,
)
from retention.coverage_stores import fixed_part, policy_buckets, roots, tree_coverage
from retention.holds import HoldRegistry
from retention.intents import IntentItems
from retention.keeps import KeptRecords
from retention.keyring import Keyring
from retention.ledger import Ledger
from retention.locks import Leases
from retention.policy import load_policies
from retention.tombstones import Tombstones

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("name", NAME),
        ("first_name", NAME),
        ("lastName", NAME),
        ("interpreter_name", NAME),
        ("navn", NAME),
        ("fornavn", NAME),
        ("efternavn", NAME),
        ("kundenavn", NAME),
        ("email", EMAIL),
        ("e_mail", EMAIL),
        ("E-mail", EMAIL),
        ("mail", EMAIL),
        ("kundeEmail", EMAIL),
        ("emailadresse", EMAIL),
        ("email_address", EMAIL),
        ("phone", PHONE),
        ("phone_number", PHONE),
        ("telefon", PHONE),
        ("telefonnummer", PHONE),
        ("tlf", PHONE),
        ("tlf_nr", PHONE),
        ("mobil", PHONE),
        ("mobilnr", PHONE),
        ("address", ADDRESS),
        ("billing_address", ADDRESS),
        ("adresse", ADDRESS),
        ("vej", ADDRESS),
        ("vejnavn", ADDRESS),
        ("postnr", ADDRESS),
        ("zip_code", ADDRESS),
        ("cpr", CPR),
        ("cpr_nr", CPR),
        ("personnummer", CPR),
        ("fødselsdato", BIRTH_DATE),
        ("foedselsdato", BIRTH_DATE),
        ("date_of_birth", BIRTH_DATE),
        ("birth_date", BIRTH_DATE),
    ],
)
def test_personal_column_names_in_english_and_danish(column: str, kind: str) -> None:
    assert column_name_kind(column) == kind


@pytest.mark.parametrize(
    "column",
    [
        "id",
        "customer_id",
        "order_no",
        "customer_no",
        "invoice_no",
        "s3_key",
        "filename",
        "filnavn",
        "hostname",
        "bucket_name",
        "company_name",
        "firmanavn",
        "virksomhedsnavn",
        "email_status",
        "email_verified",
        "address_id",
        "phone_type",
        "created_at",
        "amount_dkk",
        "content_sha256",
    ],
)
def test_names_of_things_and_about_values_are_not_personal(column: str) -> None:
    assert column_name_kind(column) is None


def test_a_column_type_limits_what_its_name_can_mean() -> None:
    assert column_name_kind("phone", allowed=(PHONE, CPR)) == PHONE  # a number column
    assert column_name_kind("email", allowed=(PHONE, CPR)) is None  # an integer "email" is a key
    assert column_name_kind("fødselsdato", allowed=(BIRTH_DATE,)) == BIRTH_DATE  # a date column
    assert column_name_kind("name", allowed=()) is None  # a boolean


def test_words_split_snake_camel_and_danish_letters() -> None:
    assert words("kundeEmail_2") == ["kunde", "email"]
    assert words("Fødselsdato") == ["fødselsdato"]


def test_table_names_that_say_they_hold_people() -> None:
    for table in ("newsletter_signups", "customers", "kunder", "medarbejdere", "contact_persons"):
        assert table_name_looks_personal(table), table
    for table in ("orders", "documents", "invoices", "translation_jobs", "retention_ledger"):
        assert not table_name_looks_personal(table), table


@pytest.mark.parametrize(
    ("value", "patterns"),
    [
        ("jens.hansen@example.dk", ["e-mail"]),
        ("Skriv til jens@firma.dk i dag", ["e-mail"]),
        ("+45 22 33 44 55", ["phone"]),
        ("+4522334455", ["phone"]),
        ("0045 2233 4455", ["phone"]),
        ("22 33 44 55", ["phone"]),
        ("2233 4455", ["phone"]),
        ("22334455", ["phone"]),
        ("Ring på tlf. 22334455", ["phone"]),
        ("010190-1234", ["CPR"]),
        ("CPR 290200-4321 oplyst", ["CPR"]),
        ("0101901234", ["CPR"]),
        ("kontakt jens@example.dk / +45 22 33 44 55", ["e-mail", "phone"]),
    ],
)
def test_personal_values(value: str, patterns: list[str]) -> None:
    assert value_patterns(value) == patterns


@pytest.mark.parametrize(
    "value",
    [
        "ORD-2024-00017",  # order numbers
        "AK-000042",
        "INV-12345678",
        "10023456",
        "20240117",  # eight digits that read as a date
        "ORD-010190-1234",  # a CPR-shaped part of a longer reference
        "12345678",  # Danish numbers do not start with 1
        "ordre 22334455",  # eight digits nobody said were a phone number, in text
        "2024-01-17T10:00:00+00:00",
        "1234.50 DKK",
        "[slettet]",
        "psn:3f2a9c",
    ],
)
def test_order_numbers_dates_and_anonymised_values_are_not_personal(value: str) -> None:
    assert value_patterns(value) == []


def test_a_cpr_number_needs_a_real_day_and_month() -> None:
    assert looks_like_cpr("311299-1234")  # 31 December
    assert looks_like_cpr("290296-1234")  # 29 February of a leap year
    assert not looks_like_cpr("290297-1234")  # no 29 February in 1997 or 2097
    assert not looks_like_cpr("320190-1234")
    assert not looks_like_cpr("011390-1234")
    assert not looks_like_cpr("000190-1234")


def test_the_reference_policies_cover_their_columns() -> None:
    cover = cover_of(load_policies(POLICY_DIR))
    assert {"documents", "invoices", "contact_persons", "access_reports"} <= cover.deleted
    assert {"customers", "interpreting_assignments"} <= cover.anonymised
    assert {"name", "email", "phone", "address", "customer_no"} <= cover.columns["customers"]
    assert {"s3_key", "archive_path", "delivered_at"} <= cover.columns["documents"]
    assert "interpreter_name" not in cover.columns["interpreting_assignments"]


def test_system_tables_are_the_default_names_of_the_systems_own_tables() -> None:
    defaults = {
        inspect.signature(cls.__init__).parameters["table_name"].default
        for cls in (Ledger, HoldRegistry, KeptRecords, Tombstones, Keyring, Leases, IntentItems)
    }
    assert set(SYSTEM_TABLES) == defaults | {"retention_ledger_head"}


def test_fixed_parts_and_roots_of_the_reference_policies() -> None:
    assert fixed_part("documents/{customer_id}/{id}.pdf") == "documents/"
    assert fixed_part("documents/doc-{id}.pdf") == "documents/"
    assert fixed_part("{s3_key}") == ""
    policies = load_policies(POLICY_DIR)
    assert policy_buckets(policies) == ["alleskar-documents", "alleskar-privacy-receipts"]
    assert roots(policies, "s3", "alleskar-privacy-receipts") == ["access-reports/", "receipts/"]
    assert roots(policies, "s3", "alleskar-documents") == [""]
    assert roots(policies, "s3", "another-bucket") == []


def _archive_policies(tmp_path: Path) -> Path:
    """The reference policies with the archive's documents under ``jobs/`` (a root with a fixed part)."""
    folder = tmp_path / "policies"
    folder.mkdir()
    for f in POLICY_DIR.glob("*.yaml"):
        text = f.read_text(encoding="utf-8").replace('path: "{archive_path}"', 'path: "jobs/{archive_path}"')
        (folder / f.name).write_text(text, encoding="utf-8")
    return folder


def _write(root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")


def test_a_local_tree_reports_directories_no_template_covers(tmp_path: Path) -> None:
    policies = load_policies(_archive_policies(tmp_path))
    root = tmp_path / "archive"
    outside = tmp_path / "outside"
    for rel in (
        "jobs/1/a.pdf",
        "jobs/2/b.pdf",
        "private-copies/x.pdf",
        "private-copies/2024/y.pdf",
        "loose.txt",
    ):
        _write(root, rel)
    for i in range(5):
        _write(outside, f"secret-{i}.txt")
    os.symlink(outside, root / "private-copies" / "link")  # counted as a file, never followed
    _write(root, "jens@example.dk/cv.pdf")

    found = tree_coverage(None, str(root), policies, store="sftp")

    assert found == [
        Finding("directory", "sftp:./", "1 file(s) directly in it, outside every location's root"),
        Finding(
            "directory", "sftp:private-copies/", "no location's template renders anything here; 3 file(s)"
        ),
        Finding(
            "directory",
            "sftp:./*",
            "1 directory name(s) that look like personal data (not shown); "
            "no location's template renders anything here; 1 file(s)",
        ),
    ]
    bounded = tree_coverage(None, str(root), policies, store="sftp", max_entries=3)
    assert (
        Finding("directory", "sftp:./", "listing stopped after 3 entries: the rest was not checked")
        in bounded
    )


def test_counts_are_bounded(tmp_path: Path) -> None:
    for i in range(5):
        _write(tmp_path, f"exports/{i}.csv")
    [finding] = tree_coverage(
        None, str(tmp_path), load_policies(POLICY_DIR), store="filesystem", max_entries=2
    )
    assert finding.place == "filesystem:exports/"
    assert finding.why.endswith("at least 2 file(s) (counting stopped after 2 entries)")


def test_a_template_without_a_fixed_part_covers_the_whole_tree(tmp_path: Path) -> None:
    _write(tmp_path / "archive", "anything/at/all.pdf")
    assert tree_coverage(None, str(tmp_path / "archive"), load_policies(POLICY_DIR), store="sftp") == []
    # no filesystem location in the reference policies: the whole share is uncovered
    [finding] = tree_coverage(None, str(tmp_path / "archive"), load_policies(POLICY_DIR), store="filesystem")
    assert finding.place == "filesystem:anything/"


def test_untyped_sqlite_columns_are_sampled_as_text(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE imported (id INTEGER PRIMARY KEY, c1, c2 TEXT, flag BOOLEAN)"))
        conn.execute(
            sa.text(
                "INSERT INTO imported VALUES (1, 'a@example.dk', 'ORD-2024-00017', 1), (2, 22334455, 'x', 0)"
            )
        )
    found = database_coverage(engine, load_policies(POLICY_DIR), sample=10)
    engine.dispose()
    assert found == [
        Finding("table", "imported", "no policy names it; 1 of its 4 columns look personal"),
        Finding("column", "imported.c1", "sampled values: e-mail 1 of 2, phone 1 of 2"),
    ]
