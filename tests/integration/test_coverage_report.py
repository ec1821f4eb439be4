"""The coverage report (issue #17) on real PostgreSQL, the moto S3 server and OpenSSH: a new table
with an e-mail column, an S3 prefix and an archive directory no policy names all appear; the
policies' own data and the system's own tables do not; no sampled value is ever printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from harness.world_schema import create_schema
from retention.cli import main
from retention.coverage import Finding, database_coverage
from retention.coverage_stores import s3_coverage, tree_coverage
from retention.holds import HoldRegistry
from retention.keeps import KeptRecords
from retention.ledger import Ledger
from retention.policy import load_policies

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"
SIGNUPS = ["anna.jensen@example.dk", "bo+news@firma.dk", "carl@example.com"]
NOTES = ["Ring til Dorte på tlf. 22334455", "CPR 010190-1234 oplyst ved telefon", "ingen bemærkninger"]
ORDERS = ["ORD-2024-00017", "ORD-2024-00018", "20240117"]
ACCEPTED = "interpreting_assignments.interpreter_name"
"""The one finding on the reference schema: the interpreter's name, kept when the row is anonymised."""


def _reference_db(engine: Engine) -> None:
    """The reference schema with the system's own tables and a few customers' rows in it."""
    create_schema(engine)
    Ledger(engine).ensure_schema()
    HoldRegistry(engine).ensure_schema()
    KeptRecords(engine).ensure_schema()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers VALUES (1, 'AK-000001', 'Eva Holm', 'eva@example.dk', "
                "'+45 22 33 44 55', 'Vestergade 1, 8000 Aarhus', now(), now())"
            )
        )


