"""An ``airflow api-server`` on a free loopback port that shares the test session's metadata DB.

Tests that run a DAG with ``dag.test()`` in the pytest process answer its approvals, or
trigger runs, through this server's public REST API, as an operator would. The server runs
in the session's ``AIRFLOW_HOME`` (same SQLite file, same DAG and plugin folders), in its
own process group, and is always stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.airflow_setup import db_migrate
from harness.server_process import LOOPBACK, free_port, log_tail

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
ADMIN = "admin"


@dataclass(frozen=True)
class ApiServer:
    """A running API server: its base URL, the admin's password, its log file and JWT secret."""

    url: str
    password: str
    log: Path
    jwt_secret: str
    passwords: Mapping[str, str] = field(default_factory=dict)
    """Every simple-auth-manager user's password, the admin's included."""

    def token(self) -> str:
        """A JWT for the admin user from the simple auth manager's ``/auth/token``."""
        response = httpx.post(
            f"{self.url}/auth/token", json={"username": ADMIN, "password": self.password}, timeout=30
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client on ``/api/v2`` that sends the admin's bearer token."""
        return httpx.Client(
            base_url=f"{self.url}/api/v2",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=timeout,
        )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and the workers it forked (its own process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


def airflow_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for an ``airflow`` command in ``home``, with ``extra`` on top."""
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(home)
    # the api-server starts `airflow` subprocesses (its workers) by name
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def migrate(home: Path, env: Mapping[str, str] | None = None) -> None:
    """``airflow db migrate`` for ``home`` (with ``env``, else this process's environment); fail loudly."""
    try:
        db_migrate(env, home / "db-migrate.log", timeout=300)
    except RuntimeError as e:
        pytest.fail(str(e))


@contextmanager
def api_server(
    home: Path, extra_env: Mapping[str, str] | None = None, users: Mapping[str, str] | None = None
) -> Iterator[ApiServer]:
    """Start ``airflow api-server`` on the already migrated metadata DB of ``home``; stop it on exit.

    ``extra_env`` is added to the server's environment (folders, connections, settings);
    ``users`` (name -> simple-auth-manager role) are added to the admin.
    """
    port, secret = free_port(), secrets.token_urlsafe(64)
    roles = {ADMIN: "admin", **(users or {})}
    url = f"http://{LOOPBACK}:{port}"
    server = {
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{name}:{role}" for name, role in roles.items()
        ),
    }
    env = airflow_env(home, {**(extra_env or {}), **server})
    log = home / f"api-server-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--host", LOOPBACK, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the Airflow API server did not come up within {READY_TIMEOUT:.0f} s:\n{log_tail(log)}"
                )
            time.sleep(0.5)
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        yield ApiServer(url, passwords[ADMIN], log, secret, passwords)
    finally:
        _stop(proc)


def serialize_dags() -> None:
    """Parse every DAG bundle and write its DAGs to the metadata DB, as ``airflow dags reserialize`` does."""
    from airflow.dag_processing.bundles.base import unpack_bundle_version
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        if bag.import_errors:
            pytest.fail(f"DAG import errors in bundle {bundle.name}: {sorted(bag.import_errors)}")
        version, version_data = unpack_bundle_version(bundle.get_current_version(), bundle)
        sync_bag_to_db(bag, bundle.name, bundle_version=version, version_data=version_data)


def fail_parked_tasks(dag_id: str) -> list[str]:
    """Set every task instance of ``dag_id`` parked in ``awaiting_input`` to failed; return their ids.

    The way out of ``dag.test()`` when no answer came: it waits for human input forever,
    and a failed DAG-run state alone would be recomputed as running.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        parked: list[Any] = list(
            session.query(TaskInstance).filter(
                TaskInstance.dag_id == dag_id, TaskInstance.state == TaskInstanceState.AWAITING_INPUT
            )
        )
        for ti in parked:
            ti.state = TaskInstanceState.FAILED
        return [f"{ti.task_id}[{ti.map_index}]" for ti in parked]
