"""The due-constant pair: two worlds with the same due items, one storing ten times what the other stores.

Both derive from the main world, whose customers are 1..N, split at ``b = N / 10``
(``bench.results.due_constant_boundary``):

- **1x**: a copy of the main world holding only customers 1..b: their rows (the rows of every
  other customer deleted, then ``VACUUM FULL``), their objects (a mirror bucket the generator
  wrote only their keys to) and their archive files (the archive copied without the others'
  directories). About a tenth of the stored data.
- **10x**: a full copy of the main world (rows, a full mirror bucket, the whole archive) in which
  nothing of customers b+1..N is due: their due anchors are moved to the weeks before the
  world's moment (``VACUUM FULL`` after). Ten times the stored data.

Customers 1..b, their rows, objects, files and legal holds are identical in both, so both
nightly runs have exactly the same due items. The copies are made with the benchmark's other
copies, before the engine touches the main world (``copy_1x``, ``copy_10x``); the heavy rewriting
(``shrink_1x``, ``undue_10x``) comes after the per-store rows, which it would otherwise disturb.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import sql

from bench.results import DUE_CONSTANT_FACTOR, due_constant_boundary
from bench.worlds import Built, KeyFilter, Services, copy_world, pg_connection
from harness.world_rules import COPENHAGEN, NOW, RULES, TABLES

DOCUMENTS_PREFIX = "documents/"
"""The generator's keys: ``documents/<customer>/<job>/<document>.txt``; archive paths drop the prefix."""


@dataclass(frozen=True)
class DagWorld:
    """What one nightly DAG run acts on: a database copy, a bucket, an archive root; and what they store."""

    name: str
    db_url: str
    bucket: str
    archive_root: str
    stored: dict[str, int] | None = None
    database_bound: dict[str, Any] | None = None
    """The bare statements (``baselines.database_bound``) on a copy of this world's database."""


def _customer_of(path: str) -> int | None:
    head = path.removeprefix(DOCUMENTS_PREFIX).split("/", 1)[0]
    return int(head) if head.isdigit() else None


def keys_up_to(boundary: int) -> KeyFilter:
    """The S3 keys (or archive entries) of customers 1..``boundary``, and those of no customer (the
    generator's few objects no policy touches)."""

    def wanted(path: str) -> bool:
        customer = _customer_of(path)
        return customer is None or customer <= boundary

    return wanted


def boundary_of(built: Built) -> int:
    """The last customer of the due-constant pair's shared due items."""
    return due_constant_boundary(built.world.size.customers, DUE_CONSTANT_FACTOR)


def _subject(table: str) -> str:
    return next(r.subject for r in RULES if r.table == table)


def copy_1x(svc: Services, built: Built, boundary: int) -> DagWorld:
    """The 1x world's copies: the whole database (``shrink_1x`` deletes the others' rows later), the
    archive of customers 1..``boundary``, the mirror bucket of their objects."""
    url, root = copy_world(svc, built, "dc1", files=keys_up_to(boundary))
    return DagWorld("dc1", url, built.mirrors["dc1"], root)


def copy_10x(svc: Services, built: Built) -> DagWorld:
    """The 10x world's copies: database, archive and mirror bucket, all of it."""
    url, root = copy_world(svc, built, "dc10")
    return DagWorld("dc10", url, built.mirrors["dc10"], root)


def shrink_1x(world: DagWorld, boundary: int) -> None:
    """Delete the rows of the customers after ``boundary`` from the 1x world's database."""
    with pg_connection(world.db_url) as conn:
        for table in reversed(TABLES):  # children first
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} > %s").format(
                    sql.Identifier(table), sql.Identifier(_subject(table))
                ),
                (boundary,),
            )
        conn.execute("VACUUM FULL ANALYZE")


def undue_10x(world: DagWorld, boundary: int) -> None:
    """Make nothing of the customers after ``boundary`` due in the 10x world's database."""
    recent = NOW - timedelta(days=1)
    with pg_connection(world.db_url) as conn:
        for rule in RULES:
            cutoff = rule.cutoff(NOW)
            table, anchor = sql.Identifier(rule.table), sql.Identifier(rule.anchor)
            params: dict[str, Any] = {"b": boundary, "cutoff": cutoff}
            if isinstance(cutoff, datetime):
                # Spread over three weeks before the world's moment: not due under any rule (>= 1 year).
                moved = sql.SQL("%(recent)s - make_interval(hours => ({} %% 500)::int)")
                params["recent"] = recent
                due = sql.SQL("{} <= %(cutoff)s")
            else:
                moved = sql.SQL("%(today)s::date - ({} %% 100)::int")
                params["today"] = _local_date(recent)
                due = sql.SQL("{} < %(cutoff)s")
            statement = sql.SQL("UPDATE {} SET {} = {} WHERE {} > %(b)s AND {}").format(
                table,
                anchor,
                moved.format(sql.Identifier("id")),
                sql.Identifier(rule.subject),
                due.format(anchor),
            )
            conn.execute(statement, params)
        conn.execute("VACUUM FULL ANALYZE")


def _local_date(moment: datetime) -> date:
    return moment.astimezone(COPENHAGEN).date()


def stored(svc: Services, world: DagWorld) -> dict[str, int]:
    """What a world stores: business rows, S3 versions and delete markers, archive files."""
    rows = 0
    with pg_connection(world.db_url) as conn:
        for table in TABLES:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            rows += int(row[0]) if row else 0
    versions = 0
    pages = svc.s3.client().get_paginator("list_object_versions").paginate(Bucket=world.bucket)
    for page in pages:
        versions += len(page.get("Versions") or ()) + len(page.get("DeleteMarkers") or ())
    files = sum(len(names) for _dir, _dirs, names in os.walk(world.archive_root))
    return {"rows": rows, "s3_versions": versions, "archive_files": files}
