"""The one-command demo: local stores, a reference world, Airflow on loopback and two real runs.

``python -m harness.demo start`` (``make demo``) cleans up any earlier demo, starts the
harness's S3 (moto) and SFTP (OpenSSH) servers and the business database (an embedded
SQLite file by default, ``--business-db postgres`` for the harness's PostgreSQL), generates
the demo-sized reference world, starts Airflow (api-server, scheduler, dag-processor,
triggerer: all on 127.0.0.1, SQLite metadata, LocalExecutor) and runs the nightly
retention DAG and one customer's erasure through the REST API. It prints a summary from
the ledger (per category and store: erased, anonymised, kept and why, verified), the
erasure receipt and where to look in the UI, then keeps everything running until Ctrl-C
or ``python -m harness.demo stop`` (``make demo-stop``); ``--once`` stops at once instead.

Categories over their blast-radius cap wait for a human in the UI's *Required actions*;
the demo waits for that answer (``--approval-wait`` seconds) and only with ``--approve``
answers *Approve* itself, through the HITL REST API.

Everything lives in ``.demo/`` of the repository (gitignored): logs, keys, the Airflow home
and ``state.json``, which names every process the demo started (pid and start time, so a
pid reused by another program is never signalled).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from harness.services import LOOPBACK, free_port, log_tail, start_postgres, start_s3, start_sftp  # noqa: E402
from harness.world import NOW, Fate, Profile, World, WorldSize, generate  # noqa: E402

DEMO_DIR = REPO / ".demo"
MARKER = ".alleskar-demo"
"""A file in the demo directory: only a directory holding it is ever emptied."""
STATE = "state.json"

DOCUMENTS_BUCKET = "alleskar-documents"
RECEIPTS_BUCKET = "alleskar-privacy-receipts"
REQUEST_REF = "PR-2026-00042"
NIGHTLY = "retention_nightly"
ERASURE = "customer_erasure"
ADMIN = "admin"
POOLS_SQLITE = {"retention_database": 1, "retention_s3": 4, "retention_sftp": 2}
"""SQLite has one writer at a time: one database task at a time avoids lock waits."""
POOLS_POSTGRES = {"retention_database": 4, "retention_s3": 4, "retention_sftp": 2}

AIRFLOW_READY_TIMEOUT = 240.0
RUN_TIMEOUT = 900.0
POLL = 2.0
STOP_TIMEOUT = 30.0
FINISHED = ("success", "failed")
APPROVE_AFTER = 5.0
"""Seconds ``--approve`` lets pass between seeing an approval request and answering it."""
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


class Stopped(Exception):
    """SIGTERM (``demo stop``) or SIGINT (Ctrl-C) arrived."""


def say(message: str) -> None:
    """Print one line of progress at once (output is often piped through make)."""
    print(message, flush=True)


# --------------------------------------------------------------------------- demo directory and processes


def prepare_demo_dir(path: Path) -> Path:
    """Empty ``path`` (only if it is a demo directory or empty) and mark it as the demo's; return it."""
    if path.exists():
        if not path.is_dir():
            raise DemoError(f"{path} exists and is not a directory; remove it first")
        if any(path.iterdir()) and not (path / MARKER).exists():
            raise DemoError(f"{path} is not empty and was not made by the demo; remove it first")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by python -m harness.demo; emptied by the next start\n")
    return path


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (from /proc); None if it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields after the last ')' are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    """A process the demo started: name, pid, start time; ``group`` if it leads its own process group."""

    name: str
    pid: int
    start_time: int
    group: bool = True

    @classmethod
    def of(cls, name: str, pid: int, *, group: bool = True) -> ProcessRecord:
        """Record a running process (its start time is read now)."""
        start = process_start_time(pid)
        if start is None:
            raise DemoError(f"{name} (pid {pid}) exited at once")
        return cls(name, pid, start, group)

    def alive(self) -> bool:
        """Whether this very process still runs (not another one that reuses the pid)."""
        return process_start_time(self.pid) == self.start_time

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (to its group if it leads one), if it is still this process."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.group and os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)


