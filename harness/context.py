"""The one builder of an engine ``RunContext`` over local stores, for tests, the demo's checks and the bench.

Airflow builds its contexts from Connections (``retention_airflow.clients.open_context``);
everything that runs the engine outside Airflow builds them here, so a change of the
context's shape is made in two places, not in every test and benchmark.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from retention.access import RECEIPTS_POLICY_BUCKET
from retention.adapters.base import StoreAdapter
from retention.adapters.database import DatabaseAdapter
from retention.engine import RunContext
from retention.holds import HoldRegistry
from retention.intents import IntentItems
from retention.journal import EraseJournal
from retention.keeps import KeptRecords
from retention.ledger import Ledger
from retention.policy import PolicySet
from retention.results import Mode

POLICY_BUCKET = "alleskar-documents"
"""The documents bucket as the reference policies name it."""


_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def run_id(prefix: str = "test") -> str:
    """A fresh run id of letters only (the ledger refuses long digit runs: they look like phone numbers).

    From ``uuid4`` (the OS's randomness), not ``random``: property tests reseed ``random`` for
    every example, and two runs sharing an id would share their notes of kept records.
    """
    return f"{prefix}__" + uuid.uuid4().hex[:16].translate(_LETTERS)


def engine_context(
    engine: Engine,
    policies: PolicySet,
    *,
    now: datetime,
    pseudonym_key: bytes,
    s3_client: Any = None,
    sftp_client: Any = None,
    bucket: str | None = None,
    archive_root: str | None = None,
    filesystem_root: str | None = None,
    mode: Mode = "due",
    subject: str | None = None,
    dry_run: bool = False,
    run: str | None = None,
    batch_size: int = 50_000,
    reason: str = "erasure_request",
    receipts_bucket: str | None = None,
) -> RunContext:
    """A RunContext over ``engine`` (business data, ledger and holds in one database) and the given stores.

    A store gets an adapter only when its client (or root) is given; ``bucket`` is the real
    bucket behind the policies' ``alleskar-documents``.
    """
    from retention.adapters.filesystem import FilesystemAdapter
    from retention.adapters.s3 import S3Adapter
    from retention.adapters.sftp import SftpAdapter

    adapters: dict[str, StoreAdapter[Any]] = {}
    roots: dict[str, str] = {}
    if s3_client is not None:
        adapters["s3"] = S3Adapter(s3_client)
    if sftp_client is not None:
        adapters["sftp"] = SftpAdapter(sftp_client)
    if archive_root is not None:
        roots["sftp"] = archive_root
    if filesystem_root is not None:
        adapters["filesystem"] = FilesystemAdapter()
        roots["filesystem"] = filesystem_root
    keeps = KeptRecords(engine)
    keeps.ensure_schema()
    intents = IntentItems(engine)
    intents.ensure_schema()
    journal = EraseJournal(engine)
    journal.ensure_schema()
    return RunContext(
        run_id=run or run_id(),
        now=now,
        policies=policies,
        database=DatabaseAdapter(engine, batch_size=batch_size, journal=journal),
        pseudonym_key=pseudonym_key,
        ledger=Ledger(engine),
        keeps=keeps,
        intents=intents,
        holds=HoldRegistry(engine, subject_format=policies.subject).current,
        adapters=adapters,
        # The access reports' bucket: the receipts bucket, or (where a test has none) the documents
        # bucket, where nothing lives under their prefix.
        bucket_map={POLICY_BUCKET: bucket, RECEIPTS_POLICY_BUCKET: receipts_bucket or bucket}
        if bucket
        else {},
        roots=roots,
        mode=mode,
        subject=subject,
        dry_run=dry_run,
        reason=reason,
    )
