"""Both DAGs end to end with ``dag.test()`` on the real services and the reference world.

Expectations come from the generator's ground truth and from reading the stores directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from harness.world import NOW, TABLES, Profile
from retention.ledger import Ledger
from tests.integration.conftest import POLICY_DIR, PSEUDONYM_KEY, WorldEnv
from tests.integration.test_engine_world import archive_files, s3_keys, table_ids


def _conn_json(engine: sa.Engine) -> str:
    url = engine.url
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "schema": url.database,
        }
    )


def relaxed_policies(tmp_path: Path) -> Path:
    """The shipped policies with caps opened up: these tests are about erasing, not approving."""
    folder = tmp_path / "policies"
    folder.mkdir()
    for f in POLICY_DIR.glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        doc["cap"] = {"max_items": 10_000_000, "max_fraction": 1.0}
        (folder / f.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
    return folder


@pytest.fixture
def airflow_world(
    world_env: WorldEnv, airflow_db: Any, s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorldEnv]:
    """The world wired into Airflow through connections and the settings variable, as in production."""
    receipts = s3_server.create_bucket(f"receipts-{world_env.bucket[-12:]}")
    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(world_env.engine))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETENTION_PSEUDONYM",
        json.dumps({"conn_type": "generic", "password": PSEUDONYM_KEY.decode()}),
    )
    monkeypatch.setenv(
        "AIRFLOW_VAR_RETENTION_SETTINGS",
        json.dumps(
            {
                "bucket_map": {"alleskar-documents": world_env.bucket},
                "archive_root": world_env.archive_root,
                "receipts_bucket": receipts,
                "policy_dir": str(relaxed_policies(tmp_path)),
            }
        ),
    )
    world_env.receipts_bucket = receipts  # type: ignore[attr-defined]
    yield world_env


def dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert not bag.import_errors
    return bag.dags[dag_id]


def test_nightly_run_erases_exactly_the_due_data(airflow_world: WorldEnv) -> None:
    env = airflow_world
    before = table_ids(env)
    expected = env.world.expected_after_nightly()
    run = dag("retention_nightly").test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    assert run.state == "success", run.state
    after = table_ids(env)
    for table in TABLES:
        assert after[table] == before[table] - expected[table]["deleted"], table
    assert not (env.world.s3_keys_expected_gone() & set(s3_keys(env)))
    assert not (env.world.archive_paths_expected_gone() & archive_files(env))
    assert Ledger(env.engine).verify_chain().ok


def _xcom(run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


def test_second_nightly_run_erases_nothing_and_says_so(airflow_world: WorldEnv) -> None:
    env = airflow_world
    nightly = dag("retention_nightly")
    assert nightly.test(run_conf={"dry_run": False, "as_of": NOW.isoformat()}).state == "success"
    after_first = table_ids(env)
    second = nightly.test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    assert second.state == "success"
    assert table_ids(env) == after_first
    summary = _xcom(second, "finish_nightly")
    assert summary["erased"] == 0 and summary["anonymised"] == 0 and summary["chain_ok"]
    # What is found again is only what legal holds keep.
    assert 0 < summary["located"] <= summary["kept"]
    ledger = Ledger(env.engine)
    assert any(e["outcome"] == "summary" and e["count"] == 0 for e in ledger.entries(run_id=second.run_id))


def test_dry_run_plans_and_touches_nothing(airflow_world: WorldEnv) -> None:
    env = airflow_world
    before = (table_ids(env), s3_keys(env), archive_files(env))
    ledger_before = Ledger(env.engine).count()
    run = dag("retention_nightly").test(run_conf={"dry_run": True, "as_of": NOW.isoformat()})
    assert run.state == "success"
    assert (table_ids(env), s3_keys(env), archive_files(env)) == before
    assert Ledger(env.engine).count() == ledger_before + 1  # only the run summary
    summary = _xcom(run, "finish_nightly")
    expected = env.world.expected_after_nightly()
    due_rows = sum(len(e["deleted"]) + len(e["anonymised"]) for e in expected.values())
    assert summary["dry_run"] and summary["erased"] == 0
    assert summary["located"] >= due_rows


def test_customer_erasure_dag_erases_the_customer_and_writes_the_receipt(airflow_world: WorldEnv) -> None:
    env, world = airflow_world, airflow_world.world
    cid = next(
        c for c in world.customers_with(Profile.ACTIVE) if world.customer_inventory(c).rows["invoices"]
    )
    inv = world.customer_inventory(cid)
    before = table_ids(env)
    conf = {
        "customer_id": str(cid),
        "request_ref": "PR-2026-00042",
        "reason": "erasure_request",
        "dry_run": False,
    }
    run = dag("customer_erasure").test(run_conf=conf)
    assert run.state == "success"
    after = table_ids(env)
    for table in ("contact_persons", "translation_jobs", "documents", "correspondence"):
        assert after[table] == before[table] - inv.rows[table], table
    assert inv.rows["invoices"] <= after["invoices"]
    assert not (set(inv.s3_objects) & set(s3_keys(env)))
    assert not (inv.archive_paths & archive_files(env))

    receipt = _xcom(run, "write_receipt")
    assert receipt["verified"] and receipt["request_ref"] == "PR-2026-00042"
    assert receipt["subject_ref"].startswith("psn:") and "customer_id" not in json.dumps(receipt)
    invoices = next(c for c in receipt["categories"] if c["category"] == "invoices")
    assert invoices["kept"][0]["count"] == len(inv.rows["invoices"])
    assert "Bogføringsloven" in invoices["kept"][0]["law"] and invoices["kept"][0]["until"] > "2026-06-15"
    docs = next(c for c in receipt["categories"] if c["category"] == "translation_documents")
    assert docs["erased"] == sum(inv.s3_objects.values()) + len(inv.archive_paths) + len(
        inv.rows["documents"]
    )
    stored = env.s3_client.get_object(Bucket=env.receipts_bucket, Key=receipt["location"]["json_key"])  # type: ignore[attr-defined]
    assert json.loads(stored["Body"].read())["totals"] == receipt["totals"]
    markdown = env.s3_client.get_object(Bucket=env.receipts_bucket, Key=receipt["location"]["markdown_key"])  # type: ignore[attr-defined]
    text = markdown["Body"].read().decode()
    assert "PR-2026-00042" in text and "Bogføringsloven" in text
    canaries = world.canaries(cid)
    assert canaries.name not in text and canaries.email not in text