def terminate(records: Sequence[ProcessRecord], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM the processes, wait up to ``timeout`` s, SIGKILL what is left; return the names killed hard."""
    for record in records:
        record.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(r.alive() for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
    hard = [r.name for r in records if r.alive()]
    for record in records:
        record.signal(signal.SIGKILL)
    return hard


@dataclass
class State:
    """What ``stop`` and ``status`` need to know about a demo (``.demo/state.json``)."""

    main: ProcessRecord | None = None
    processes: list[ProcessRecord] = field(default_factory=list)
    postgres_cluster: str | None = None
    url: str | None = None
    phase: str = "starting"

    def save(self, demo_dir: Path) -> None:
        """Write the state atomically."""
        data = {
            "main": None if self.main is None else vars(self.main),
            "processes": [vars(p) for p in self.processes],
            "postgres_cluster": self.postgres_cluster,
            "url": self.url,
            "phase": self.phase,
        }
        tmp = demo_dir / f"{STATE}.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(demo_dir / STATE)

    @classmethod
    def load(cls, demo_dir: Path) -> State | None:
        """The saved state, or None if there is none (or it is unreadable)."""
        try:
            data = json.loads((demo_dir / STATE).read_text())
            return cls(
                main=None if data["main"] is None else ProcessRecord(**data["main"]),
                processes=[ProcessRecord(**p) for p in data["processes"]],
                postgres_cluster=data.get("postgres_cluster"),
                url=data.get("url"),
                phase=data.get("phase", "?"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def stop_demo(demo_dir: Path = DEMO_DIR, timeout: float = 60.0) -> bool:
    """Stop a running demo: ask its main process, then end whatever it left; True if anything ran."""
    state = State.load(demo_dir)
    if state is None:
        return False
    ran = False
    main = state.main
    if main is not None and main.pid != os.getpid() and main.alive():
        ran = True
        main.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while main.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    leftovers = [p for p in state.processes if p.alive()]
    if leftovers:
        ran = True
        terminate(leftovers, timeout=10.0)
    _remove_cluster(state.postgres_cluster)
    return ran


def _remove_cluster(path: str | None) -> None:
    # Only the harness's own temp cluster directories, whatever the state file says.
    if not path:
        return
    cluster = Path(path)
    if cluster.parent == Path(tempfile.gettempdir()) and cluster.name.startswith("alleskar-pg-"):
        shutil.rmtree(cluster, ignore_errors=True)


# --------------------------------------------------------------------------- stores and the world


@dataclass
class Stores:
    """The running stores and how Airflow reaches them."""

    business_url: str
    business_conn: dict[str, Any]
    s3: Any
    sftp: Any
    archive_root: str


def _service_pid(server: Any) -> int:
    # The harness keeps the Popen private; the demo needs its pid only for the state file.
    return int(server._proc.pid)


def start_stores(stack: ExitStack, demo_dir: Path, business_db: str, state: State) -> Stores:
    """Start S3, SFTP and (for ``postgres``) PostgreSQL; create the SQLite file path otherwise."""
    services = demo_dir / "services"
    s3 = stack.enter_context(start_s3(services))
    state.processes.append(ProcessRecord.of("s3 (moto)", _service_pid(s3)))
    sftp = stack.enter_context(start_sftp(services))
    state.processes.append(ProcessRecord.of("sftp (sshd)", _service_pid(sftp)))
    say(f"  S3 (moto) on {s3.endpoint_url}, SFTP (OpenSSH) on {LOOPBACK}:{sftp.port}")
    if business_db == "postgres":
        pg = stack.enter_context(start_postgres(services, fast=True))
        state.processes.append(ProcessRecord.of("postgres", _service_pid(pg)))
        state.postgres_cluster = str(pg.cluster_dir)
        say(f"  business database: PostgreSQL on {LOOPBACK}:{pg.port}")
        return Stores(pg.url, json.loads(pg.airflow_conn_json()), s3, sftp, str(sftp.archive_root))
    path = demo_dir / "business.sqlite"
    say(f"  business database: SQLite file {path.relative_to(REPO)}")
    return Stores(f"sqlite:///{path}", sqlite_conn(path), s3, sftp, str(sftp.archive_root))


def sqlite_conn(path: Path) -> dict[str, Any]:
    """An Airflow sqlite connection on ``path``; SqliteHook passes the extra on as ``?timeout=30``."""
    return {"conn_type": "sqlite", "host": str(path), "extra": {"timeout": "30"}}


@contextlib.contextmanager
def sftp_session(server: Any) -> Iterator[Any]:
    """A paramiko SFTPClient on the harness server that verifies the server's host key."""
    import paramiko

    kind, blob = server.host_key_line.split()[:2]
    host_key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    transport = paramiko.Transport((server.host, server.port))
    try:
        transport.connect(
            hostkey=host_key,
            username=server.login,
            pkey=paramiko.Ed25519Key.from_private_key_file(str(server.client_key_path)),
        )
        client = paramiko.SFTPClient.from_transport(transport)
        if client is None:
            raise DemoError("the SFTP server refused the sftp subsystem")
        with client:
            yield client
    finally:
        transport.close()


def make_world(stores: Stores) -> World:
    """Generate the demo-sized reference world into the three stores (progress on stderr)."""
    engine = sa.create_engine(stores.business_url)
    try:
        with sftp_session(stores.sftp) as sftp:
            world = generate(
                engine,
                s3_client=stores.s3.client(),
                bucket=stores.s3.create_bucket(DOCUMENTS_BUCKET),
                sftp_client=sftp,
                archive_root=stores.archive_root,
                size=WorldSize.demo(),
                progress=True,
            )
        if engine.dialect.name == "sqlite":
            # WAL lets the monitoring page and the plan tasks read while a task writes.
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()
    stores.s3.create_bucket(RECEIPTS_BUCKET)
    return world


def choose_customer(world: World) -> int:
    """A customer with invoices the law keeps, documents in S3 and the archive, and no legal hold.

    An active customer has nothing due tonight, so the nightly run leaves all of it and the
    erasure shows every store and a statutory keep.
    """
    not_due_invoices = world.ids("invoices", Fate.NOT_DUE)
    for cid in world.customers_with(Profile.ACTIVE):
        inventory = world.customer_inventory(cid)
        if inventory.rows["invoices"] & not_due_invoices and inventory.archive_paths:
            return cid
    raise DemoError("the world has no active customer with invoices and archived documents")


# --------------------------------------------------------------------------- Airflow


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


def migrate(setup: AirflowSetup) -> None:
    """``airflow db migrate`` into the demo's SQLite metadata database."""
    log = setup.logs / "db-migrate.log"
    with log.open("ab") as out:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=setup.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
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
        state.save(demo_dir)


class AirflowApi:
    """The REST API of the demo's Airflow, as the admin user."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        self._password = password
        self._client = httpx.Client(base_url=url, timeout=30)
        self._token: str | None = None

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API (logging in first, again when the token expired); the JSON answer."""
        for _attempt in range(2):
            if self._token is None:
                answer = self._client.post(
                    "/auth/token", json={"username": ADMIN, "password": self._password}
                )
                answer.raise_for_status()
                self._token = str(answer.json()["access_token"])
            response = self._client.request(
                method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs
            )
            if response.status_code != 401:
                break
            self._token = None
        if response.status_code >= 400:
            raise DemoError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def healthy(self) -> dict[str, str]:
        """Component -> status from ``/api/v2/monitor/health`` ({} while the API server is not up)."""
        try:
            data = self._client.get("/api/v2/monitor/health").json()
        except (httpx.HTTPError, ValueError):
            return {}
        return {k: str(v.get("status")) for k, v in data.items() if isinstance(v, dict)}


def wait_for_airflow(api: AirflowApi, state: State, setup: AirflowSetup) -> None:
    """Wait until every component is healthy and both DAGs are parsed; fail early if one exits."""
    deadline = time.monotonic() + AIRFLOW_READY_TIMEOUT
    last = ""
    while True:
        for record in state.processes:
            if record.name.startswith("airflow ") and not record.alive():
                log = setup.logs / f"{record.name.removeprefix('airflow ')}.log"
                raise DemoError(f"{record.name} exited; last lines of {log}:\n{log_tail(log)}")
        health = api.healthy()
        status = ", ".join(f"{k} {v}" for k, v in sorted(health.items())) or "api-server starting"
        if status != last:
            say(f"  {status}")
            last = status
        if health and all(v == "healthy" for v in health.values()) and _dags_parsed(api):
            return
        if time.monotonic() > deadline:
            raise DemoError(
                f"Airflow was not ready within {AIRFLOW_READY_TIMEOUT:.0f} s (logs in {setup.logs})"
            )
        time.sleep(POLL)


def _dags_parsed(api: AirflowApi) -> bool:
    errors = api.request("GET", "/api/v2/importErrors")
    if errors.get("total_entries"):
        first = errors["import_errors"][0]
        raise DemoError(f"a DAG file does not import: {first.get('filename')}:\n{first.get('stack_trace')}")
    found = {d["dag_id"] for d in api.request("GET", "/api/v2/dags", params={"limit": 100})["dags"]}
    return {NIGHTLY, ERASURE} <= found


def prepare_dags(api: AirflowApi, pools: Mapping[str, int]) -> None:
    """Create the pools and unpause both DAGs."""
    for name, slots in pools.items():
        body = {"name": name, "slots": slots, "description": "retention demo", "include_deferred": False}
        try:
            api.request("POST", "/api/v2/pools", json=body)
        except DemoError:
            api.request("PATCH", f"/api/v2/pools/{name}", json=body)
    for dag_id in (NIGHTLY, ERASURE):
        api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})


