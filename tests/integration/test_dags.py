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

from harness.world import NOW, TABLES
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
