"""Writing a reference world into its stores: the business database, a versioned S3 bucket, an SFTP archive.

``generate`` streams the generator's rows into the database (``COPY`` on PostgreSQL with
psycopg 3, chunked ``executemany`` elsewhere), puts each document's versions into S3 from a
small thread pool with a bounded queue, writes archive files through SFTP, registers the
legal holds, and returns the ``World`` (the ground truth) recorded on the way.
"""

from __future__ import annotations

import posixpath
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, text
from sqlalchemy.engine import Connection

from harness import world_text as words
from harness.world_gen import DocSpec, Plan, Spec
from harness.world_rules import NOW, TABLES, as_utc
from harness.world_schema import create_schema, metadata
from harness.world_size import WorldSize
from harness.world_truth import Truth, World
from retention.holds import HoldRegistry


class _Progress:
    """Rows per second on stderr, at most every two seconds, only when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def track(self, table: str, total: int, items: Iterable[Any]) -> Iterator[Any]:
        if not self.enabled:
            yield from items
            return
        start = last = time.monotonic()
        done = 0
        for item in items:
            yield item
            done += 1
            if done % 1000 == 0 and time.monotonic() - last >= 2.0:
                last = time.monotonic()
                self._say(table, done, total, last - start)
        self._say(table, done, total, time.monotonic() - start)

    @staticmethod
    def _say(table: str, done: int, total: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        print(f"world: {table}: {done:,}/{total:,} rows, {elapsed:.1f}s, {rate:,.0f} rows/s", file=sys.stderr)


class _S3Writer:
    """Puts objects from a small thread pool; at most ``max_pending`` documents in flight."""

    def __init__(self, client: Any, bucket: str, workers: int = 8, max_pending: int = 256) -> None:
        self._client = client
        self._bucket = bucket
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="world-s3")
        self._pending: deque[Future[None]] = deque()
        self._max_pending = max_pending

    def __enter__(self) -> _S3Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def ensure_versioned_bucket(self) -> None:
        """Create the bucket if it is missing and switch versioning on."""
        existing = {b["Name"] for b in self._client.list_buckets().get("Buckets", [])}
        if self._bucket not in existing:
            self._client.create_bucket(Bucket=self._bucket)
        self._client.put_bucket_versioning(Bucket=self._bucket, VersioningConfiguration={"Status": "Enabled"})

    def put_versions(self, key: str, bodies: Sequence[bytes]) -> None:
        """Queue ``bodies`` as successive versions of ``key`` (the last one becomes current)."""
        self._pending.append(self._pool.submit(self._put_all, key, bodies))
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def _put_all(self, key: str, bodies: Sequence[bytes]) -> None:
        for body in bodies:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=body, ContentType="text/plain; charset=utf-8"
            )


class _ArchiveWriter:
    """Writes files under an archive root through SFTP, creating directories as needed."""

    def __init__(self, sftp: Any, root: str) -> None:
        self._sftp = sftp
        self._root = root
        self._known_dirs: set[str] = set()

    def write(self, rel: str, data: bytes) -> None:
        path = posixpath.join(self._root, rel)
        self._make_dirs(posixpath.dirname(path))
        with self._sftp.open(path, "wb") as f:
            f.write(data)

    def _make_dirs(self, directory: str) -> None:
        if directory in self._known_dirs:
            return
        parent = posixpath.dirname(directory)
        if parent != directory:
            self._make_dirs(parent)
        try:
            self._sftp.stat(directory)
        except FileNotFoundError:
            self._sftp.mkdir(directory)
        # Documents arrive grouped by customer and job, so a small cache of directories suffices.
        if len(self._known_dirs) > 10_000:
            self._known_dirs.clear()
        self._known_dirs.add(directory)


def _uses_copy(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


def _load(engine: Engine, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
    """Bulk-insert ``rows`` (tuples in column order) into ``table`` in one transaction."""
    with engine.begin() as conn:
        if _uses_copy(engine):
            _copy(conn, table, rows)
        else:
            _insert_chunks(conn, table, rows)


def _copy(conn: Connection, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
    columns = ", ".join(c.name for c in table.columns)
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the database connection is closed")
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _insert_chunks(
    conn: Connection, table: Table, rows: Iterable[tuple[Any, ...]], chunk: int = 5_000
) -> None:
    names = [c.name for c in table.columns]
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(names, row, strict=True)))
        if len(batch) >= chunk:
            conn.execute(table.insert(), batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)


def _spec_rows(table: str, specs: Iterable[Spec], truth: Truth) -> Iterator[tuple[Any, ...]]:
    for spec in specs:
        truth.record(table, spec.row[0], spec.customer_id, spec.fate)
        yield spec.row


def _document_rows(
    specs: Iterable[DocSpec], truth: Truth, s3: _S3Writer | None, archive: _ArchiveWriter | None
) -> Iterator[tuple[Any, ...]]:
    for spec in specs:
        if s3 is not None:
            s3.put_versions(spec.files.key, spec.bodies)
        if archive is not None and spec.files.archive_path is not None:
            archive.write(spec.files.archive_path, spec.bodies[-1])
        truth.record("documents", spec.row[0], spec.customer_id, spec.fate)
        truth.record_files(spec.row[0], spec.customer_id, spec.fate, spec.files)
        yield spec.row


def _put_unrelated(s3: _S3Writer) -> dict[str, int]:
    for key, bodies in words.TEMPLATES:
        s3.put_versions(key, [b.encode() for b in bodies])
    s3.drain()
    return {key: len(bodies) for key, bodies in words.TEMPLATES}


def _place_holds(registry: HoldRegistry, held: Iterable[int], now: datetime) -> None:
    registry.ensure_schema()
    # Placed well before the world's "now", whatever the wall clock says, so a hold is in force
    # at the nightly run however the engine reads a hold's start.
    placed = as_utc(now) - timedelta(days=30)
    for n, cid in enumerate(sorted(held), 1):
        reason = f"Verserende retssag, bevaringspligt (sag RS-{n:04d})"
        registry.add(reason=reason, subject=str(cid), now=placed)


def generate(
    engine: Engine,
    *,
    s3_client: Any = None,
    bucket: str | None = None,
    sftp_client: Any = None,
    archive_root: str | None = None,
    size: WorldSize,
    seed: int = 7,
    now: datetime = NOW,
    holds_engine: Engine | None = None,
    keep_truth: bool = True,
    progress: bool = False,
) -> World:
    """Create the schema in an empty database and fill it (and S3, the archive) with a deterministic world.

    Without ``s3_client``/``sftp_client`` only the database is filled (the document rows still
    name their keys and paths). Legal holds are registered on ``holds_engine or engine``.
    With ``keep_truth=False`` the returned world knows counts only, not ids.
    """
    if (s3_client is None) != (bucket is None):
        raise ValueError("s3_client and bucket go together")
    if (sftp_client is None) != (archive_root is None):
        raise ValueError("sftp_client and archive_root go together")
    plan = Plan(seed, size, now)
    create_schema(engine)
    _place_holds(HoldRegistry(holds_engine or engine), plan.held, now)
    truth = Truth(keep_truth, plan.held)
    report = _Progress(progress)
    unrelated: dict[str, int] = {}
    with ExitStack() as stack:
        s3 = stack.enter_context(_S3Writer(s3_client, bucket)) if s3_client is not None and bucket else None
        archive = (
            _ArchiveWriter(sftp_client, archive_root) if sftp_client is not None and archive_root else None
        )
        if s3 is not None:
            s3.ensure_versioned_bucket()
            unrelated = _put_unrelated(s3)
        for table in TABLES:
            rows: Iterable[tuple[Any, ...]] = (
                _document_rows(plan.documents(), truth, s3, archive)
                if table == "documents"
                else _spec_rows(table, plan.specs(table), truth)
            )
            _load(engine, metadata.tables[table], report.track(table, size.rows(table), rows))
            if s3 is not None:
                s3.drain()
    _analyze(engine)
    return World(
        seed=seed,
        size=size,
        now=now,
        profiles=plan.profiles,
        truth=truth,
        personas=plan.personas,
        bucket=bucket,
        archive_root=archive_root,
        unrelated_objects=unrelated,
    )


def _analyze(engine: Engine) -> None:
    """Fresh planner statistics, so queries against a just-loaded big world use the indexes."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(text(f"ANALYZE {table}"))
