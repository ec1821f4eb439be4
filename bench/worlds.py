"""The benchmark's services and worlds: the three real servers, generated worlds and identical copies of them.

A world is a database, a bucket and an archive directory filled by the harness generator; the
bounds and the DAG runs act on copies (``CREATE DATABASE ... TEMPLATE``, mirrored buckets
written in the same order, a copied archive directory), so every measurement starts from the
same data. A mirror may take only some of the objects (the due-constant 1x world's customers).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from bench.results import Sizes
from harness.clients import sftp_session
from harness.services import PostgresServer, S3Server, SftpServer, start_postgres, start_s3, start_sftp
from harness.world_stores import generate
from harness.world_truth import World
from retention.ledger import Ledger


@dataclass
class Services:
    """The three real servers the benchmark runs against."""

    pg: PostgresServer
    s3: S3Server
    sftp: SftpServer


def start_services(workdir: Path, stack: ExitStack) -> Services:
    """PostgreSQL (durable: ``fast=False``), moto S3 and OpenSSH on loopback, stopped with ``stack``."""
    pg = stack.enter_context(start_postgres(workdir, fast=False))
    s3 = stack.enter_context(start_s3(workdir))
    sftp = stack.enter_context(start_sftp(workdir))
    return Services(pg, s3, sftp)


KeyFilter = Callable[[str], bool]
"""Which object keys a mirror bucket takes (None: all of them)."""


class _Mirrored:
    """A boto3 client for the generator that writes every object to the mirror buckets as well
    (to each only the keys its filter takes), in the same order."""

    def __init__(self, client: Any, bucket: str, mirrors: Mapping[str, KeyFilter | None]) -> None:
        self._client = client
        self._bucket = bucket
        self._mirrors = dict(mirrors)

    def put_object(self, **params: Any) -> Any:
        response = self._client.put_object(**params)
        if params.get("Bucket") == self._bucket:
            for mirror, wanted in self._mirrors.items():
                if wanted is None or wanted(str(params.get("Key"))):
                    self._client.put_object(**{**params, "Bucket": mirror})
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass(frozen=True)
class Built:
    """One generated world: its database, bucket and archive directory (and the bound's copies)."""

    name: str
    db_url: str
    bucket: str
    archive_root: str
    world: World
    mirrors: dict[str, str] = field(default_factory=dict)
    """Suffix -> the name of a bucket written in the same order as ``bucket`` (``bound``, ...)."""

    @property
    def bound_bucket(self) -> str | None:
        """The raw S3 loop's copy of the bucket."""
        return self.mirrors.get("bound")


def build_world(
    svc: Services, name: str, sizes: Sizes, *, mirrors: Mapping[str, KeyFilter | None] | None = None
) -> Built:
    """Generate a world into a new database, bucket and archive directory, with progress on stderr.

    ``mirrors``: suffix -> key filter of further buckets the generator writes in the same order
    (bucket ``bench-<name>-<suffix>``; a filter None takes every object).
    """
    url = svc.pg.create_database(f"world_{name}")
    bucket = svc.s3.create_bucket(f"bench-{name}")
    made = {suffix: svc.s3.create_bucket(f"bench-{name}-{suffix}") for suffix in mirrors or {}}
    root = svc.sftp.archive_root / name
    root.mkdir()
    client = svc.s3.client()
    writer = _Mirrored(client, bucket, {made[k]: f for k, f in (mirrors or {}).items()}) if made else client
    engine = sa.create_engine(url)
    try:
        with sftp_session(svc.sftp.spec) as sftp:
            world = generate(
                engine,
                s3_client=writer,
                bucket=bucket,
                sftp_client=sftp,
                archive_root=str(root),
                size=sizes.world(),
                keep_truth=False,
                progress=True,
            )
        Ledger(engine).ensure_schema()
    finally:
        engine.dispose()
    quiet(url)
    return Built(name, url, bucket, str(root), world, made)


def quiet(db_url: str) -> None:
    """Vacuum a world's database now and keep autovacuum off its tables (and its copies' tables).

    Left on, autovacuum processes the freshly generated tables of the world and every copy while
    the engine and the bounds are being timed, on the same two cores: the bounds' times varied by
    1.6x between runs. Vacuumed once here, every copy starts with the same visibility map and
    statistics, and nothing runs beside a measurement.
    """
    with pg_connection(db_url) as conn:
        tables = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = 'public'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)"
                ).format(sql.Identifier(table))
            )
        conn.execute("VACUUM (ANALYZE)")


def copy_world(
    svc: Services, built: Built, suffix: str, files: Callable[[str], bool] | None = None
) -> tuple[str, str]:
    """An identical copy of a world's database and archive directory; returns (database URL, archive root).

    ``files`` takes the archive's top-level entries to copy (None: all of them).
    """
    source, target = f"world_{built.name}", f"world_{built.name}_{suffix}"
    svc.pg.admin(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(target), sql.Identifier(source)
        )
    )
    root = f"{built.archive_root}_{suffix}"

    def ignore(directory: str, names: list[str]) -> list[str]:
        if files is None or Path(directory) != Path(built.archive_root):
            return []
        return [n for n in names if not files(n)]

    shutil.copytree(built.archive_root, root, symlinks=True, ignore=ignore)
    return svc.pg.url_for(target), root


@contextmanager
def pg_connection(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection in autocommit on the database of a SQLAlchemy URL (for the bare statements)."""
    url = sa.make_url(db_url)
    conninfo = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield conn
