"""Real local services on loopback for the tests, the demo and the benchmark.

Each ``start_*`` function launches one service on 127.0.0.1 on a free port, waits (at most
``READY_TIMEOUT`` seconds) until it answers, and returns a handle that is also a context
manager. Every server process runs in its own process group and is killed on ``stop()``,
on leaving the ``with`` block and at interpreter exit (``harness.server_process``). A service
that cannot start raises ``RuntimeError`` naming the service and quoting the tail of its log.
Clients on them outside Airflow come from ``harness.clients``.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harness.clients import S3_KEY, S3_REGION, SftpSpec, s3_client
from harness.server_process import LOOPBACK, READY_TIMEOUT, STOP_TIMEOUT, ServerProcess, started

SSHD = "/usr/sbin/sshd"
MAIN_DATABASE = "alleskar"

_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


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


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("postgres: no /usr/lib/postgresql/*/bin/initdb; run `make system-deps`")
    return found[-1].parent


class PostgresServer(ServerProcess):
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
        self.admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_checked_db_name(name))))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self.admin(drop.format(sql.Identifier(_checked_db_name(name))))

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
            self.admin(sql.SQL("SELECT 1"))
        except psycopg.OperationalError:
            return False
        return True

    def admin(self, statement: sql.SQL | sql.Composed) -> None:
        """Run one statement as the superuser on database ``postgres``, in autocommit."""
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
    return started(server, server._start)


class S3Server(ServerProcess):
    """moto's S3 server mode as a subprocess on 127.0.0.1; credentials ``testing``/``testing``."""

    def __init__(self, workdir: Path, port: int | None) -> None:
        super().__init__("s3", workdir, port)

    @property
    def endpoint_url(self) -> str:
        """The HTTP endpoint for boto3's ``endpoint_url``."""
        return f"http://{LOOPBACK}:{self.port}"

    def client(self) -> Any:
        """A plain boto3 S3 client for this server (not through Airflow)."""
        return s3_client(self.endpoint_url)

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
    return started(server, server._start)


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


class SftpServer(ServerProcess):
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

    @property
    def spec(self) -> SftpSpec:
        """How to reach this server outside Airflow, host key pinned (``harness.clients.sftp_session``)."""
        return SftpSpec(self.host, self.port, self.login, str(self.client_key_path), self.host_key_line)

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
    return started(server, server.start)
