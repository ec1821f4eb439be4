"""Exact width (#10): a kept item keeps only itself and its index; the rest of its category goes.

A small world of a shape the engine was not written around (jobs, and documents that
reference them and name S3 objects), in real PostgreSQL and a real S3 server (moto) with
Object Lock. Every expectation comes from looking at the stores.

Regressions for the issue's points: 1 (an object is erased only if every record naming it, exactly
or through a prefix, may be erased), 2 (keys used exactly as stored; a padded key is never
normalised), 4 (a prefix hold keeps the row that indexes the held object), 7 (one locked
object keeps its own row and what references it, not the category or the categories after it).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from harness.context import engine_context
from retention.errors import TerminalError
from retention.flow import run_all
from retention.holds import HoldRegistry
from retention.ledger import Ledger
from retention.policy import load_policies
from retention.results import Reason

NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=800)
RECENT = NOW - timedelta(days=10)
POLICY = """
id: {id}
description: {id} of the exact-width test world.
legal_basis:
  basis: contract
  gdpr: "Art. 6(1)(b) (contract)"
rationale: Kept one year after the event, then erased; a test world, not advice.
retention:
  period: P1Y
  counts_from: event
  event: the event
  anchor: {anchor}
records:
  table: {id}
  key: id
  subject: customer_id
erasure_request:
  action: erase
