"""The fault proxies do what the fault suite relies on, against the real services."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import paramiko
import psycopg
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness.clients import s3_client, sftp_session
from harness.faultproxy import S3FaultProxy, TcpFaultProxy, s3_operation, wait_for


def _pg_dsn(port: int) -> str:
    return f"host=127.0.0.1 port={port} dbname=alleskar user=postgres connect_timeout=5"


def test_the_tcp_proxy_relays_drops_refuses_and_stalls_postgresql(pg_server: Any) -> None:
    with TcpFaultProxy("127.0.0.1", pg_server.port) as proxy:
        conn = psycopg.connect(_pg_dsn(proxy.port), autocommit=True)
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)

        assert proxy.drop() == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()

        proxy.refuse()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_pg_dsn(proxy.port))
        proxy.heal()

        conn = psycopg.connect(_pg_dsn(proxy.port), autocommit=True)
        proxy.stall()
        answered = threading.Event()
        worker = threading.Thread(target=lambda: (conn.execute("SELECT 1"), answered.set()), daemon=True)
        worker.start()
        assert not answered.wait(0.5), "a stalled proxy relays nothing"
        proxy.stall(False)
        assert answered.wait(10), "unstalled, the statement completes"
        conn.close()


def test_the_tcp_proxy_drops_mid_statement_after_a_byte_budget(pg_server: Any) -> None:
    with TcpFaultProxy("127.0.0.1", pg_server.port) as proxy:
        conn = psycopg.connect(_pg_dsn(proxy.port), autocommit=True)
        proxy.drop_after(100)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT %s::text", ["x" * 500])
        conn.close()
        assert proxy.connections == 1


def test_the_tcp_proxy_drops_when_a_statement_is_sent_before_it_reaches_the_server(pg_server: Any) -> None:
    with psycopg.connect(_pg_dsn(pg_server.port), autocommit=True) as direct:
        direct.execute("DROP TABLE IF EXISTS fault_probe")
        direct.execute("CREATE TABLE fault_probe (id int)")
        direct.execute("INSERT INTO fault_probe VALUES (1), (2)")
        with TcpFaultProxy("127.0.0.1", pg_server.port) as proxy:
            conn = psycopg.connect(_pg_dsn(proxy.port), autocommit=True)
            proxy.drop_when_sent(b"DELETE FROM", nth=2, then_refuse=True)
            conn.execute("DELETE FROM fault_probe WHERE id = 1")
            with pytest.raises(psycopg.OperationalError):
                conn.execute("DELETE FROM fault_probe WHERE id = 2")
            assert proxy.triggered.is_set()
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(_pg_dsn(proxy.port))
            assert direct.execute("SELECT id FROM fault_probe").fetchall() == [(2,)], (
                "never reached the server"
            )
            proxy.heal()
            psycopg.connect(_pg_dsn(proxy.port)).close()
        direct.execute("DROP TABLE fault_probe")


def test_the_tcp_proxy_delivers_a_commit_and_loses_its_answer(pg_server: Any) -> None:
    with psycopg.connect(_pg_dsn(pg_server.port), autocommit=True) as direct:
        direct.execute("DROP TABLE IF EXISTS fault_probe")
        direct.execute("CREATE TABLE fault_probe (id int)")
        direct.execute("INSERT INTO fault_probe VALUES (1), (2), (3)")
        with TcpFaultProxy("127.0.0.1", pg_server.port) as proxy:
            conn = psycopg.connect(_pg_dsn(proxy.port))
            conn.execute("SELECT count(*) FROM fault_probe")
            conn.commit()  # a COMMIT before the DELETE: not armed yet
            proxy.drop_when_sent(b"COMMIT", armed_by=b"DELETE FROM", deliver=True)
            conn.execute("DELETE FROM fault_probe WHERE id = 1")
            with pytest.raises(psycopg.OperationalError):
                conn.commit()
            assert proxy.triggered.is_set()
            assert direct.execute("SELECT id FROM fault_probe ORDER BY id").fetchall() == [(2,), (3,)], (
                "the server committed although the client saw only a lost connection"
            )
            conn.close()
        direct.execute("DROP TABLE fault_probe")


def test_the_tcp_proxy_relays_ssh_and_a_drop_ends_the_session(sftp_server: Any, archive_root: str) -> None:
    with TcpFaultProxy("127.0.0.1", sftp_server.port) as proxy:
        # The host key is pinned to the proxy's address: a relay, not a man in the middle.
        spec = dataclasses.replace(sftp_server.spec, port=proxy.port)
        with sftp_session(spec) as sftp:
            assert sftp.stat(archive_root).st_mode is not None
            proxy.drop()
            with pytest.raises((OSError, EOFError, paramiko.SSHException)):
                sftp.listdir(archive_root)


def test_s3_operations_are_named_from_path_style_requests() -> None:
    assert s3_operation("GET", "/b", "versions&prefix=x") == "ListObjectVersions"
    assert s3_operation("GET", "/b", "list-type=2&prefix=x") == "ListObjectsV2"
    assert s3_operation("POST", "/b", "delete") == "DeleteObjects"
    assert s3_operation("GET", "/b/a/key.pdf", "") == "GetObject"
    assert s3_operation("HEAD", "/b/a/key.pdf", "versionId=1") == "HeadObject"
    assert s3_operation("PUT", "/b/a/key.pdf", "") == "PutObject"
    assert s3_operation("GET", "/b/k", "object-lock") == "GetObjectLockConfiguration"


def test_the_s3_proxy_throttles_retries_and_reports_per_key_errors(s3_server: Any, s3_bucket: str) -> None:
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        client = s3_client(proxy.endpoint_url, config=Config(retries={"mode": "standard", "max_attempts": 3}))
        for key in ("keep/a", "keep/b", "go/c"):
            client.put_object(Bucket=s3_bucket, Key=key, Body=b"v1")
            client.put_object(Bucket=s3_bucket, Key=key, Body=b"v2")

        proxy.fail("ListObjectVersions", status=503, code="SlowDown", times=2)
        versions = client.list_object_versions(Bucket=s3_bucket)["Versions"]
        assert len(versions) == 6
        assert (proxy.counts["ListObjectVersions"], proxy.failed["ListObjectVersions"]) == (3, 2)

        proxy.fail("ListObjectVersions", status=500, code="InternalError", times=5)
        with pytest.raises(ClientError) as refused:
            client.list_object_versions(Bucket=s3_bucket)
        assert refused.value.response["Error"]["Code"] == "InternalError"
        proxy.heal()

        proxy.fail_keys(r"^keep/")
        answer = client.delete_objects(
            Bucket=s3_bucket,
            Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]},
        )
        assert sorted(e["Key"] for e in answer["Errors"]) == ["keep/a", "keep/a", "keep/b", "keep/b"]
        assert [d["Key"] for d in answer["Deleted"]] == ["go/c", "go/c"]
        left = s3_server.client().list_object_versions(Bucket=s3_bucket)["Versions"]
        assert sorted(v["Key"] for v in left) == ["keep/a", "keep/a", "keep/b", "keep/b"]
        assert proxy.key_errors == 4

        proxy.heal()
        proxy.stall()
        done = threading.Event()
        threading.Thread(
            target=lambda: (client.head_bucket(Bucket=s3_bucket), done.set()), daemon=True
        ).start()
        assert not done.wait(0.5)
        proxy.stall(False)
        wait_for(done.is_set, timeout=10)
