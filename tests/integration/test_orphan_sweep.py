"""The orphan sweep on the real services: PostgreSQL, moto's S3 server (Object Lock bucket) and OpenSSH.

Two categories share one bucket and the archive: ``letters`` (S3 ``letters/{customer_id}/{id}.pdf``,
archive ``letters/{customer_id}/{id}.txt`` and the case folder ``cases/{customer_id}/``, orphans
erased) and ``exports`` (S3 ``exports/{customer_id}/{id}/``, orphans reported; archive
``exports/{customer_id}/{id}.zip``, reported; and a copy of a letter, ``letters/{customer_id}/
{letter_id}.pdf``, whose orphans may be erased). Planted: named items (one named only by the other
category, some only by a directory template), orphans (with versions and a delete marker), one
under Object Lock, one under a prefix hold and one of a held customer, unsafe keys, a fresh one,
and symlinks in the archive (to a directory outside the root and inside it). Exact end states.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from harness.context import engine_context
from retention.adapters.base import EraseOutcome
from retention.engine import RunContext
from retention.errors import TerminalError, VerificationError
from retention.holds import HoldRegistry
from retention.ledger import Ledger
from retention.policy import load_policies
from retention.sweep import SweepResult, plan_root, root_named, roots, sweep_root
from tests.integration.archive_tree import snapshot, write
from tests.integration.conftest import PSEUDONYM_KEY

LAW = "GDPR Art. 5(1)(e) storage limitation: files no record names"
POLICY_BUCKET = "sweep-files"
GRACE = timedelta(days=7)

_COMMON = """
legal_basis: {basis: contract, gdpr: "Art. 6(1)(b)"}
retention: {period: P1Y, counts_from: event, event: the day it was made, anchor: made_at}
erasure_request: {action: erase}
cap: {max_items: 1000, max_fraction: 1.0}
"""
POLICIES = {
    "letters.yaml": f"""
id: letters
description: Letters sent to customers, in S3 and in the archive.
rationale: Letters are kept one year for complaints, then erased everywhere.
records: {{table: letters, key: id, subject: customer_id}}
{_COMMON}
locations:
  - store: s3
    bucket: {POLICY_BUCKET}
    key: "letters/{{customer_id}}/{{id}}.pdf"
    orphans: {{action: erase, law: "{LAW}"}}
  - store: sftp
    path: "letters/{{customer_id}}/{{id}}.txt"
    orphans: {{action: erase, law: "{LAW}"}}
  - store: sftp
    path: "cases/{{customer_id}}/"
    orphans: {{action: erase, law: "{LAW}"}}
  - {{store: database, table: letters, action: delete}}
""",
    "exports.yaml": f"""
id: exports
description: Data exports made for customers, with copies of their letters.
rationale: Exports are kept one year for questions, then erased everywhere.
records: {{table: exports, key: id, subject: customer_id}}
{_COMMON}
locations:
  - store: s3
    bucket: {POLICY_BUCKET}
    key: "exports/{{customer_id}}/{{id}}/"
  - store: s3
    bucket: {POLICY_BUCKET}
    key: "letters/{{customer_id}}/{{letter_id}}.pdf"
    orphans: {{action: erase, law: "{LAW}"}}
  - store: sftp
    path: "exports/{{customer_id}}/{{id}}.zip"
  - {{store: database, table: exports, action: delete}}
