"""A generated reference world in all three real stores, and engine contexts over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from harness.context import engine_context
from harness.world_rules import NOW
from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import World
from retention.engine import RunContext
from retention.ledger import Ledger
from retention.policy import PolicySet, load_policies
from retention.results import Mode

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
        return engine_context(
            self.engine,
            self.policies,
            now=NOW,
            pseudonym_key=PSEUDONYM_KEY,
            s3_client=self.s3_client,
            sftp_client=sftp_client or self.sftp_client,
            bucket=self.bucket,
            archive_root=self.archive_root,
            mode=mode,
            subject=subject,
            dry_run=dry_run,
            run=run_id,
            batch_size=50,
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
