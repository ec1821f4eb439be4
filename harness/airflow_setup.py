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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.demo_config import ADMIN, DOCUMENTS_BUCKET, RECEIPTS_BUCKET, REPO, DemoError, say
from harness.processes import STOP_TIMEOUT, ProcessRecord, State, terminate
from harness.server_process import LOOPBACK, ServerProcess, free_port, log_tail

if TYPE_CHECKING:
    from harness.demo_stores import Stores

SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FAB_AUTH = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
"""The auth manager of docker-compose.yaml: roles, and each DAG's ``access_control``."""


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
    """Generate the pseudonym and tombstone keys, JWT secret and Fernet key into ``demo_dir/secrets.json``."""
    values = {
        "pseudonym_key": secrets.token_urlsafe(32),
        "tombstone_key": secrets.token_urlsafe(32),
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
        # The key of the tombstones (whom to erase again after a restore): apart from the pseudonym key.
        "retention_tombstone_key": {"conn_type": "generic", "password": keys["tombstone_key"]},
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


# -- the FAB variant: Airflow's roles, as in docker-compose.yaml ------------------------------------


@dataclass(frozen=True)
class FabUser:
    """A user of the FAB auth manager and the roles given to them."""

    name: str
    password: str
    roles: tuple[str, ...]


class FabAirflow(ServerProcess):
    """An ``airflow api-server`` with the FAB auth manager on a metadata DB of its own.

    Set up as docker-compose.yaml's ``airflow-init`` does (migrate, then the retention roles),
    plus the given users, then the repository's DAGs are parsed, which syncs each DAG's
    ``access_control`` into the roles. No scheduler runs: a run that is created only waits.
    """

    ready_timeout = 180.0

    def __init__(self, workdir: Path, users: Sequence[FabUser]) -> None:
        super().__init__("airflow-fab", workdir, None)
        self.home = self.dir / "home"
        self.home.mkdir()
        self.users = tuple(users)
        self.env = fab_env(self.home, self.port)

    @property
    def url(self) -> str:
        """The REST API's and the UI's base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def metadata_db(self) -> Path:
        """The SQLite file of its metadata DB."""
        return self.home / "airflow.db"

    def start(self) -> None:
        """Migrate, sync the roles, create the users, parse the DAGs, start the API server, wait for it."""
        db_migrate(self.env, self.log_path)
        users = json.dumps(
            [{"name": u.name, "password": u.password, "roles": list(u.roles)} for u in self.users]
        )
        self._run(["-m", "retention_airflow.roles", "sync"])  # the command docker-compose runs
        self._run(["-c", "from harness.airflow_setup import fab_users as f; f()"], users)
        self._run(["-m", "airflow", "dags", "reserialize"])
        self._launch(
            [sys.executable, "-m", "airflow", "api-server", "--host", LOOPBACK, "--port", str(self.port)],
            env=self.env,
        )

    def token(self, user: FabUser) -> str:
        """A JWT for ``user`` from the FAB auth manager's ``/auth/token``."""
        import httpx

        body = {"username": user.name, "password": user.password}
        response = httpx.post(f"{self.url}/auth/token", json=body, timeout=30)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def _run(self, args: list[str], stdin: str = "") -> None:
        with self.log_path.open("ab") as out:
            result = subprocess.run(
                [sys.executable, *args],
                env=self.env,
                input=stdin.encode(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        if result.returncode != 0:
            raise DemoError(f"{args[-1]} exited with code {result.returncode}:\n{log_tail(self.log_path)}")

    def _ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        # the API server with FAB takes longer than ServerProcess's services to answer
        deadline = time.monotonic() + self.ready_timeout
        while not self._ready():
            if proc.poll() is not None:
                self._fail(f"the process exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"no answer within {self.ready_timeout:.0f} s")
            time.sleep(0.5)


def fab_env(home: Path, port: int) -> dict[str, str]:
    """The environment of a ``FabAirflow``: none of this process's Airflow settings; SQLite in ``home``."""
    url = f"http://{LOOPBACK}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
    )
    return env


def fab_users() -> None:
    """Create the users given as JSON on stdin, with roles that exist (``FabAirflow.start``)."""
    from airflow.configuration import conf
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    users = json.load(sys.stdin)
    conf.load_providers_configuration()
    with get_application_builder() as appbuilder:
        for user in users:
            roles = [appbuilder.sm.find_role(name) for name in user["roles"]]
            if None in roles:
                raise SystemExit(f"unknown role among {user['roles']}")
            added = appbuilder.sm.add_user(
                username=user["name"],
                first_name=user["name"],
                last_name="test",
                email=f"{user['name']}@example.invalid",
                role=roles,
                password=user["password"],
            )
            if not added:
                raise SystemExit(f"user {user['name']} was not created")