# --------------------------------------------------------------------------- runs


@dataclass
class RunOutcome:
    """How a run ended for the demo: its id, its state, the approvals still waiting."""

    dag_id: str
    run_id: str
    state: str
    waiting: list[str] = field(default_factory=list)


def trigger(api: AirflowApi, dag_id: str, conf: Mapping[str, Any]) -> str:
    """Trigger a run now with ``conf``; its run id."""
    run = api.request(
        "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf)}
    )
    return str(run["dag_run_id"])


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def task_states(api: AirflowApi, dag_id: str, run_id: str) -> tuple[dict[str, int], list[str]]:
    """How many task instances of the run are in each state, and the names of the running ones."""
    data = api.request("GET", f"{_run_path(dag_id, run_id)}/taskInstances", params={"limit": 1000})
    counts: dict[str, int] = {}
    running: list[str] = []
    categories = list(policy_stores())
    for ti in data["task_instances"]:
        state = ti.get("state") or "waiting"
        counts[state] = counts.get(state, 0) + 1
        if state == "running":
            index = int(ti.get("map_index", -1))
            where = f"[{categories[index]}]" if 0 <= index < len(categories) else ""
            running.append(f"{ti['task_id']}{where}")
    return counts, sorted(running)


def pending_approvals(api: AirflowApi, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's human-in-the-loop requests that have no answer yet."""
    data = api.request("GET", f"{_run_path(dag_id, run_id)}/hitlDetails", params={"limit": 100})
    return [d for d in data.get("hitl_details", []) if not d.get("response_received")]


def approve(api: AirflowApi, dag_id: str, run_id: str, detail: Mapping[str, Any]) -> None:
    """Answer one approval request with *Approve* (only with ``--approve``)."""
    ti = detail["task_instance"]
    path = f"{_run_path(dag_id, run_id)}/taskInstances/{ti['task_id']}/{ti['map_index']}/hitlDetails"
    api.request("PATCH", path, json={"chosen_options": ["Approve"], "params_input": {}})


def progress_line(
    label: str, run_state: str, states: tuple[Mapping[str, int], Sequence[str]], elapsed: float
) -> str:
    """One progress line: the run's state, finished of total tasks, what the others do, what runs."""
    counts, running = states
    total = sum(counts.values())
    done = sum(
        n for s, n in counts.items() if s in ("success", "failed", "skipped", "upstream_failed", "removed")
    )
    others = ", ".join(
        f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()) if s not in ("success", "skipped")
    )
    detail = f" ({others})" if others else ""
    now = f"; running: {', '.join(running)}" if 0 < len(running) <= 3 else ""
    return f"  {label} {run_state}: {done}/{total} tasks finished{detail}, {elapsed:.0f} s{now}"


