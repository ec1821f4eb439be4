"""A real Airflow API server (with the repository's plugins) on loopback, and a real Chromium to drive it.

The API server is the Airflow component that mounts plugin apps and serves the UI; the
page reads nothing else (no scheduler or DAG processor is needed to show the ledger). It
runs in a temporary ``AIRFLOW_HOME`` with SQLite metadata and is always stopped, also when
a test fails. Chromium is Debian's (``apt-get install chromium``), never a downloaded build.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.services import LOOPBACK, free_port, log_tail
from tests.integration.conftest import WorldEnv, world_env  # noqa: F401 - the reference world fixture

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class AirflowServer:
    """A running API server: its address, admin password, JWT secret and log."""

    url: str
    home: Path
    password: str
    jwt_secret: str
    log: Path

    def token(self) -> str:
        """A JWT for the admin user from the simple auth manager's token endpoint."""
        credentials = {"username": "admin", "password": self.password}
        response = httpx.post(f"{self.url}/auth/token", json=credentials, timeout=30)
        response.raise_for_status()
        return str(response.json()["access_token"])


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


def _environment(home: Path, port: int, ledger_conn: str, jwt_secret: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://{LOOPBACK}:{port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW_CONN_RETENTION_LEDGER": ledger_conn,
        }
    )
    return env


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and every worker it started (its own process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


def start_airflow(home: Path, ledger_conn: str) -> tuple[subprocess.Popen[bytes], AirflowServer]:
    """Migrate the metadata database, start ``airflow api-server`` and wait until it answers."""
    home.mkdir(parents=True, exist_ok=True)
    port, secret = free_port(), secrets.token_urlsafe(64)
    env = _environment(home, port, ledger_conn, secret)
    log = home / "api-server.log"
    with log.open("ab") as out:
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    if migrate.returncode != 0:
        pytest.fail(f"airflow db migrate exited with {migrate.returncode}:\n{log_tail(log)}")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--host", LOOPBACK, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(
                f"the Airflow API server did not come up within {READY_TIMEOUT:.0f} s:\n{log_tail(log)}"
            )
        time.sleep(0.5)
    passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    return proc, AirflowServer(url, home, passwords["admin"], secret, log)


@pytest.fixture
def airflow_server_for(tmp_path: Path) -> Iterator[Any]:
    """A function (ledger connection JSON) -> a running AirflowServer; every server is stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(ledger_conn: str) -> AirflowServer:
        proc, server = start_airflow(tmp_path / f"airflow-{len(started)}", ledger_conn)
        started.append(proc)
        return server

    try:
        yield start
    finally:
        for proc in started:
            _stop(proc)


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
