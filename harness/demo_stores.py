"""The demo's stores and its world: S3 (moto), SFTP (OpenSSH), the business database, the generated world.

The business database is an embedded SQLite file by default, or the harness's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness.clients import sftp_session
from harness.demo_config import DOCUMENTS_BUCKET, RECEIPTS_BUCKET, REPO, DemoError, say
from harness.processes import ProcessRecord, State
from harness.server_process import LOOPBACK
from harness.services import S3Server, SftpServer, start_postgres, start_s3, start_sftp
from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import Fate, Profile, World


@dataclass
class Stores:
    """The running stores and how Airflow reaches them."""

    business_url: str
    business_conn: dict[str, Any]
    s3: S3Server
    sftp: SftpServer
    archive_root: str


def start_stores(stack: ExitStack, demo_dir: Path, business_db: str, state: State) -> Stores:
    """Start S3, SFTP and (for ``postgres``) PostgreSQL; create the SQLite file path otherwise."""
    services = demo_dir / "services"
    s3 = stack.enter_context(start_s3(services))
    state.processes.append(ProcessRecord.of("s3 (moto)", s3.pid))
    sftp = stack.enter_context(start_sftp(services))
    state.processes.append(ProcessRecord.of("sftp (sshd)", sftp.pid))
    say(f"  S3 (moto) on {s3.endpoint_url}, SFTP (OpenSSH) on {LOOPBACK}:{sftp.port}")
    if business_db == "postgres":
        pg = stack.enter_context(start_postgres(services, fast=True))
        state.processes.append(ProcessRecord.of("postgres", pg.pid))
        state.postgres_cluster = str(pg.cluster_dir)
        say(f"  business database: PostgreSQL on {LOOPBACK}:{pg.port}")
        return Stores(pg.url, json.loads(pg.airflow_conn_json()), s3, sftp, str(sftp.archive_root))
    path = demo_dir / "business.sqlite"
    say(f"  business database: SQLite file {path.relative_to(REPO)}")
    return Stores(f"sqlite:///{path}", sqlite_conn(path), s3, sftp, str(sftp.archive_root))


def sqlite_conn(path: Path) -> dict[str, Any]:
    """An Airflow sqlite connection on ``path``; SqliteHook passes the extra on as ``?timeout=30``."""
    return {"conn_type": "sqlite", "host": str(path), "extra": {"timeout": "30"}}


def make_world(stores: Stores) -> World:
    """Generate the demo-sized reference world into the three stores (progress on stderr), and plant
    what no policy manages (``plant_unmanaged``)."""
    engine = sa.create_engine(stores.business_url)
    try:
        with sftp_session(stores.sftp.spec) as sftp:
            world = generate(
                engine,
                s3_client=stores.s3.client(),
                bucket=stores.s3.create_bucket(DOCUMENTS_BUCKET),
                sftp_client=sftp,
                archive_root=stores.archive_root,
                size=WorldSize.demo(),
                progress=True,
            )
        plant_unmanaged(engine, Path(stores.archive_root))
        if engine.dialect.name == "sqlite":
            # WAL lets the monitoring page and the plan tasks read while a task writes.
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()
    stores.s3.create_bucket(RECEIPTS_BUCKET)
    return world


UNCOVERED_TABLE = "newsletter_signups"
"""A table the demo adds to the business database and no policy names: the coverage report lists it."""
STRAY_FILES = ("scans-unsorted/scan-a.pdf", "scans-unsorted/scan-b.pdf")
"""Files the demo puts in the archive that no record names, back-dated past the grace: orphans."""
STRAY_AGE_DAYS = 30


def plant_unmanaged(engine: sa.Engine, archive_root: Path) -> None:
    """What the weekly sweep is for: one table no policy covers, with a few made-up sign-ups, and
    archive files no record names, 30 days old (their mtime is set back: moto's server gives every
    S3 object the time it was written, so an S3 orphan planted now would only count as recent)."""
    table = sa.Table(
        UNCOVERED_TABLE,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": i, "email": f"reader{i}@example.org", "created_at": datetime(2026, 5, i, 9, 30)}
                for i in range(1, 4)
            ],
        )
    old = time.time() - STRAY_AGE_DAYS * 86400
    for rel in STRAY_FILES:
        path = archive_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-1.4 a scan nobody filed\n")
        os.utime(path, (old, old))


def choose_customer(world: World) -> int:
    """A customer with invoices the law keeps, documents in S3 and the archive, and no legal hold.

    An active customer has nothing due tonight, so the nightly run leaves all of it and the
    erasure shows every store and a statutory keep.
    """
    not_due_invoices = world.ids("invoices", Fate.NOT_DUE)
    for cid in world.customers_with(Profile.ACTIVE):
        inventory = world.customer_inventory(cid)
        if inventory.rows["invoices"] & not_due_invoices and inventory.archive_paths:
            return cid
    raise DemoError("the world has no active customer with invoices and archived documents")
