"""A real Airflow API server (with the repository's plugins) on loopback, and a real Chromium to drive it.

The API server is the Airflow component that mounts plugin apps and serves the UI; the
page reads nothing else (no scheduler or DAG processor is needed to show the ledger). It
runs in a temporary ``AIRFLOW_HOME`` with SQLite metadata and is always stopped, also when
a test fails. Chromium is Debian's (``apt-get install chromium``), never a downloaded build.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api_server import ApiServer, airflow_env, api_server, migrate
from tests.integration.conftest import WorldEnv, world_env  # noqa: F401 - the reference world fixture

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def ledger_conn_json(engine: Any) -> str:
    """The world's PostgreSQL database as an Airflow connection (``AIRFLOW_CONN_RETENTION_LEDGER``)."""
    url = engine.url
    conn = {
        "conn_type": "postgres",
        "host": url.host,
        "port": url.port,
        "login": url.username,
        "schema": url.database,
    }
    if url.password:
        conn["password"] = url.password
    return json.dumps(conn)


def _settings(home: Path, ledger_conn: str) -> dict[str, str]:
    """This repository's DAGs and plugins, a SQLite metadata DB in ``home`` and the ledger connection."""
    return {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW_CONN_RETENTION_LEDGER": ledger_conn,
    }


@pytest.fixture
def airflow_server_for(tmp_path: Path) -> Iterator[Any]:
    """A function (ledger connection JSON, more settings, more users) -> a running ApiServer.

    The server's ``AIRFLOW_HOME`` is the parent of its log file; every server is stopped afterwards.
    """
    homes = iter(tmp_path / f"airflow-{n}" for n in range(100))
    with ExitStack() as servers:

        def start(
            ledger_conn: str, extra: Mapping[str, str] | None = None, users: Mapping[str, str] | None = None
        ) -> ApiServer:
            home = next(homes)
            home.mkdir(parents=True)
            settings = {**_settings(home, ledger_conn), **(extra or {})}
            migrate(home, airflow_env(home, settings))
            return servers.enter_context(api_server(home, settings, users))

        yield start


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (closed afterwards)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield instance
        finally:
            instance.close()