def follow(
    api: AirflowApi,
    dag_id: str,
    run_id: str,
    *,
    label: str,
    on_approvals: Callable[[list[dict[str, Any]]], bool] | None = None,
    timeout: float | None = RUN_TIMEOUT,
    quiet: bool = False,
) -> RunOutcome:
    """Poll the run until it ends, printing progress (none when ``quiet``).

    ``on_approvals`` gets the unanswered approval requests of each poll; when it returns False
    the wait ends and the run goes on in Airflow without the demo watching.
    """
    start = last_print = time.monotonic()
    last = ""
    while True:
        run = api.request("GET", _run_path(dag_id, run_id))
        line = progress_line(label, run["state"], task_states(api, dag_id, run_id), time.monotonic() - start)
        if run["state"] in FINISHED:
            say(line)
            return RunOutcome(dag_id, run_id, run["state"])
        if not quiet and (_without_time(line) != _without_time(last) or time.monotonic() - last_print > 15):
            say(line)
            last, last_print = line, time.monotonic()
        waiting = pending_approvals(api, dag_id, run_id) if on_approvals else []
        if on_approvals and waiting and not on_approvals(waiting):
            return RunOutcome(dag_id, run_id, run["state"], [str(d.get("subject")) for d in waiting])
        if timeout is not None and time.monotonic() - start > timeout:
            raise DemoError(f"{label} did not finish within {timeout:.0f} s")
        time.sleep(POLL if not quiet else 5 * POLL)


