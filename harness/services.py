"""Real local services on loopback for the tests, the demo and the benchmark.

Each ``start_*`` function launches one service on 127.0.0.1 on a free port, waits (at most
``READY_TIMEOUT`` seconds) until it answers, and returns a handle that is also a context
manager. Every server process runs in its own process group and is killed on ``stop()``,
on leaving the ``with`` block and at interpreter exit. A service that cannot start raises
``RuntimeError`` naming the service and quoting the tail of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import boto3
import psycopg
from psycopg import sql

LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SSHD = "/usr/sbin/sshd"
S3_KEY = "testing"
S3_REGION = "eu-north-1"
MAIN_DATABASE = "alleskar"

_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_LIVE: set[_Service] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 25) -> str:
    """Return the last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def generate_ed25519_key(path: Path) -> str:
    """Write a passphrase-less ed25519 key pair at ``path``; return the public line ``ssh-ed25519 AAAA..``."""
    result = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alleskar-harness", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ssh-keygen failed for {path}: {result.stderr.strip()}")
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; the parent pid follows the last ')'.
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_all() -> None:
    for service in list(_LIVE):
        service.stop()


atexit.register(_stop_all)


class _Service:
    """One server process in its own process group, logging to a file in its own directory."""

    def __init__(self, name: str, workdir: Path, port: int | None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)).resolve()
        self.log_path = self.dir / f"{name}.log"
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call twice."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            self._shutdown(proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _launch(self, argv: list[str], *, user: str | None = None, env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                env=env,
            )
        _LIVE.add(self)
        self._wait_ready(self._proc)

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code = proc.poll()
            if code is not None:
                self._fail(f"the process exited with code {code}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self._fail(f"no answer within {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        raise NotImplementedError

    def _fail(self, reason: str) -> NoReturn:
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start on {LOOPBACK}:{self.port}: {reason}. "
            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode is not None:
            return  # already reaped: its pid may belong to someone else by now
        # Children that called setsid() (sshd sessions, PostgreSQL backends) escape killpg, so they are
        # looked up while the group is frozen and cannot fork any more.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)
        stragglers = _descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in stragglers:
            _kill(pid)
        proc.wait(STOP_TIMEOUT)


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("postgres: no /usr/lib/postgresql/*/bin/initdb; run `make system-deps`")
    return found[-1].parent


class PostgresServer(_Service):
    """A throw-away PostgreSQL cluster on 127.0.0.1 with trust auth and a database ``alleskar``."""

    def __init__(self, workdir: Path, *, fast: bool, port: int | None) -> None:
        super().__init__("postgres", workdir, port)
        self.fast = fast
        self._bin = _postgres_bin()
        # The cluster lives in the system temp dir, not in workdir: the postgres OS user must be able
        # to reach it, and callers' workdirs (pytest's tmp dirs) are often 0700 root.
        self.cluster_dir = Path(tempfile.mkdtemp(prefix="alleskar-pg-"))
        """Data directory and socket of the cluster; deleted by ``stop()``."""
        self._data = self.cluster_dir / "data"
        self._socket_dir = self.cluster_dir / "run"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``alleskar`` database."""
        return self.url_for(MAIN_DATABASE)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (lowercase identifier) and return its SQLAlchemy URL."""
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_checked_db_name(name))))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self._admin(drop.format(sql.Identifier(_checked_db_name(name))))

    def airflow_conn_json(self) -> str:
        """The ``alleskar`` database as an Airflow connection in JSON form (``AIRFLOW_CONN_BUSINESS_DB``)."""
        conn = {"host": LOOPBACK, "port": self.port, "login": "postgres", "schema": MAIN_DATABASE}
        return json.dumps({"conn_type": "postgres", **conn})

    def stop(self) -> None:
        """Stop the server and delete the cluster; safe to call twice."""
        super().stop()
        shutil.rmtree(self.cluster_dir, ignore_errors=True)

    def _start(self) -> None:
        pg = _pwd_ids("postgres")
        for path in (self.cluster_dir, self._socket_dir):
            path.mkdir(exist_ok=True)
            os.chown(path, *pg)
        self._initdb()
        settings = [
            f"listen_addresses={LOOPBACK}",
            f"port={self.port}",
            f"unix_socket_directories={self._socket_dir}",
        ]
        if self.fast:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        argv = [str(self._bin / "postgres"), "-D", str(self._data)]
        for setting in settings:
            argv += ["-c", setting]
        self._launch(argv, user="postgres", env=self._env())
        self.create_database(MAIN_DATABASE)

    def _initdb(self) -> None:
        argv = [str(self._bin / "initdb"), "-D", str(self._data), "-U", "postgres", "-A", "trust"]
        argv += ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user="postgres",
                group="postgres",
                extra_groups=[],
                env=self._env(),
                timeout=READY_TIMEOUT,
                check=False,
            )
        if result.returncode != 0:
            self._fail(f"initdb exited with code {result.returncode}")

    def _env(self) -> dict[str, str]:
        path = os.environ.get("PATH", "/usr/bin:/bin")
        return {"PATH": path, "LC_ALL": "C", "TZ": "UTC", "HOME": str(self.cluster_dir)}

    def _ready(self) -> bool:
        # postmaster.pid ends with "ready" once connections are accepted (what `pg_ctl -w` waits for);
        # probing the port before that could hit whatever else listens there and block for seconds.
        try:
            status = (self._data / "postmaster.pid").read_text().splitlines()[7:8]
        except OSError:
            return False
        if [line.strip() for line in status] != ["ready"]:
            return False
        try:
            self._admin(sql.SQL("SELECT 1"))
        except psycopg.OperationalError:
            return False
        return True

    def _admin(self, statement: sql.SQL | sql.Composed) -> None:
        conninfo = f"host={LOOPBACK} port={self.port} user=postgres dbname=postgres connect_timeout=2"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement)

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: it ends sessions and releases shared memory.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
        super()._shutdown(proc)


