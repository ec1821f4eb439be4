"""The clients the DAGs build: pinned host keys only, and time limits on every store.

Through ``retention_airflow.clients`` with connections as ``AIRFLOW_CONN_*``, against the real
OpenSSH server, PostgreSQL and moto's S3 server (stalled through the fault proxies).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import sqlalchemy as sa
from botocore.exceptions import ReadTimeoutError

from harness.faultproxy import S3FaultProxy, TcpFaultProxy
from retention.dberrors import db_errors
from retention.errors import TerminalError, TransientError
from retention_airflow import clients


def _settings(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_RETENTION_SETTINGS", json.dumps(values))


def _sftp_conn(sftp_server: Any, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    conn = json.loads(sftp_server.airflow_conn_json())
    for key, value in changes.items():
        if value is None:
            conn["extra"].pop(key, None)
        elif key == "port":
            conn["port"] = value
        else:
            conn["extra"][key] = value
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIVE_SFTP", json.dumps(conn))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"no_host_key_check": True, "host_key": None}, "must check the server's host key"),
        ({"no_host_key_check": True}, "is not valid: Must check host key when provided"),
        ({"host_key": None}, "must pin the server's host key"),
        ({"host_key": None, "allow_host_key_change": True}, "must pin the server's host key"),
        ({"allow_host_key_change": True}, "must not allow a changed host key"),
    ],
)
def test_an_sftp_connection_that_would_accept_another_key_is_refused_before_connecting(
    sftp_server: Any, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], problem: str
) -> None:
    _sftp_conn(sftp_server, monkeypatch, **changes)
    with pytest.raises(TerminalError, match=problem), clients.sftp_client():
        pass


def test_a_server_with_another_host_key_is_a_terminal_error_not_a_retry(
    sftp_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from harness.services import generate_ed25519_key

    other = generate_ed25519_key(tmp_path / "impostor")
    _sftp_conn(sftp_server, monkeypatch, host_key=other)
    with pytest.raises(TerminalError, match="another host key than the pinned one") as refused:
        with clients.sftp_client():
            pass
    assert refused.value.terminal


def test_a_stalled_sftp_server_fails_within_the_channel_timeout(
    sftp_server: Any, archive_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _settings(monkeypatch, sftp_timeout=1)
    with TcpFaultProxy("127.0.0.1", sftp_server.port) as proxy:
        _sftp_conn(sftp_server, monkeypatch, port=proxy.port)
        with clients.sftp_client() as sftp:
            sftp.listdir(archive_root)
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                sftp.listdir(archive_root)
            assert time.monotonic() - started < 10
            proxy.stall(False)


def test_postgres_sessions_give_up_on_a_held_lock_and_a_long_statement(
    pg_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _settings(monkeypatch, lock_timeout=0.5, statement_timeout=1)
    engine = clients.business_engine()
    direct = sa.create_engine(pg_server.url)
    try:
        with direct.begin() as c:
            c.execute(sa.text("CREATE TABLE IF NOT EXISTS limits_probe (id int PRIMARY KEY)"))
            c.execute(sa.text("INSERT INTO limits_probe VALUES (1) ON CONFLICT DO NOTHING"))
        with direct.connect() as holder:
            holder.execute(sa.text("SELECT id FROM limits_probe WHERE id = 1 FOR UPDATE"))
            started = time.monotonic()
            with pytest.raises(TransientError, match="LockNotAvailable|55P03"):
                with db_errors("probe"), engine.begin() as c:
                    c.execute(sa.text("DELETE FROM limits_probe WHERE id = 1"))
            assert time.monotonic() - started < 10
            holder.rollback()
        with pytest.raises(TransientError, match="QueryCanceled|57014"):
            with db_errors("probe"), engine.connect() as c:
                c.execute(sa.text("SELECT pg_sleep(5)"))
        with engine.connect() as c:
            assert c.execute(sa.text("SHOW lock_timeout")).scalar() == "500ms"
    finally:
        engine.dispose()
        with direct.begin() as c:
            c.execute(sa.text("DROP TABLE IF EXISTS limits_probe"))
        direct.dispose()


def test_a_stalled_s3_endpoint_fails_within_the_read_timeout(
    s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _settings(monkeypatch, s3_timeout=1)
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        conn = json.loads(s3_server.airflow_conn_json())
        conn["extra"]["endpoint_url"] = proxy.endpoint_url
        monkeypatch.setenv("AIRFLOW_CONN_DOCS_S3", json.dumps(conn))
        s3 = clients.s3_client()
        s3.head_bucket(Bucket=s3_bucket)
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            s3.head_bucket(Bucket=s3_bucket)
        assert time.monotonic() - started < 30, "five attempts of one second each, with backoff"
        proxy.stall(False)


def test_settings_refuse_a_time_limit_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    _settings(monkeypatch, lock_timeout=0)
    with pytest.raises(TerminalError, match="retention_settings is not valid"):
        clients.settings()


def test_the_policy_folder_comes_from_the_deployment_never_from_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("RETENTION_POLICY_DIR", str(tmp_path))
    _settings(monkeypatch, lock_timeout=30)
    assert clients.settings().policy_dir == str(tmp_path)
    _settings(monkeypatch, policy_dir="/somewhere/else")
    with pytest.raises(TerminalError, match="may not name the policy folder.*RETENTION_POLICY_DIR"):
        clients.settings()