""",
}

# S3, written before the clock's grace boundary (old) unless in FRESH.
NAMED_S3 = {
    "letters/7/1.pdf": 2,
    "letters/8/2.pdf": 1,
    "letters/7/5.pdf": 1,  # named only by exports row 10 (letter_id 5)
    "exports/7/10/a.csv": 1,  # named only by the directory template
    "exports/7/10/b.csv": 1,
}
ERASED_S3 = {"letters/7/99.pdf": 3, "letters/9/1.pdf": 1, "letters/stray.pdf": 1}  # 99: 2 versions + marker
LOCKED_S3 = "letters/7/locked.pdf"
HELD_S3 = ["letters/held/x.pdf", "letters/42/77.pdf"]  # a prefix hold; customer 42 is held
UNSAFE_S3 = ["letters/ 7/3.pdf", "letters//double.pdf"]
REPORTED_S3 = ["exports/7/99/x.csv", "exports/loose.csv"]
FRESH_S3 = ["letters/7/fresh.pdf", "exports/7/fresh.csv"]

NAMED_FILES = ["letters/7/1.txt", "letters/8/2.txt", "cases/7/notes.txt", "cases/7/sub/deep.txt"]
ERASED_FILES = ["letters/7/99.txt", "letters/9/3.txt", "cases/55/old.txt"]
HELD_FILES = ["letters/held/old.txt"]
REPORTED_FILES = ["exports/loose.zip"]
FRESH_FILES = ["letters/7/new.txt"]
LINKS = {"letters/outside": "outside", "letters/8/link.txt": "cases/7/notes.txt", "cases/inside": "letters/8"}


def _letters_only(hexed: str) -> str:
    """The ledger refuses long digit runs: names built from uuids get letters for digits."""
    return hexed.translate(str.maketrans("0123456789", "ghijklmnop"))


@dataclass
class Sweep:
    engine: Engine
    s3: Any
    bucket: str
    sftp: Any
    archive: str
    outside: Path
    policies_dir: Path
    now: datetime
    """The sweep's clock: exactly the grace after the boundary between old and fresh items."""

    def context(self, run: str | None = None) -> RunContext:
        ctx = engine_context(
            self.engine,
            load_policies(self.policies_dir),
            now=self.now,
            pseudonym_key=PSEUDONYM_KEY,
            s3_client=self.s3,
            sftp_client=self.sftp,
            archive_root=self.archive,
            run=run,
        )
        ctx.bucket_map = {POLICY_BUCKET: self.bucket}
        return ctx

    def versions(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for e in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                found[e["Key"]] = found.get(e["Key"], 0) + 1
        return found


def _schema(engine: Engine) -> None:
    made = datetime(2026, 1, 5, tzinfo=UTC)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE letters (id int PRIMARY KEY, customer_id int NOT NULL, made_at timestamptz)"
            )
        )
        c.execute(
            sa.text(
                "CREATE TABLE exports (id int PRIMARY KEY, customer_id int NOT NULL, letter_id int, "
                "made_at timestamptz)"
            )
        )
        c.execute(sa.text("CREATE INDEX ON letters (customer_id, id)"))
        c.execute(sa.text("CREATE INDEX ON exports (customer_id, letter_id)"))
        rows = [{"i": 1, "c": 7, "t": made}, {"i": 2, "c": 8, "t": made}, {"i": 3, "c": 7, "t": made}]
        c.execute(sa.text("INSERT INTO letters VALUES (:i, :c, :t)"), rows)
        c.execute(
            sa.text("INSERT INTO exports VALUES (:i, :c, :l, :t)"),
            [{"i": 10, "c": 7, "l": 5, "t": made}, {"i": 11, "c": 8, "l": None, "t": made}],
        )
    Ledger(engine).ensure_schema()
    holds = HoldRegistry(engine)
    holds.ensure_schema()
    holds.add(reason="litigation about held letters", prefix="letters/held/")
    holds.add(reason="litigation with a customer", subject="42")


def _plant_s3(s3: Any, bucket: str) -> datetime:
    """Write the old objects, wait for the next second (S3 keeps whole seconds), write the fresh ones;
    return that second: the boundary between old and fresh."""
    for key, n in {**NAMED_S3, **ERASED_S3}.items():
        for i in range(n if key != "letters/7/99.pdf" else 2):
            s3.put_object(Bucket=bucket, Key=key, Body=f"v{i}".encode())
    s3.delete_object(Bucket=bucket, Key="letters/7/99.pdf")  # a delete marker on top of two versions
    s3.put_object(
        Bucket=bucket,
        Key=LOCKED_S3,
        Body=b"locked",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=30),
    )
    for key in HELD_S3 + UNSAFE_S3 + REPORTED_S3:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    boundary = int(time.time()) + 1
    time.sleep(max(0.0, boundary - time.time()) + 0.05)
    for key in FRESH_S3:
        s3.put_object(Bucket=bucket, Key=key, Body=b"new")
    return datetime.fromtimestamp(boundary, UTC)


def _plant_archive(archive: str, outside: Path, old: datetime) -> None:
    stamp = (old.timestamp(), old.timestamp())
    for rel in NAMED_FILES + ERASED_FILES + HELD_FILES + REPORTED_FILES:
        os.utime(write(archive, rel), stamp)
    for rel in FRESH_FILES:
        write(archive, rel)
    write(outside, "secret.txt")
    for link, to in LINKS.items():
        target = outside if to == "outside" else Path(archive, to)
        os.symlink(target, Path(archive, link))


@pytest.fixture
def planted(
    fresh_db: Engine,
    s3_server: Any,
    s3_client: Any,
    sftp_client: Any,
    archive_root: str,
    tmp_path: Path,
) -> Iterator[Sweep]:
    bucket = s3_server.create_bucket("sweep-" + _letters_only(uuid.uuid4().hex[:12]), object_lock=True)
    policies = tmp_path / "policies"
    policies.mkdir()
    for name, text in POLICIES.items():
        (policies / name).write_text(text)
    _schema(fresh_db)
    boundary = _plant_s3(s3_client, bucket)
    outside = tmp_path / "outside"
    _plant_archive(archive_root, outside, boundary - timedelta(days=30))
    yield Sweep(fresh_db, s3_client, bucket, sftp_client, archive_root, outside, policies, boundary + GRACE)


