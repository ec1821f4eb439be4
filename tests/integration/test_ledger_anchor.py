"""The anchored ledger on real PostgreSQL and moto's S3 server: anchors written (write-once where the
bucket locks), and tails truncated or rewritten by someone who switched the append-only trigger off."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError
from sqlalchemy import Engine

from harness.world_rules import NOW
from retention import anchor
from retention.anchor import AnchorStore, check_against_anchor
from retention.ledger import Ledger
from tests.integration.conftest import WorldEnv
from tests.integration.test_dags import airflow_world, dag  # noqa: F401 - airflow_world is a fixture
from tests.integration.test_ledger_pg import make_entry
from tests.unit.test_anchor import rewrite_from

RUN = "scheduled__2026-05-01T02:00:00+00:00"


@pytest.fixture
def ledger(fresh_db: Engine) -> Ledger:
    ledger = Ledger(fresh_db)
    ledger.ensure_schema()
    ledger.append_many([make_entry(i) for i in range(1, 9)])
    return ledger


def attacker(engine: Engine, *statements: str, **params: Any) -> None:
    """Run ``statements`` with every trigger of the ledger off, as its owner or a superuser could."""
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE retention_ledger DISABLE TRIGGER ALL"))
        for statement in statements:
            conn.execute(sa.text(statement), params)
        conn.execute(sa.text("ALTER TABLE retention_ledger ENABLE TRIGGER ALL"))


def truncate(engine: Engine, keep: int) -> None:
    attacker(
        engine,
        "DELETE FROM retention_ledger WHERE seq > :k",
        "UPDATE retention_ledger_head SET last_seq = :k, "
        "last_hash = (SELECT entry_hash FROM retention_ledger WHERE seq = :k)",
        k=keep,
    )


def test_a_truncated_tail_with_a_rewritten_head_fails_against_the_anchor(
    ledger: Ledger, fresh_db: Engine, s3_client: Any, s3_bucket: str
) -> None:
    store = AnchorStore(s3_client, s3_bucket)
    published = anchor.publish(store, ledger, RUN)
    assert published is not None and published.seq == 8
    assert store.latest() == published
    truncate(fresh_db, 5)
    assert ledger.verify_chain().ok  # the chain alone says intact
    problem = check_against_anchor(ledger, published)
    assert problem is not None and "entry 8" in problem


def test_a_consistently_rewritten_tail_fails_against_the_anchor(
    ledger: Ledger, fresh_db: Engine, s3_client: Any, s3_bucket: str
) -> None:
    store = AnchorStore(s3_client, s3_bucket)
    published = anchor.publish(store, ledger, RUN)
    assert published is not None
    with fresh_db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE retention_ledger DISABLE TRIGGER ALL"))
    rewrite_from(fresh_db, 6)
    assert ledger.verify_chain().ok
    latest = store.latest()
    assert latest is not None
    problem = check_against_anchor(ledger, latest)
    assert problem is not None and "entry 8 has another hash" in problem


def test_anchors_in_a_locking_bucket_are_write_once(ledger: Ledger, s3_server: Any, s3_client: Any) -> None:
    bucket = s3_server.create_bucket(f"anchors-{uuid.uuid4().hex[:16]}", object_lock=True)
    store = AnchorStore(s3_client, bucket)
    assert store.locked()
    first = anchor.publish(store, ledger, RUN)
    ledger.append(make_entry(9))
    second = anchor.publish(store, ledger, "manual__2026-05-02")
    assert first is not None and second is not None and store.latest() == second
    listed = s3_client.list_object_versions(Bucket=bucket, Prefix=anchor.ANCHOR_PREFIX)["Versions"]
    assert len(listed) == 2
    for version in listed:
        head = s3_client.head_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        with pytest.raises(ClientError):
            s3_client.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])


def test_a_plain_bucket_gets_plain_anchors(ledger: Ledger, s3_client: Any, s3_bucket: str) -> None:
    store = AnchorStore(s3_client, s3_bucket)
    assert not store.locked()
    assert store.latest() is None
    key = store.write(anchor.head_anchor(ledger, RUN, s3_bucket) or pytest.fail("no head"))
    assert "ObjectLockMode" not in s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert json.loads(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())["seq"] == 8


def _asset_extras() -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "retention_ledger")
            .order_by(AssetEvent.id)
            .all()
        )
    return [dict(r[0] or {}) for r in rows]


@pytest.mark.long  # two nightly runs (~70 s)
def test_a_nightly_run_after_the_ledger_was_truncated_fails(airflow_world: WorldEnv) -> None:  # noqa: F811
    env = airflow_world
    bucket: str = env.receipts_bucket  # type: ignore[attr-defined]
    nightly = dag("retention_nightly")
    for t in nightly.tasks:
        t.retries = 0
    conf = {"dry_run": False, "as_of": NOW.isoformat()}
    assert nightly.test(run_conf=conf).state == "success"
    ledger = Ledger(env.engine)
    head = ledger.head()
    assert head is not None
    latest = AnchorStore(env.s3_client, bucket).latest()
    assert latest is not None and (latest.seq, latest.entry_hash) == head
    event = [e["anchor"] for e in _asset_extras() if e.get("anchor", {}).get("bucket") == bucket]
    assert event and event[-1]["seq"] == head[0]

    truncate(env.engine, head[0] - 2)
    assert ledger.verify_chain().ok
    second = nightly.test(run_conf=conf)
    assert second.state == "failed"
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states["finish_nightly"] == "failed"
    summary = next(e for e in ledger.entries(run_id=second.run_id) if e["action"] == "run")
    assert summary["detail"]["chain_ok"] is False  # verify_chain alone passes: the anchor failed it
    assert AnchorStore(env.s3_client, bucket).latest() == latest  # nothing anchored over the tampered chain
