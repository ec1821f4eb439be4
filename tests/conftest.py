"""Session fixtures: real PostgreSQL, S3 (moto server) and SFTP (OpenSSH) on loopback, each started lazily.

Airflow's configuration is fixed at the top of this module, before any test module imports airflow.
A service that cannot start fails the tests that need it, with the service's log tail; nothing skips.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paramiko import SFTPClient
from sqlalchemy import Engine, create_engine

from harness.services import (
    PostgresServer,
    S3Server,
    SftpServer,
    start_postgres,
    start_s3,
    start_sftp,
)

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="alleskar-airflow-home-"))

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory for the services' logs, keys and SFTP archive (kept by pytest for the last runs)."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def pg_server(services_dir: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server with database ``alleskar``; sets ``AIRFLOW_CONN_BUSINESS_DB``."""
    with start_postgres(services_dir) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_BUSINESS_DB", server.airflow_conn_json())
        yield server


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> str:
    """SQLAlchemy URL of the session's ``alleskar`` database."""
    return pg_server.url


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """SQLAlchemy engine on the session's ``alleskar`` database (shared by all tests)."""
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def fresh_db(pg_server: PostgresServer) -> Iterator[Engine]:
    """SQLAlchemy engine on a brand-new empty database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    engine = create_engine(pg_server.create_database(name))
    try:
        yield engine
    finally:
        engine.dispose()
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[S3Server]:
    """moto's S3 server; sets ``AIRFLOW_CONN_DOCS_S3``."""
    with start_s3(services_dir) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_DOCS_S3", server.airflow_conn_json())
        yield server


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server) -> Any:
    """boto3 S3 client built by the amazon provider's ``S3Hook`` from connection ``docs_s3``."""
    # Imported here, not at the top, so tests that use no service do not pay for importing Airflow.
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id="docs_s3").get_conn()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """Name of a new, uniquely named, versioned bucket."""
    return s3_server.create_bucket(f"test-{uuid.uuid4().hex[:20]}")


@pytest.fixture(scope="session")
def sftp_server(services_dir: Path) -> Iterator[SftpServer]:
    """OpenSSH SFTP server; sets ``AIRFLOW_CONN_ARCHIVE_SFTP`` (host key verified)."""
    with start_sftp(services_dir) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_ARCHIVE_SFTP", server.airflow_conn_json())
        yield server


@pytest.fixture
def sftp_client(sftp_server: SftpServer) -> Iterator[SFTPClient]:
    """paramiko ``SFTPClient`` from ``SFTPHook("archive_sftp").get_managed_conn()``, closed after the test."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    with SFTPHook(ssh_conn_id="archive_sftp").get_managed_conn() as client:
        yield client


@pytest.fixture
def archive_root(sftp_server: SftpServer) -> str:
    """A fresh absolute directory under the SFTP archive root (the same path on local disk)."""
    return tempfile.mkdtemp(prefix="test-", dir=sftp_server.archive_root)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate Airflow's metadata DB (SQLite in the temp ``AIRFLOW_HOME``) once; return ``AIRFLOW_HOME``."""
    from tests.integration.api_server import migrate

    migrate(AIRFLOW_HOME)
    return AIRFLOW_HOME