def _without_time(line: str) -> str:
    return re.sub(r", \d+ s", "", line)


def _ti_key(detail: Mapping[str, Any]) -> tuple[str, int]:
    return str(detail["task_instance"]["task_id"]), int(detail["task_instance"]["map_index"])


class ApprovalPolicy:
    """What the demo does when categories wait for approval: answer (``--approve``) or wait for a human."""

    def __init__(self, api: AirflowApi, run_id: str, *, auto: bool, wait: float, password: str) -> None:
        self.api, self.run_id, self.auto, self.wait = api, run_id, auto, wait
        self._password = password
        self._first_seen: dict[tuple[str, int], float] = {}
        self._answered: set[tuple[str, int]] = set()

    def __call__(self, waiting: list[dict[str, Any]]) -> bool:
        """Handle the unanswered requests; False once a human had ``wait`` seconds and did not answer."""
        now = time.monotonic()
        for detail in waiting:
            key = _ti_key(detail)
            if key not in self._first_seen:
                self._first_seen[key] = now
                what = "approval requested" if self.auto else "waits for a human"
                say(f"  {what}: {detail.get('subject')}")
                if not self.auto and len(self._first_seen) == 1:
                    self._explain()
            # Answered like a human, a few seconds later: an answer within moments of the task
            # parking races Airflow 3.3.2's executor event for it, and the scheduler fails the task.
            if self.auto and key not in self._answered and now - self._first_seen[key] >= APPROVE_AFTER:
                approve(self.api, NIGHTLY, self.run_id, detail)
                self._answered.add(key)
                say(f"  approved automatically (--approve): {detail.get('subject')}")
        return self.auto or now - min(self._first_seen.values()) < self.wait

    def _explain(self) -> None:
        say(
            "  A category over its blast-radius cap waits for a human: open "
            f"{self.api.url}/required_actions\n"
            f"  (login {ADMIN} / {self._password}) and choose Approve or Reject. The demo waits up to "
            f"{self.wait:.0f} s,\n  then goes on; `make demo DEMO_ARGS=--approve` approves by itself."
        )