def _new_tables(engine: Engine) -> None:
    """What a new feature added without a policy: a sign-up list, imported notes, an order table."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE newsletter_signups (id bigint PRIMARY KEY, email text, created_at timestamptz)"
            )
        )
        conn.execute(sa.text("CREATE TABLE imported_notes (id bigint PRIMARY KEY, txt text)"))
        conn.execute(
            sa.text("CREATE TABLE shop_orders (id bigint PRIMARY KEY, order_ref text, total numeric)")
        )
        for i, (email, note, ref) in enumerate(zip(SIGNUPS, NOTES, ORDERS, strict=True)):
            params = {"i": i, "email": email, "note": note, "ref": ref}
            conn.execute(sa.text("INSERT INTO newsletter_signups VALUES (:i, :email, now())"), params)
            conn.execute(sa.text("INSERT INTO imported_notes VALUES (:i, :note)"), params)
            conn.execute(sa.text("INSERT INTO shop_orders VALUES (:i, :ref, 100)"), params)


def _no_value_in(text: str) -> None:
    for value in [*SIGNUPS, *NOTES, "22334455", "010190-1234", "eva@example.dk", "Eva Holm"]:
        assert value not in text


def test_a_new_table_with_an_email_column_is_found_by_name_and_by_value(fresh_db: Engine) -> None:
    _reference_db(fresh_db)
    _new_tables(fresh_db)

    found = database_coverage(fresh_db, load_policies(POLICY_DIR))

    assert found == [
        Finding("table", "imported_notes", "no policy names it; 1 of its 2 columns look personal"),
        Finding("column", "imported_notes.txt", "sampled values: phone 1 of 3, CPR 1 of 3"),
        Finding(
            "column",
            ACCEPTED,
            "its name looks like a person's name; table interpreting_assignments is anonymised, not deleted, "
            "and no policy's fields name this column",
        ),
        Finding(
            "table",
            "newsletter_signups",
            "no policy names it; its name says it holds people; 1 of its 3 columns look personal",
        ),
        Finding(
            "column",
            "newsletter_signups.email",
            "its name looks like an e-mail address; sampled values: e-mail 3 of 3",
        ),
    ]
    # shop_orders (order numbers), the policies' tables and the system's own are not reported
    _no_value_in(repr(found))
    assert len(database_coverage(fresh_db, load_policies(POLICY_DIR), sample=2, skip=[ACCEPTED])) == 4


def test_the_validate_command_prints_the_report_and_exits_3(
    fresh_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _reference_db(fresh_db)
    url = fresh_db.url.render_as_string(hide_password=False)
    command = ["validate", str(POLICY_DIR), "--database-url", url, "--coverage"]

    assert main([*command, "--coverage-skip", ACCEPTED]) == 0
    assert "coverage: nothing personal-looking outside the policies" in capsys.readouterr().out

    _new_tables(fresh_db)
    assert main(command) == 3
    printed = capsys.readouterr()
    lines = [line for line in printed.out.splitlines() if line.startswith("coverage")]
    assert lines[:5] == [
        "coverage uncovered table imported_notes: no policy names it; 1 of its 2 columns look personal",
        "coverage uncovered column imported_notes.txt: sampled values: phone 1 of 3, CPR 1 of 3",
        f"coverage uncovered column {ACCEPTED}: its name looks like a person's name; table "
        "interpreting_assignments is anonymised, not deleted, and no policy's fields name this column",
        "coverage uncovered table newsletter_signups: no policy names it; its name says it holds people; "
        "1 of its 3 columns look personal",
        "coverage uncovered column newsletter_signups.email: its name looks like an e-mail address; "
        "sampled values: e-mail 3 of 3",
    ]
    assert lines[5].startswith("coverage: 5 finding(s) no policy covers")
    _no_value_in(printed.out + printed.err)

    assert main([*command, "--coverage-skip", "newsletter_signups", "--coverage-skip", "imported_notes"]) == 3
    assert "newsletter_signups" not in capsys.readouterr().out
    assert main(["validate", str(POLICY_DIR), "--coverage"]) == 2
    assert "--coverage needs --database-url" in capsys.readouterr().err


def _put(client: Any, bucket: str, *keys: str) -> None:
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")


def test_an_s3_prefix_no_policy_names_is_reported_with_its_count(s3_client: Any, s3_bucket: str) -> None:
    policies = load_policies(POLICY_DIR)
    # the receipts bucket: the access reports' and the erasure receipts' prefixes (policies of their own),
    # and what a new feature wrote beside them
    _put(s3_client, s3_bucket, "access-reports/r1/report.json", "access-reports/r2/documents/a.pdf")
    _put(s3_client, s3_bucket, "receipts/PR-1/run.json", "receipts/PR-1/run.md")
    _put(s3_client, s3_bucket, "exports/2024/customers.csv", "exports/2024/more.csv", "exports/all.csv")
    _put(s3_client, s3_bucket, "old-exports/gone.csv", "jens@example.dk/cv.pdf", "stray.csv")
    s3_client.delete_object(Bucket=s3_bucket, Key="old-exports/gone.csv")  # its old version stays

    found = s3_coverage(s3_client, s3_bucket, "alleskar-privacy-receipts", policies, skip=["receipts"])

    assert found == [
        Finding("prefix", f"{s3_bucket}/", "1 object(s) directly in it, outside every location's root"),
        Finding(
            "prefix", f"{s3_bucket}/exports/", "no location's template renders anything here; 3 object(s)"
        ),
        Finding(
            "prefix", f"{s3_bucket}/old-exports/", "no location's template renders anything here; 1 object(s)"
        ),
        Finding(
            "prefix",
            f"{s3_bucket}/*",
            "1 prefix name(s) that look like personal data (not shown); "
            "no location's template renders anything here; 1 object(s)",
        ),
    ]
    assert "jens" not in repr(found)
    # the erasure receipts have a policy of their own now: skipped or not, they are covered
    assert s3_coverage(s3_client, s3_bucket, "alleskar-privacy-receipts", policies) == found
    # the documents' template {s3_key} has no fixed part: it covers the whole bucket
    assert s3_coverage(s3_client, s3_bucket, "alleskar-documents", policies) == []
    bounded = s3_coverage(s3_client, s3_bucket, "alleskar-privacy-receipts", policies, max_keys=2)
    assert any("listing stopped after 2 entries" in f.why for f in bounded)


def test_an_archive_directory_no_template_covers_is_reported_over_sftp(
    sftp_client: Any, archive_root: str, tmp_path: Path
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    for f in POLICY_DIR.glob("*.yaml"):  # the archive's documents under jobs/: a root with a fixed part
        text = f.read_text(encoding="utf-8").replace('path: "{archive_path}"', 'path: "jobs/{archive_path}"')
        (folder / f.name).write_text(text, encoding="utf-8")
    policies = load_policies(folder)
    for rel in ("jobs/1/a.pdf", "private-copies/x.pdf", "private-copies/2024/y.pdf", "stray.txt"):
        path = Path(archive_root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    (Path(archive_root) / "private-copies" / "up").symlink_to(Path(archive_root).parent)  # never followed

    found = tree_coverage(sftp_client, archive_root, policies)

    assert found == [
        Finding("directory", "sftp:./", "1 file(s) directly in it, outside every location's root"),
        Finding(
            "directory", "sftp:private-copies/", "no location's template renders anything here; 3 file(s)"
        ),
    ]
    assert tree_coverage(None, archive_root, policies) == found  # the same tree read from local disk
    assert tree_coverage(sftp_client, archive_root, load_policies(POLICY_DIR)) == []
