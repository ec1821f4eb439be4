"""A generated reference world in all three real stores, and engine contexts over it."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from harness.world import NOW, World, WorldSize, generate
from retention.adapters.database import DatabaseAdapter
from retention.adapters.s3 import S3Adapter
from retention.adapters.sftp import SftpAdapter
from retention.engine import Mode, RunContext
from retention.holds import HoldRegistry
from retention.ledger import Ledger
from retention.policy import PolicySet, load_policies

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"
PSEUDONYM_KEY = b"test-pseudonym-key-0123456789abcdef"


@dataclass
class WorldEnv:
    """One world: its ground truth and the clients on the stores that hold it."""

    world: World
    engine: Engine
    s3_client: Any
    bucket: str
    sftp_client: Any
    archive_root: str
    policies: PolicySet

    def context(
        self,
        *,
        mode: Mode = "due",
        subject: str | None = None,
        dry_run: bool = False,
        run_id: str | None = None,
        sftp_client: Any = None,
    ) -> RunContext:
        """A RunContext over the real stores, with the ledger and holds in the business database."""
        return RunContext(
            # letters only: the ledger refuses long digit runs (they look like phone numbers)
            run_id=run_id or "test__" + "".join(random.choices(string.ascii_lowercase, k=12)),
            now=NOW,
            policies=self.policies,
            database=DatabaseAdapter(self.engine, batch_size=50),
            pseudonym_key=PSEUDONYM_KEY,
            ledger=Ledger(self.engine),
            holds=HoldRegistry(self.engine).current,
            s3=S3Adapter(self.s3_client),
            sftp=SftpAdapter(sftp_client or self.sftp_client),
            bucket_map={"alleskar-documents": self.bucket},
            archive_root=self.archive_root,
            mode=mode,
            subject=subject,
            dry_run=dry_run,
        )


@pytest.fixture
def world_env(
    fresh_db: Engine, s3_client: Any, s3_bucket: str, sftp_client: Any, archive_root: str
) -> Iterator[WorldEnv]:
    """A small reference world generated into a fresh database, bucket and archive directory."""
    world = generate(
        fresh_db,
        s3_client=s3_client,
        bucket=s3_bucket,
        sftp_client=sftp_client,
        archive_root=archive_root,
        size=WorldSize.small(),
    )
    Ledger(fresh_db).ensure_schema()
    yield WorldEnv(
        world, fresh_db, s3_client, s3_bucket, sftp_client, archive_root, load_policies(POLICY_DIR)
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty business database: a fresh PostgreSQL database, or a SQLite file (the demo's)."""
    if request.param == "postgresql":
        engine: Engine = request.getfixturevalue("fresh_db")
    else:
        engine = create_engine(f"sqlite:///{tmp_path / 'business.db'}")
    yield engine
    engine.dispose()
