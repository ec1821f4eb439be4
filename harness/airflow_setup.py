"""Airflow for the demo: its home, environment, secrets and connections, its metadata DB, its processes.

Every component listens on 127.0.0.1 only, with SQLite metadata and the LocalExecutor; each
runs in its own process group, recorded in the demo's state file, logging under ``.demo/logs``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.demo_config import ADMIN, DOCUMENTS_BUCKET, RECEIPTS_BUCKET, REPO, DemoError, say
from harness.processes import STOP_TIMEOUT, ProcessRecord, State, terminate
from harness.server_process import LOOPBACK, free_port, log_tail

if TYPE_CHECKING:
    from harness.demo_stores import Stores

SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@dataclass(frozen=True)
class AirflowSetup:
    """Where Airflow runs and with what: home, port, environment."""

    home: Path
    logs: Path
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        """The UI's and the REST API's base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def password_file(self) -> Path:
        """Where the simple auth manager keeps the generated admin password."""
        return self.home / "simple_auth_manager_passwords.json.generated"


def airflow_env(
    home: Path,
    port: int,
    secrets_: Mapping[str, str],
    connections: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
) -> dict[str, str]:
    """The environment of every Airflow process: loopback only, SQLite metadata, our connections."""
    url = f"http://{LOOPBACK}:{port}"
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            # The demo's business clock is the world's (NOW), not today: a scheduled nightly run
            # would evaluate retention at today's date and queue ahead of the demo's own run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__FERNET_KEY": secrets_["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets_["jwt_secret"],
            "AIRFLOW_VAR_RETENTION_SETTINGS": json.dumps(dict(settings)),
        }
    )
    for conn_id, conn in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(dict(conn))
    return env


def make_secrets(demo_dir: Path) -> dict[str, str]:
    """Generate the pseudonym key, JWT secret and Fernet key once, into ``demo_dir/secrets.json`` (0600)."""
    values = {
        "pseudonym_key": secrets.token_urlsafe(32),
        "jwt_secret": secrets.token_urlsafe(64),
        "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "admin_password": secrets.token_urlsafe(12),
    }
    write_private(demo_dir / "secrets.json", json.dumps(values, indent=2))
    return values


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner may read (keys, the admin password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def setup_airflow(demo_dir: Path, stores: Stores, keys: Mapping[str, str]) -> AirflowSetup:
    """Airflow's home, logs directory, port and environment for this demo."""
    home, logs = demo_dir / "airflow", demo_dir / "logs"
    home.mkdir()
    logs.mkdir(exist_ok=True)
    port = free_port()
    connections = {
        "business_db": stores.business_conn,
        "docs_s3": json.loads(stores.s3.airflow_conn_json()),
        "archive_sftp": json.loads(stores.sftp.airflow_conn_json()),
        "retention_pseudonym": {"conn_type": "generic", "password": keys["pseudonym_key"]},
        # retention_housekeeping removes Airflow's own records of per-customer runs through it.
        "airflow_metadata": {"conn_type": "sqlite", "host": str(home / "airflow.db")},
    }
    settings = {
        "bucket_map": {DOCUMENTS_BUCKET: DOCUMENTS_BUCKET},
        "archive_root": stores.archive_root,
        "receipts_bucket": RECEIPTS_BUCKET,
    }
    env = airflow_env(home, port, keys, connections, settings)
    # Written before the API server starts, so the login is known; the auth manager keeps it.
    write_private(
        home / "simple_auth_manager_passwords.json.generated", json.dumps({ADMIN: keys["admin_password"]})
    )
    return AirflowSetup(home, logs, port, env)


def db_migrate(env: Mapping[str, str] | None, log: Path, *, timeout: float = 600.0) -> None:
    """``airflow db migrate`` with ``env`` (None: this process's), its output appended to ``log``.

    Raises ``DemoError`` quoting the tail of ``log`` when it fails (the tests' API server uses it too).
    """
    with log.open("ab") as out:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise DemoError(f"airflow db migrate exited with code {result.returncode}:\n{log_tail(log)}")


def airflow_components(port: int) -> dict[str, list[str]]:
    """The Airflow processes to start, with loopback-only arguments.

    The scheduler and the triggerer would start log servers on every interface; they are
    skipped: the API server reads the task logs from the same disk.
    """
    return {
        "api-server": ["api-server", "--host", LOOPBACK, "--port", str(port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }


def start_airflow(setup: AirflowSetup, state: State, demo_dir: Path) -> None:
    """Start every component in its own process group, logging under ``.demo/logs``."""
    for name, args in airflow_components(setup.port).items():
        with (setup.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env=setup.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state.processes.append(ProcessRecord.of(f"airflow {name}", proc.pid))


def stop_airflow(state: State, demo_dir: Path) -> None:
    """Stop every Airflow component (SIGTERM to its group, SIGKILL after ``STOP_TIMEOUT``)."""
    say("  stopping Airflow")
    hard = terminate([p for p in state.processes if p.name.startswith("airflow ")])
    if hard:
        say(f"  killed after {STOP_TIMEOUT:.0f} s: {', '.join(hard)}")
    say("  stopping the stores")