cap:
  max_items: 1000
  max_fraction: 1.0
{after}locations:
{locations}"""


def _policies(folder: Path, bucket: str) -> Path:
    folder.mkdir()
    (folder / "docs.yaml").write_text(
        POLICY.format(
            id="docs",
            anchor="delivered_at",
            after="",
            locations=f'  - store: s3\n    bucket: {bucket}\n    key: "{{s3_key}}"\n'
            "  - store: database\n    table: docs\n    action: delete\n",
        )
    )
    (folder / "jobs.yaml").write_text(
        POLICY.format(
            id="jobs",
            anchor="finished_at",
            after="after: [docs]\n",
            locations="  - store: database\n    table: jobs\n    action: delete\n",
        )
    )
    (folder / "exports.yaml").write_text(
        POLICY.format(
            id="exports",
            anchor="made_at",
            after="",
            locations=f'  - store: s3\n    bucket: {bucket}\n    key: "exports/{{customer_id}}/"\n'
            "  - store: database\n    table: exports\n    action: delete\n",
        )
    )
    return folder


# id: (customer, made) -- a directory template: every object under exports/<customer>/
EXPORTS = {1: ("1", OLD), 2: ("1", RECENT), 3: ("2", OLD), 4: ("20", RECENT)}
EXPORT_OBJECTS = ("exports/1/a.csv", "exports/1/b.csv", "exports/2/c.csv", "exports/20/d.csv")

JOBS = {1: OLD, 2: OLD, 3: OLD, 4: OLD, 5: OLD, 6: RECENT, 7: OLD}
# id: (job, delivered, key) -- the fate of each is asserted below.
DOCS = {
    1: (1, OLD, "d/1.pdf"),  # due: erased with its job
    2: (2, OLD, "d/2.pdf"),  # due, object locked: row and job stay
    3: (3, OLD, " d/3.pdf"),  # due, key padded with a space: nothing erased, row and job stay
    4: (4, OLD, "held/4.pdf"),  # due, under a prefix hold: object, row and job stay
    5: (5, RECENT, "d/5.pdf"),  # not due: stays, and so does its (due) job
    6: (1, OLD, "d/6.pdf"),  # due: erased
    7: (7, OLD, "d/shared.pdf"),  # due, but its key is also named by 8: object, row and job stay
    8: (7, RECENT, "d/shared.pdf"),  # not due
}


@pytest.fixture
def small_world(fresh_db: Engine, s3_server: Any, s3_client: Any, tmp_path: Path) -> dict[str, Any]:
    name = "exact-" + uuid.uuid4().hex[:12].translate(str.maketrans("0123456789", "ghijklmnop"))
    bucket = s3_server.create_bucket(name, versioned=True, object_lock=True)
    with fresh_db.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE jobs (id bigint PRIMARY KEY, customer_id text NOT NULL, "
                "finished_at timestamptz)"
            )
        )
        c.execute(
            sa.text(
                "CREATE TABLE docs (id bigint PRIMARY KEY, job_id bigint NOT NULL REFERENCES jobs(id), "
                "customer_id text NOT NULL, delivered_at timestamptz, s3_key text)"
            )
        )
        c.execute(sa.text("CREATE INDEX ON docs (job_id)"))
        c.execute(sa.text("CREATE INDEX ON docs (s3_key)"))
        c.execute(
            sa.text(
                "CREATE TABLE exports (id bigint PRIMARY KEY, customer_id text NOT NULL, made_at timestamptz)"
            )
        )
        for export, (customer, at) in EXPORTS.items():
            c.execute(
                sa.text("INSERT INTO exports VALUES (:i, :c, :t)"), {"i": export, "c": customer, "t": at}
            )
        for job, at in JOBS.items():
            c.execute(sa.text("INSERT INTO jobs VALUES (:i, :c, :t)"), {"i": job, "c": str(job), "t": at})
        for doc, (job, at, key) in DOCS.items():
            c.execute(
                sa.text("INSERT INTO docs VALUES (:i, :j, :c, :t, :k)"),
                {"i": doc, "j": job, "c": str(job), "t": at, "k": key},
            )
    for key in [key for _job, _at, key in DOCS.values()] + list(EXPORT_OBJECTS):
        for _version in range(2):
            s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
    # The object a padded key would become if it were stripped: it must survive.
    s3_client.put_object(Bucket=bucket, Key="d/3.pdf", Body=b"another customer's")
    s3_client.put_object(
        Bucket=bucket,
        Key="d/2.pdf",
        Body=b"locked",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=30),
    )
    Ledger(fresh_db).ensure_schema()
    registry = HoldRegistry(fresh_db)
    registry.ensure_schema()
    registry.add(reason="litigation about held documents", prefix="held/")
    return {"bucket": bucket, "policies": _policies(tmp_path / "policies", bucket)}


def _rows(engine: Engine, table: str) -> set[int]:
    with engine.connect() as c:
        return set(c.execute(sa.text(f"SELECT id FROM {table}")).scalars())  # noqa: S608 - a test table


def _versions(client: Any, bucket: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            out[v["Key"]] = out.get(v["Key"], 0) + 1
    return out


def test_each_kept_object_keeps_its_own_row_and_what_references_it_and_nothing_more(
    small_world: dict[str, Any], fresh_db: Engine, s3_client: Any
) -> None:
    bucket = small_world["bucket"]
    before = _versions(s3_client, bucket)
    ctx = engine_context(
        fresh_db,
        load_policies(small_world["policies"]),
        now=NOW,
        pseudonym_key=b"exact-width-test-key-0123456789",
        s3_client=s3_client,
        bucket=None,
    )

    outcome = run_all(ctx, approved=lambda _plan: True)

    assert _rows(fresh_db, "docs") == {2, 3, 4, 5, 7, 8}
    # Jobs 2-5 and 7 are due but referenced by documents that stay; job 6 is not due; job 1 goes.
    assert _rows(fresh_db, "jobs") == {2, 3, 4, 5, 6, 7}
    # Customer 1's exports directory is also named by a record not due yet: it all stays, and so
    # does the due record's row. Customer 2's goes, and "exports/2/" never reaches "exports/20/".
    assert _rows(fresh_db, "exports") == {1, 2, 4}
    after = _versions(s3_client, bucket)
    assert "d/1.pdf" not in after and "d/6.pdf" not in after and "exports/2/c.csv" not in after
    # Of the locked object only its locked version is left (the others may go); the padded key,
    # its stripped twin, the held and the not-due objects keep every version.
    gone = ("d/1.pdf", "d/6.pdf", "exports/2/c.csv")
    assert after == {**{k: v for k, v in before.items() if k not in gone}, "d/2.pdf": 1}

    docs = next(r for r in outcome.results if (r.category, r.store) == ("docs", "database"))
    assert docs.erased == 2 and docs.verified
    assert docs.kept[Reason.STORAGE_LOCK] == 1
    assert docs.kept[Reason.UNSAFE_TARGET] == 1
    assert docs.kept[Reason.LEGAL_HOLD] == 1
    assert docs.kept[Reason.SHARED_WITH_NOT_DUE] == 1
    s3 = next(r for r in outcome.results if (r.category, r.store) == ("docs", "s3"))
    assert s3.kept[Reason.UNSAFE_TARGET] == 1 and s3.kept[Reason.LEGAL_HOLD] == 2
    assert s3.kept[Reason.SHARED_WITH_NOT_DUE] == 4, "every version of the shared key"
    jobs = next(r for r in outcome.results if r.category == "jobs")
    assert jobs.erased == 1 and jobs.kept[Reason.BLOCKED_BY_REFERENCE] == 5 and jobs.verified
    exports = {r.store: r for r in outcome.results if r.category == "exports"}
    assert exports["s3"].erased == 2 and exports["s3"].kept[Reason.SHARED_WITH_NOT_DUE] == 4
    assert exports["database"].erased == 1 and exports["database"].kept[Reason.SHARED_WITH_NOT_DUE] == 1
    assert not outcome.skipped, "no category was held back as a whole"
    assert outcome.summary is not None and outcome.summary.proof.ok
    # Nothing left behind silently: the summary counts it per category and reason.
    backlog = outcome.summary.backlog
    assert backlog["docs"][Reason.UNSAFE_TARGET] == 2, "the record and its key"
    assert backlog["jobs"] == {Reason.BLOCKED_BY_REFERENCE: 5}
    assert backlog["exports"][Reason.SHARED_WITH_NOT_DUE] == 5
    assert outcome.summary.persistent == ()

    # The next night finds the same: nothing more erased, the same kept, still green.
    again = run_all(
        engine_context(
            fresh_db,
            load_policies(small_world["policies"]),
            now=NOW,
            pseudonym_key=b"exact-width-test-key-0123456789",
            s3_client=s3_client,
        ),
        approved=lambda _plan: True,
    )
    assert sum(r.erased for r in again.results) == 0
    assert _rows(fresh_db, "docs") == {2, 3, 4, 5, 7, 8} and _versions(s3_client, bucket) == after

    # The third night in a row with the same backlog for reasons that are no lawful keep fails loudly,
    # naming them; the storage lock and the hold are expected to last and are not named.
    third = engine_context(
        fresh_db,
        load_policies(small_world["policies"]),
        now=NOW,
        pseudonym_key=b"exact-width-test-key-0123456789",
        s3_client=s3_client,
    )
    with pytest.raises(TerminalError, match="3 nightly runs in a row") as failed:
        run_all(third, approved=lambda _plan: True)
    message = str(failed.value)
    for named in ("docs:unsafe_target", "docs:shared_with_not_due", "jobs:blocked_by_reference"):
        assert named in message
    assert "storage_lock" not in message and "legal_hold" not in message
    assert Ledger(fresh_db).verify_chain().ok