def _counts(result: SweepResult) -> dict[str, Any]:
    fields = ("listed", "named", "recent", "links", "orphans", "held", "reported", "unsafe", "erasable")
    return {f: getattr(result, f) for f in fields} | {"erased": result.erased, "kept": result.kept}


def test_the_sweep_erases_exactly_the_unnamed_and_keeps_everything_else(
    planted: Sweep, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = planted.context()
    found = {r.label: r for r in roots(ctx)}
    assert list(found) == [
        "s3:sweep-files/exports/*",
        "s3:sweep-files/letters/*",
        "sftp:cases/*",
        "sftp:exports/*",
        "sftp:letters/*",
    ]
    before = planted.versions()

    # Planning counts and touches nothing; over a cap of 2 it asks for approval.
    plan = plan_root(ctx, found["s3:sweep-files/letters/*"], cap=2)
    assert (plan.orphans, plan.erasable, plan.held, plan.reported, plan.needs_approval) == (8, 4, 2, 2, True)
    assert "4 unnamed items" in plan.subject and "letters/7" not in plan.body
    assert not plan_root(ctx, found["s3:sweep-files/exports/*"]).scanned  # a report root is listed once

    # Fail closed: more erasable than cleared erases nothing.
    with pytest.raises(TerminalError, match="more unnamed items were erasable than cleared"):
        sweep_root(ctx, found["s3:sweep-files/letters/*"], budget=3)
    assert planted.versions() == before

    caplog.set_level(logging.INFO)
    results = {label: sweep_root(ctx, root) for label, root in found.items()}

    assert _counts(results["s3:sweep-files/letters/*"]) == {
        "listed": 12,
        "named": 3,
        "recent": 1,
        "links": 0,
        "orphans": 8,
        "held": 2,
        "reported": 2,
        "unsafe": 2,
        "erasable": 4,
        "erased": 5,  # two versions and the delete marker of 99.pdf, 9/1.pdf, stray.pdf
        "kept": {"legal_hold": 2, "storage_lock": 1},
    }
    assert _counts(results["s3:sweep-files/exports/*"]) == {
        "listed": 5,
        **{"named": 2, "recent": 1, "links": 0, "orphans": 2, "held": 0, "reported": 2, "unsafe": 0},
        **{"erasable": 0, "erased": 0, "kept": {}},
    }
    assert _counts(results["sftp:letters/*"]) == {
        "listed": 8,
        **{"named": 2, "recent": 1, "links": 2, "orphans": 3, "held": 1, "reported": 0, "unsafe": 0},
        **{"erasable": 2, "erased": 2, "kept": {"legal_hold": 1}},
    }
    assert _counts(results["sftp:cases/*"]) == {
        "listed": 4,
        **{"named": 2, "recent": 0, "links": 1, "orphans": 1, "held": 0, "reported": 0, "unsafe": 0},
        **{"erasable": 1, "erased": 1, "kept": {}},
    }
    assert _counts(results["sftp:exports/*"])["reported"] == 1
    assert all(r.verified and r.remaining == 0 for r in results.values())

    # S3: the erased orphans are gone with every version; everything else is exactly as it was.
    expected = {k: n for k, n in before.items() if k not in ERASED_S3}
    assert planted.versions() == expected
    # The archive: the erased files (and the directories they emptied) are gone; links and their
    # targets, inside the root and outside it, are untouched.
    tree = snapshot(planted.archive)
    for rel in ERASED_FILES:
        assert rel not in tree
    assert "letters/9" not in tree and "cases/55" not in tree
    for rel in NAMED_FILES + HELD_FILES + REPORTED_FILES + FRESH_FILES:
        assert tree[rel] == rel
    assert {k: v for k, v in tree.items() if v.startswith("link:")} == {
        link: f"link:{planted.outside if to == 'outside' else Path(planted.archive, to)}"
        for link, to in LINKS.items()
    }
    assert snapshot(planted.outside) == {"secret.txt": "secret.txt"}

    # The ledger: counts and digests per root, never a key; the log names no key either.
    entries = Ledger(planted.engine).entries(run_id=ctx.run_id, limit=1000)
    assert Ledger(planted.engine).verify_chain().ok
    text = json.dumps(entries, default=str)
    for name in ("99.pdf", "stray", "held/x", "9/3.txt", "loose", "locked", "double"):
        assert name not in text and name not in caplog.text, name
    summaries = {e["location"]: e for e in reversed(entries) if e["action"] == "orphan_sweep"}  # newest
    assert summaries["s3:sweep-files/letters/*"]["detail"]["laws"] == [LAW]
    assert summaries["s3:sweep-files/letters/*"]["items_digest"] == results["s3:sweep-files/letters/*"].digest
    outcomes = {(e["location"], e["outcome"], e["reason"]) for e in entries if e["action"] == "delete"}
    assert ("s3:sweep-files/letters/*", "kept", "storage_lock") in outcomes
    assert ("s3:sweep-files/letters/*", "kept", "over_cap") in outcomes  # the refused first attempt
    assert ("sftp:letters/*", "verified", None) in outcomes

    # A second sweep finds nothing more to erase.
    again = sweep_root(planted.context(), found["s3:sweep-files/letters/*"])
    assert (again.orphans, again.erasable, again.erased) == (5, 1, 0)  # held, unsafe, the locked one


def test_an_orphan_left_after_erasing_fails_the_sweep_loudly(planted: Sweep) -> None:
    ctx = planted.context()
    root = root_named(ctx, "sftp:cases/*")
    ctx.adapters["sftp"].erase = lambda target, batch: EraseOutcome(erased=batch.count)  # type: ignore[method-assign]

    with pytest.raises(VerificationError, match="1 unnamed item"):
        sweep_root(ctx, root)

    assert Path(planted.archive, "cases/55/old.txt").exists()
    entries = Ledger(planted.engine).entries(run_id=ctx.run_id)
    assert [e["count"] for e in entries if e["outcome"] == "verify_failed"] == [1]


def test_the_dag_sweeps_every_root_and_alerts_on_reported_orphans(
    planted: Sweep, airflow_db: Any, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dag.test()`` at the real clock: the S3 objects are younger than the grace (kept); the archive's
    old orphans go; the reported ones make ``finish_sweep`` fail, which is what alerts."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from tests.integration.test_dags import _conn_json, _xcom, dag

    receipts = s3_server.create_bucket("receipts-" + planted.bucket[-12:])
    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(planted.engine))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETENTION_PSEUDONYM",
        json.dumps({"conn_type": "generic", "password": PSEUDONYM_KEY.decode()}),
    )
    monkeypatch.setenv("RETENTION_POLICY_DIR", str(planted.policies_dir))
    settings = {
        "bucket_map": {POLICY_BUCKET: planted.bucket},
        "archive_root": planted.archive,
        "receipts_bucket": receipts,
    }
    monkeypatch.setenv("AIRFLOW_VAR_RETENTION_SETTINGS", json.dumps(settings))
    before = planted.versions()
    sweep = dag("retention_sweep")
    for task in sweep.tasks:
        task.retries = 0

    run = sweep.test(run_conf={"dry_run": False, "max_items": 1000})

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        states = {(ti.task_id, ti.rendered_map_index): str(ti.state) for ti in tis}
    assert run.state == "failed"
    assert states.pop(("finish_sweep", None)) == "failed"
    assert set(states.values()) == {"success"}, states
    assert ("root.sweep", "sftp:letters/*") in states
    results = _mapped_results(run, len([k for k in states if k[0] == "root.sweep"]))
    assert results["s3:sweep-files/letters/*"]["recent"] == 12  # everything in S3 is minutes old
    assert results["sftp:letters/*"]["erased"] == 2 and results["sftp:cases/*"]["erased"] == 1
    assert results["sftp:exports/*"]["reported"] == 1
    assert planted.versions() == before
    tree = snapshot(planted.archive)
    assert not any(rel in tree for rel in ERASED_FILES) and "exports/loose.zip" in tree
    assert _xcom(run, "prepare_sweep") == list(results)
    assert Ledger(planted.engine).verify_chain().ok
    # check_coverage ran beside the roots: one ledger entry, names and counts only; it did not fail the run.
    report = _xcom(run, "check_coverage")
    (coverage,) = [e for e in Ledger(planted.engine).entries(run_id=run.run_id) if e["action"] == "coverage"]
    assert coverage["outcome"] == "summary" and coverage["detail"] == report
    assert coverage["count"] == sum(report[k] for k in ("table", "column", "prefix", "directory"))
    assert report["prefix"] == report["directory"] == 0  # every S3 prefix and archive directory is a root


def _mapped_results(run: Any, n: int) -> dict[str, dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    out: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        for i in range(n):
            row = (
                session.query(XComModel)
                .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id="root.sweep", map_index=i)
                .filter_by(key="return_value")
                .one()
            )
            value = json.loads(row.value) if isinstance(row.value, str) else row.value
            out[value["root"]] = value
    return out
