"""The local services answer through the very clients the engine uses, and fail loudly when they cannot."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from sqlalchemy import Engine, inspect, text

from harness.clients import sftp_session
from harness.services import (
    LOOPBACK,
    PostgresServer,
    SftpServer,
    generate_ed25519_key,
    start_postgres,
    start_s3,
    start_sftp,
)


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def _sftp_hook(conn_id: str) -> Any:
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    # One attempt: the hook otherwise retries a refused connection for ~10 s.
    return SFTPHook(ssh_conn_id=conn_id, conn_retry_attempts=1)


def test_postgres_runs_real_queries(pg_engine: Engine) -> None:
    with pg_engine.begin() as conn:
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text("CREATE TEMPORARY TABLE probe (n integer)"))
        conn.execute(text("INSERT INTO probe SELECT generate_series(1, 250)"))
        total = conn.execute(text("SELECT sum(n) FROM probe")).scalar_one()
    assert database == "alleskar"
    assert total == 250 * 251 // 2


def test_fresh_db_is_a_new_isolated_database(fresh_db: Engine, pg_engine: Engine) -> None:
    assert inspect(fresh_db).get_table_names() == []
    with fresh_db.begin() as conn:
        conn.execute(text("CREATE TABLE only_here (id integer)"))
        fresh_name = conn.execute(text("SELECT current_database()")).scalar_one()
    assert fresh_name != "alleskar"
    assert "only_here" in inspect(fresh_db).get_table_names()
    assert "only_here" not in inspect(pg_engine).get_table_names()


def test_drop_database_removes_it(pg_server: PostgresServer, pg_engine: Engine) -> None:
    name = "test_drop_probe"
    pg_server.create_database(name)
    pg_server.drop_database(name)
    with pg_engine.connect() as conn:
        query = text("SELECT count(*) FROM pg_database WHERE datname = :n")
        left = conn.execute(query, {"n": name}).scalar_one()
    assert left == 0


def test_s3_hook_client_sees_every_version(s3_client: Any, s3_bucket: str, s3_server: Any) -> None:
    assert s3_client.meta.endpoint_url == s3_server.endpoint_url
    first = s3_client.put_object(Bucket=s3_bucket, Key="docs/a.txt", Body=b"one")["VersionId"]
    second = s3_client.put_object(Bucket=s3_bucket, Key="docs/a.txt", Body=b"two")["VersionId"]
    listed = s3_client.list_object_versions(Bucket=s3_bucket, Prefix="docs/")
    assert first != second
    assert {v["VersionId"] for v in listed["Versions"]} == {first, second}


def test_s3_object_lock_bucket_is_versioned(s3_server: Any, s3_client: Any) -> None:
    name = s3_server.create_bucket("test-locked-bucket", object_lock=True)
    assert s3_client.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    lock = s3_client.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"


def test_sftp_hook_client_writes_and_stats(sftp_client: paramiko.SFTPClient, archive_root: str) -> None:
    remote = f"{archive_root}/case-1.pdf"
    with sftp_client.open(remote, "wb") as handle:
        handle.write(b"%PDF-1.7 probe")
    assert sftp_client.stat(remote).st_size == len(b"%PDF-1.7 probe")
    assert Path(remote).read_bytes() == b"%PDF-1.7 probe"


def test_sftp_hook_refuses_a_wrong_host_key(
    sftp_server: SftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = generate_ed25519_key(tmp_path / "impostor")
    wrong = sftp_server.airflow_conn_json(host_key_line=impostor)
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIVE_SFTP_WRONG", wrong)
    with pytest.raises(paramiko.BadHostKeyException), _sftp_hook("archive_sftp_wrong").get_managed_conn():
        pass


def test_the_pinned_sftp_session_writes_and_refuses_a_wrong_host_key(
    sftp_server: SftpServer, archive_root: str, tmp_path: Path
) -> None:
    with sftp_session(sftp_server.spec) as sftp:
        with sftp.open(f"{archive_root}/pinned.txt", "wb") as handle:
            handle.write(b"pinned")
        assert sftp.stat(f"{archive_root}/pinned.txt").st_size == len(b"pinned")
    wrong_key = generate_ed25519_key(tmp_path / "impostor")
    impostor = dataclasses.replace(sftp_server.spec, host_key_line=wrong_key)
    with pytest.raises(paramiko.BadHostKeyException), sftp_session(impostor):
        pass


def test_sftp_restart_keeps_port_and_host_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_sftp(tmp_path) as server:
        monkeypatch.setenv("AIRFLOW_CONN_RESTARTED_SFTP", server.airflow_conn_json())
        port, host_key = server.port, server.host_key_line
        hook = _sftp_hook("restarted_sftp")
        with hook.get_managed_conn() as before:
            server.stop()
            with pytest.raises((OSError, EOFError, paramiko.SSHException)):
                before.listdir(str(server.archive_root))
        assert not _accepts_connections(port)

        server.start()
        assert (server.port, server.host_key_line) == (port, host_key)
        with _sftp_hook("restarted_sftp").get_managed_conn() as after:
            assert after.listdir(str(server.archive_root)) == []


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("start", "service"),
    [(start_postgres, "postgres"), (start_s3, "s3"), (start_sftp, "sftp")],
)
def test_a_service_that_cannot_start_says_which_and_why(
    start: Callable[..., Any], service: str, occupied_port: int, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match=rf"^{service} did not start") as failure:
        start(tmp_path, port=occupied_port).stop()
    assert "address already in use" in str(failure.value).lower()


def test_postgres_stop_frees_port_and_deletes_cluster(tmp_path: Path) -> None:
    server = start_postgres(tmp_path)
    cluster = server.cluster_dir
    assert _accepts_connections(server.port)
    server.stop()
    assert not _accepts_connections(server.port)
    assert not cluster.exists()


_PROBE_DAG = """
from airflow.sdk import dag, task


@dag(schedule=None, doc_md="Harness probe.")
def harness_probe():
    @task
    def add(a: int, b: int) -> int:
        return a + b

    add(2, 3)


harness_probe()
"""


def test_airflow_db_lets_dag_test_run(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    # dag.test() runs only DAGs found in a bundle, so the probe gets a dags folder of its own.
    (tmp_path / "harness_probe.py").write_text(_PROBE_DAG)
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(tmp_path))
    probe = DagBag(dag_folder=str(tmp_path)).dags["harness_probe"]

    run = probe.test()

    assert run.state == "success"