def xcom_value(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> Any:
    """The return value of a task of the run (None if it has none)."""
    try:
        data = api.request(
            "GET", f"{_run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        )
    except DemoError:
        return None
    return data.get("value")


# --------------------------------------------------------------------------- summary


KEPT_LABELS = {"legal_hold": "legal hold", "object_lock": "storage lock"}


@dataclass
class Cell:
    """What one run did in one category and store, from the ledger."""

    erased: int = 0
    anonymised: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    kept_until: dict[str, str] = field(default_factory=dict)
    failed: int = 0
    verified: bool | None = None
    """True: looked again and found nothing; False: something was left; None: not verified."""
    note: str = ""

    def add_kept(self, reason: str, count: int, until: str | None) -> None:
        """Add ``count`` records kept for ``reason`` (latest until-date wins)."""
        self.kept[reason] = self.kept.get(reason, 0) + count
        if until and until > self.kept_until.get(reason, ""):
            self.kept_until[reason] = until


def ledger_cells(
    entries: Iterable[Mapping[str, Any]], stores: Mapping[str, Sequence[str]]
) -> dict[tuple[str, str], Cell]:
    """Category x store -> Cell from one run's ledger entries (``stores``: category -> stores, in order)."""
    cells = {(c, s): Cell() for c, ss in stores.items() for s in ss}
    held_in_db: dict[tuple[str, str], int] = {}
    for e in sorted(entries, key=lambda e: int(e["seq"])):
        category, store = str(e.get("category")), str(e.get("store"))
        if store == "*" and category in stores:
            _approval(cells, stores[category], category, e["outcome"])
        elif (category, store) in cells:
            _account(cells[(category, store)], e)
            if store == "database" and e["outcome"] in ("verified", "verify_failed"):
                # Held rows are never located, so looking again is where they are counted.
                held = int((e.get("detail") or {}).get("kept") or 0)
                held_in_db[(category, store)] = max(held_in_db.get((category, store), 0), held)
    for key, held in held_in_db.items():
        # as the engine's step summary does: the larger of the two views of the held rows
        most = max(cells[key].kept.get("legal_hold", 0), held)
        if most:
            cells[key].kept["legal_hold"] = most
    return cells


def _account(cell: Cell, e: Mapping[str, Any]) -> None:
    """Add one ledger entry's outcome to its cell."""
    outcome, count = e["outcome"], int(e.get("count") or 0)
    if outcome == "erased":
        cell.erased += count
    elif outcome == "anonymised":
        cell.anonymised += count
    elif outcome == "kept":
        cell.add_kept(str(e.get("reason") or "kept"), count, e.get("until"))
    elif outcome == "failed":
        cell.failed += count
    elif outcome in ("verified", "verify_failed"):
        cell.verified = cell.verified is not False and outcome == "verified"
    elif outcome == "skipped":
        cell.note = f"not erased: {e.get('reason')}"


def _approval(cells: dict[tuple[str, str], Cell], stores: Sequence[str], category: str, outcome: str) -> None:
    note = {
        "approval_requested": "over its cap: waits for approval",
        "approved": "over its cap: approved",
        "rejected": "over its cap: rejected, nothing erased",
        "skipped": "over its cap: no answer, nothing erased",
    }.get(outcome)
    if note is None:
        return
    for store in stores:
        cell = cells[(category, store)]
        if not cell.note.startswith("not erased"):
            cell.note = note


def _why(cell: Cell) -> str:
    parts = []
    for reason, n in sorted(cell.kept.items()):
        until = cell.kept_until.get(reason)
        parts.append(f"{n} {KEPT_LABELS.get(reason, reason)}" + (f" until {until[:10]}" if until else ""))
    if cell.note:
        parts.append(cell.note)
    return "; ".join(parts)


def render_table(cells: Mapping[tuple[str, str], Cell]) -> str:
    """A plain-text table: category, store, erased, anonymised, kept, verified, and why kept / notes."""
    head = ("category", "store", "erased", "anonymised", "kept", "verified", "kept because / note")
    rows = [
        (
            category,
            store,
            str(c.erased),
            str(c.anonymised),
            str(sum(c.kept.values())),
            {True: "yes", False: "NO", None: "-"}[c.verified],
            _why(c),
        )
        for (category, store), c in cells.items()
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    right = {2, 3, 4}

    def line(row: Sequence[str]) -> str:
        cols = [row[i].rjust(w) if i in right else row[i].ljust(w) for i, w in enumerate(widths)]
        return "  ".join([*cols, row[-1]]).rstrip()

    rule = "  ".join("-" * w for w in widths) + "  " + "-" * len(head[-1])
    totals = ("total", "", *(str(sum(int(r[i]) for r in rows)) for i in (2, 3, 4)), "", "")
    return "\n".join([line(head), rule, *(line(r) for r in rows), rule, line(totals)])


def run_entries(engine: sa.Engine, run_id: str) -> list[dict[str, Any]]:
    """Every ledger entry of one run (paged; the ledger returns newest first)."""
    from retention.ledger import MAX_PAGE, Ledger

    ledger, out, offset = Ledger(engine), [], 0
    while page := ledger.entries(run_id=run_id, offset=offset, limit=MAX_PAGE):
        out.extend(page)
        offset += len(page)
    return out


@functools.cache
def policy_stores() -> dict[str, list[str]]:
    """Category -> its stores, in policy order (from the shipped policies)."""
    from retention.policy import load_policies
    from retention_airflow.clients import DEFAULT_POLICY_DIR

    return {p.id: list(p.stores()) for p in load_policies(DEFAULT_POLICY_DIR).policies}


def nightly_summary(engine: sa.Engine, outcome: RunOutcome, final: Mapping[str, Any] | None) -> str:
    """The nightly run's table and totals, from the ledger and ``finish_nightly``'s return value."""
    cells = ledger_cells(run_entries(engine, outcome.run_id), policy_stores())
    lines = [f"Nightly retention run {outcome.run_id} (as of {NOW.isoformat()}): {outcome.state}", ""]
    lines.append(render_table(cells))
    if final:
        lines += [
            "",
            f"finish_nightly: erased {final['erased']}, anonymised {final['anonymised']}, "
            f"kept {final['kept']}, failed {final['failed']}; "
            f"ledger chain {'intact' if final['chain_ok'] else 'BROKEN'} "
            f"({final['chain_checked']} entries, head {str(final['chain_head'])[:16]}…)",
        ]
    if outcome.waiting:
        lines += [
            "",
            "The run is not finished: its database pass (every category's rows) starts only when the file",
            "steps of all categories are done, so no rows are erased yet. Still waiting for a human:",
        ]
        lines += [f"  - {s}" for s in outcome.waiting]
    return "\n".join(lines)


def receipt_markdown(stores: Stores, receipt: Mapping[str, Any] | None) -> str:
    """The Markdown receipt as stored in the receipts bucket."""
    if not receipt:
        return "(no receipt: write_receipt did not return one; see its log)"
    where = receipt["location"]
    body = stores.s3.client().get_object(Bucket=where["bucket"], Key=where["markdown_key"])["Body"].read()
    return f"(s3://{where['bucket']}/{where['markdown_key']})\n\n{body.decode()}"


def where_to_look(url: str, password: str, nightly: RunOutcome, erasure: RunOutcome | None) -> str:
    """The UI addresses worth opening, and the login."""
    lines = [
        f"Airflow UI             {url}/   (login: {ADMIN} / {password})",
        f"nightly DAG            {url}/dags/{NIGHTLY}",
        f"  this run             {url}/dags/{NIGHTLY}/runs/{quote(nightly.run_id, safe='')}",
        f"customer erasure DAG   {url}/dags/{ERASURE}",
    ]
    if erasure is not None:
        lines.append(f"  this run             {url}/dags/{ERASURE}/runs/{quote(erasure.run_id, safe='')}")
    lines += [
        f"Required actions       {url}/required_actions   (approvals of categories over their cap)",
        f"Retention monitoring   {url}/retention/   (ledger, chain, receipts; 'Retention' in the menu)",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


@dataclass
class Options:
    """The ``start`` command's choices."""

    business_db: str = "sqlite"
    approve: bool = False
    approval_wait: float = 900.0
    once: bool = False


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def start(options: Options, demo_dir: Path = DEMO_DIR) -> int:
    """Run the whole demo; keep it running until stopped (or stop at once with ``--once``)."""
    began = time.monotonic()
    say("[1/7] cleaning up an earlier demo")
    if stop_demo(demo_dir):
        say("  stopped the demo that was still running")
    prepare_demo_dir(demo_dir)
    state = State(main=ProcessRecord.of("demo", os.getpid(), group=False))
    state.save(demo_dir)
    signal.signal(signal.SIGTERM, _on_signal)
    code = 0
    with ExitStack() as stack:
        stack.callback(_stopped, state, demo_dir)
        try:
            _run(stack, options, state, demo_dir, began)
        except (Stopped, KeyboardInterrupt):
            say("\nstopping the demo")
        except (RuntimeError, OSError, httpx.HTTPError, subprocess.SubprocessError) as e:
            # DemoError and the harness's service errors are RuntimeErrors naming their log.
            say(f"\nthe demo failed: {type(e).__name__}: {e}\nstopping the demo")
            code = 1
        finally:
            # A second Ctrl-C must not interrupt the shutdown half-way.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("demo stopped")
    return code


def _run(stack: ExitStack, options: Options, state: State, demo_dir: Path, began: float) -> None:
    say("[2/7] starting the stores on loopback")
    stores = start_stores(stack, demo_dir, options.business_db, state)
    state.save(demo_dir)
    say(f"[3/7] generating the reference world (demo size, business clock {NOW:%Y-%m-%d %H:%M %Z})")
    step = time.monotonic()
    world = make_world(stores)
    customer = choose_customer(world)
    say(f"  world ready in {time.monotonic() - step:.0f} s")
    keys = make_secrets(demo_dir)
    setup = setup_airflow(demo_dir, stores, keys)
    say(f"[4/7] preparing Airflow in {setup.home.relative_to(REPO)} (airflow db migrate)")
    step = time.monotonic()
    migrate(setup)
    say(f"  metadata database ready in {time.monotonic() - step:.0f} s")
    say(f"[5/7] starting Airflow on {setup.url} (api-server, scheduler, dag-processor, triggerer)")
    # Registered after the stores: the ExitStack stops Airflow first, then the stores.
    stack.callback(stop_airflow, state, demo_dir)
    start_airflow(setup, state, demo_dir)
    state.url = setup.url
    state.save(demo_dir)
    api = AirflowApi(setup.url, keys["admin_password"])
    stack.callback(api.close)
    wait_for_airflow(api, state, setup)
    prepare_dags(api, POOLS_SQLITE if options.business_db == "sqlite" else POOLS_POSTGRES)
    say(f"[6/7] nightly retention run (dry_run false, as_of {NOW.isoformat()})")
    run_id = trigger(api, NIGHTLY, {"dry_run": False, "as_of": NOW.isoformat()})
    policy = ApprovalPolicy(
        api, run_id, auto=options.approve, wait=options.approval_wait, password=keys["admin_password"]
    )
    nightly = follow(api, NIGHTLY, run_id, label="nightly", on_approvals=policy)
    say(f"[7/7] customer erasure of customer {customer} (request {REQUEST_REF})")
    conf = {
        "customer_id": str(customer),
        "request_ref": REQUEST_REF,
        "reason": "erasure_request",
        "dry_run": False,
    }
    erasure = follow(api, ERASURE, trigger(api, ERASURE, conf), label="erasure")
    engine = sa.create_engine(stores.business_url)
    stack.callback(engine.dispose)
    final = xcom_value(api, NIGHTLY, nightly.run_id, "finish_nightly") if nightly.state in FINISHED else None
    receipt = xcom_value(api, ERASURE, erasure.run_id, "write_receipt")
    say("\n" + "=" * 100)
    say(nightly_summary(engine, nightly, final))
    say("\n" + "=" * 100)
    say(f"Customer erasure {erasure.run_id}: {erasure.state}; the receipt:\n")
    say(receipt_markdown(stores, receipt))
    say("=" * 100)
    say(where_to_look(setup.url, keys["admin_password"], nightly, erasure))
    say(f"\nlogs: {setup.logs.relative_to(REPO)}/   ready after {time.monotonic() - began:.0f} s")
    state.phase = "running"
    state.save(demo_dir)
    if options.once:
        return
    say("The UI stays up until Ctrl-C or `make demo-stop`.")
    if nightly.waiting:
        say("The nightly run's summary follows here once it is answered in Required actions.\n")
        nightly = follow(api, NIGHTLY, nightly.run_id, label="nightly", timeout=None, quiet=True)
        final = xcom_value(api, NIGHTLY, nightly.run_id, "finish_nightly")
        say(nightly_summary(engine, nightly, final))
    while True:
        time.sleep(3600)


def stop_airflow(state: State, demo_dir: Path) -> None:
    """Stop every Airflow component (SIGTERM to its group, SIGKILL after ``STOP_TIMEOUT``)."""
    say("  stopping Airflow")
    hard = terminate([p for p in state.processes if p.name.startswith("airflow ")])
    if hard:
        say(f"  killed after {STOP_TIMEOUT:.0f} s: {', '.join(hard)}")
    say("  stopping the stores")


def _stopped(state: State, demo_dir: Path) -> None:
    state.phase = "stopped"
    state.save(demo_dir)


def status(demo_dir: Path = DEMO_DIR) -> int:
    """Print which of the demo's processes run; 0 if the demo runs, 3 if not."""
    state = State.load(demo_dir)
    if state is None or state.main is None:
        say("no demo here")
        return 3
    running = state.main.alive()
    where = f", UI {state.url}/" if running and state.url else ""
    say(f"demo: {'running' if running else 'not running'} (phase {state.phase}){where}")
    for p in state.processes:
        say(f"  {p.name:<22} pid {p.pid:<8} {'running' if p.alive() else 'stopped'}")
    return 0 if running else 3


def parse_args(argv: Sequence[str]) -> tuple[str, Options]:
    """The command and the start options."""
    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--business-db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--approve", action="store_true", help="answer every cap approval with Approve")
    parser.add_argument(
        "--approval-wait", type=float, default=900.0, help="seconds to wait for a human's approval"
    )
    parser.add_argument("--once", action="store_true", help="stop everything after the summary")
    args = parser.parse_args(argv)
    return args.command, Options(args.business_db, args.approve, args.approval_wait, args.once)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m harness.demo``."""
    command, options = parse_args(sys.argv[1:] if argv is None else argv)
    if command == "start":
        return start(options)
    if command == "stop":
        say("stopped the demo" if stop_demo() else "no demo was running")
        return 0
    return status()


if __name__ == "__main__":
    sys.exit(main())