def _checked_db_name(name: str) -> str:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r} is not a lowercase identifier")
    return name


def _pwd_ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def start_postgres(workdir: Path, *, fast: bool = True, port: int | None = None) -> PostgresServer:
    """Start a throw-away PostgreSQL cluster with database ``alleskar``; ``fast`` turns durability off."""
    server = PostgresServer(workdir, fast=fast, port=port)
    try:
        server._start()
    except BaseException:
        server.stop()
        raise
    return server


class S3Server(_Service):
    """moto's S3 server mode as a subprocess on 127.0.0.1; credentials ``testing``/``testing``."""

    def __init__(self, workdir: Path, port: int | None) -> None:
        super().__init__("s3", workdir, port)

    @property
    def endpoint_url(self) -> str:
        """The HTTP endpoint for boto3's ``endpoint_url``."""
        return f"http://{LOOPBACK}:{self.port}"

    def client(self) -> Any:
        """A plain boto3 S3 client for this server (not through Airflow)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_KEY,
            region_name=S3_REGION,
        )

    def create_bucket(self, name: str, *, versioned: bool = True, object_lock: bool = False) -> str:
        """Create bucket ``name`` (object lock implies versioning) and return its name."""
        if object_lock and not versioned:
            raise ValueError("S3 object lock requires a versioned bucket")
        client = self.client()
        client.create_bucket(
            Bucket=name,
            CreateBucketConfiguration={"LocationConstraint": S3_REGION},
            ObjectLockEnabledForBucket=object_lock,
        )
        if versioned and not object_lock:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def airflow_conn_json(self) -> str:
        """This server as an Airflow ``aws`` connection in JSON form (``AIRFLOW_CONN_DOCS_S3``)."""
        extra = {"endpoint_url": self.endpoint_url, "region_name": S3_REGION}
        return json.dumps({"conn_type": "aws", "login": S3_KEY, "password": S3_KEY, "extra": extra})

    def _start(self) -> None:
        self._launch([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)])

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=1)
        try:
            conn.request("GET", "/moto-api/")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()


def start_s3(workdir: Path, *, port: int | None = None) -> S3Server:
    """Start moto's S3 server on 127.0.0.1; its log goes to workdir."""
    server = S3Server(workdir, port)
    try:
        server._start()
    except BaseException:
        server.stop()
        raise
    return server


_SSHD_CONFIG = """\
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
"""


class SftpServer(_Service):
    """OpenSSH ``sshd`` as root on 127.0.0.1 with its own ed25519 host key and one client key."""

    host = LOOPBACK
    login = "root"

    def __init__(self, workdir: Path, port: int | None) -> None:
        super().__init__("sftp", workdir, port)
        self.archive_root = self.dir / "archive"
        self.archive_root.mkdir()
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.client_key_path = self.dir / "client_ed25519_key"
        self.host_key_line = generate_ed25519_key(self.host_key_path)
        authorized_keys = self.dir / "authorized_keys"
        authorized_keys.write_text(generate_ed25519_key(self.client_key_path) + "\n")
        self._config = self.dir / "sshd_config"
        self._config.write_text(
            _SSHD_CONFIG.format(
                host=LOOPBACK,
                port=self.port,
                host_key=self.host_key_path,
                pid_file=self.dir / "sshd.pid",
                authorized_keys=authorized_keys,
            )
        )

    def start(self) -> None:
        """Start sshd (again) on the same port with the same keys; does nothing if it is running."""
        if self.running:
            return
        # sshd's privilege separation needs this directory; a fresh container may not have it.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self._launch([SSHD, "-D", "-e", "-f", str(self._config)])

    def airflow_conn_json(self, host_key_line: str | None = None) -> str:
        """This server as an Airflow ``sftp`` connection that checks the host key (``AIRFLOW_CONN_...``).

        ``host_key_line`` replaces the real host key, to test that a wrong one is refused.
        """
        extra = {
            "key_file": str(self.client_key_path),
            "no_host_key_check": False,
            "host_key": host_key_line or self.host_key_line,
            "look_for_keys": False,
        }
        return json.dumps(
            {"conn_type": "sftp", "host": self.host, "port": self.port, "login": self.login, "extra": extra}
        )

    def _ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                return sock.recv(4) == b"SSH-"
        except OSError:
            return False


def start_sftp(workdir: Path, *, port: int | None = None) -> SftpServer:
    """Start an SFTP server (OpenSSH) on 127.0.0.1 with fresh keys and an archive root in workdir."""
    server = SftpServer(workdir, port)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
