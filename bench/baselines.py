"""What the engine is measured against, on identical copies of the data: the bounds and the naive baselines.

- PostgreSQL: one bare set-based ``DELETE``/``UPDATE`` per category (the bound, with the look
  again timed apart); row-by-row ORM deletes of a sample (naive).
- S3: a raw boto3 loop making the fewest requests (the bound); one DeleteObject per version
  on a sample bucket (naive).
- SFTP: OpenSSH's ``sftp -b`` with one ``rm`` per file, host key pinned (the bound); one SFTP
  connection per file on a sample (naive).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy import orm

from bench.common import PSEUDONYM_KEY, S3_PAGE
from bench.worlds import pg_connection
from harness.clients import SftpSpec, sftp_session
from harness.world_rules import NOW
from harness.world_schema import metadata as world_schema
from retention.clock import Cutoff, cutoff_for
from retention.holds import HoldRegistry
from retention.locations import DatabaseLocation
from retention.policy import Policy, PolicySet

# --------------------------------------------------------------------------- what is due (for bounds)


def _held(engine: sa.Engine, category: str) -> list[int]:
    holds = HoldRegistry(engine).current(category, NOW)
    return sorted(int(s) for s in holds.subjects if s.isdigit())


def _due_clause(policy: Policy) -> tuple[sql.Composable, dict[str, Any]]:
    """``anchor < cutoff AND subject not held`` for a policy's records table, as the engine selects them."""
    cutoff: Cutoff = cutoff_for(policy.retention, NOW)
    table = world_schema.tables[policy.records.table]
    anchor = table.c[policy.retention.anchor]
    is_date = anchor.type.python_type is not datetime
    op = "<" if is_date or not cutoff.inclusive else "<="
    bound: Any = cutoff.date_bound if is_date else cutoff.instant
    clause = sql.SQL("{} " + op + " %(cutoff)s AND {} <> ALL(%(held)s::bigint[])").format(
        sql.Identifier(anchor.name), sql.Identifier(policy.records.subject)
    )
    return clause, {"cutoff": bound}


def due_paths(db_url: str, policy: Policy, column: str) -> list[str]:
    """The file keys or paths (``column`` of the records) of a category's due, not held records."""
    engine = sa.create_engine(db_url)
    try:
        held = _held(engine, policy.id)
    finally:
        engine.dispose()
    clause, params = _due_clause(policy)
    query = sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL AND ").format(
        sql.Identifier(column), sql.Identifier(policy.records.table), sql.Identifier(column)
    )
    with pg_connection(db_url) as conn:
        rows = conn.execute(query + clause, {**params, "held": held}).fetchall()
    return [str(r[0]) for r in rows]


# --------------------------------------------------------------------------- PostgreSQL: bound and naive


def _set_clause(policy: Policy, loc: DatabaseLocation) -> tuple[sql.Composable, dict[str, Any]]:
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {"key": PSEUDONYM_KEY}
    for i, (name, rule) in enumerate(loc.fields.items()):
        col = sql.Identifier(name)
        if rule.strategy == "null":
            parts.append(sql.SQL("{} = NULL").format(col))
        elif rule.strategy == "pseudonym":
            # The same keyed pseudonym as retention.pseudonym, computed by pgcrypto in the server.
            params[f"ns{i}"] = f"{loc.table}.{name}"
            parts.append(
                sql.SQL(
                    "{} = 'psn:' || left(encode(hmac(convert_to({}, 'UTF8') || '\\x00'::bytea "
                    "|| convert_to({}, 'UTF8'), %(key)s, 'sha256'), 'hex'), 32)"
                ).format(col, sql.Placeholder(f"ns{i}"), col)
            )
        else:
            params[f"v{i}"] = "[slettet]" if rule.strategy == "redact" else rule.value
            parts.append(sql.SQL("{} = {}").format(col, sql.Placeholder(f"v{i}")))
    return sql.SQL(", ").join(parts), params


def database_bound(db_url: str, policies: PolicySet) -> dict[str, Any]:
    """One bare set-based DELETE or UPDATE per category and table, on the rows the engine erases."""
    engine = sa.create_engine(db_url)
    try:
        held = {p.id: _held(engine, p.id) for p in policies.policies}
    finally:
        engine.dispose()
    wall = verify = 0.0
    statements = rows = 0
    with pg_connection(db_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        for policy in policies.policies:
            for loc in policy.locations:
                if not isinstance(loc, DatabaseLocation):
                    continue
                if loc.table != policy.records.table:
                    raise RuntimeError(f"{policy.id}: the bound knows only locations on the records table")
                clause, params = _due_clause(policy)
                table = sql.Identifier(loc.table)
                if loc.action == "delete":
                    statement = sql.SQL("DELETE FROM {} WHERE ").format(table) + clause
                else:
                    sets, extra = _set_clause(policy, loc)
                    statement = sql.SQL("UPDATE {} SET {} WHERE ").format(table, sets) + clause
                    params.update(extra)
                started = time.perf_counter()
                cursor = conn.execute(statement, {**params, "held": held[policy.id]})
                wall += time.perf_counter() - started
                statements += 1
                rows += cursor.rowcount
                # Looking again, as the engine's verification does; timed apart from the bound.
                look = sql.SQL("SELECT count(*) FROM {} WHERE ").format(table) + clause
                if loc.action == "anonymise":
                    look = look + sql.SQL(" AND {} IS NOT NULL").format(sql.Identifier(_changed(loc)))
                started = time.perf_counter()
                conn.execute(look, {**params, "held": held[policy.id]}).fetchone()
                verify += time.perf_counter() - started
    return {"wall_s": wall, "statements": statements, "rows": rows, "verify_wall_s": verify}


def _changed(loc: DatabaseLocation) -> str:
    """A field the anonymisation sets to NULL, or else the first one (its count is what is timed)."""
    return next((n for n, r in loc.fields.items() if r.strategy == "null"), next(iter(loc.fields)))


def database_naive(db_url: str, policies: PolicySet, sample: int) -> dict[str, Any]:
    """Row-by-row ORM deletes (load, ``session.delete``, flush each) of a sample of due correspondence."""
    policy = policies.get("correspondence")
    table = world_schema.tables[policy.records.table]
    cutoff = cutoff_for(policy.retention, NOW)
    row_class = type("NaiveRow", (), {})
    orm.registry().map_imperatively(row_class, table)
    engine = sa.create_engine(db_url)
    try:
        held = _held(engine, policy.id)
        anchor = getattr(row_class, policy.retention.anchor)
        subject = getattr(row_class, policy.records.subject)
        due = anchor <= cutoff.instant if cutoff.inclusive else anchor < cutoff.instant
        query: sa.Select[Any] = sa.select(row_class).where(due, subject.not_in(held)).limit(sample)
        with orm.Session(engine) as session:
            started = time.perf_counter()
            objects = session.scalars(query).all()
            for obj in objects:
                session.delete(obj)
                session.flush()
            session.commit()
            wall = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"sample": len(objects), "sample_wall_s": wall}


# --------------------------------------------------------------------------- S3: raw loop and naive


def _entries(page: Mapping[str, Any]) -> list[dict[str, str]]:
    found = [*(page.get("Versions") or ()), *(page.get("DeleteMarkers") or ())]
    return [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in found]


def _list_due(
    client: Any, bucket: str, prefix: str, due: set[str]
) -> Iterator[tuple[list[dict[str, str]], bool]]:
    """Pages of (due versions, whether more pages follow), following the server's markers."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": S3_PAGE}
    while True:
        page = client.list_object_versions(**params)
        more = bool(page.get("IsTruncated"))
        yield [e for e in _entries(page) if e["Key"] in due], more
        if not more:
            return
        params.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])


def s3_raw_loop(client: Any, bucket: str, prefix: str, due: set[str]) -> dict[str, Any]:
    """The bound: list the prefix, DeleteObjects per 1,000 due versions, list again to verify."""
    counts = {"list": 0, "delete": 0, "verify": 0, "deleted": 0, "remaining": 0}
    pending: list[dict[str, str]] = []
    previous: list[dict[str, str]] = []

    def delete(chunk: list[dict[str, str]]) -> None:
        client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        counts["delete"] += 1
        counts["deleted"] += len(chunk)

    started = time.perf_counter()
    for versions, _more in _list_due(client, bucket, prefix, due):
        counts["list"] += 1
        # A page's last version is the marker of the next request: delete a page only after the next arrived.
        pending += previous
        previous = versions
        while len(pending) >= S3_PAGE:
            delete(pending[:S3_PAGE])
            pending = pending[S3_PAGE:]
    pending += previous
    for start in range(0, len(pending), S3_PAGE):
        delete(pending[start : start + S3_PAGE])
    erased_at = time.perf_counter()
    for versions, _more in _list_due(client, bucket, prefix, due):
        counts["verify"] += 1
        counts["remaining"] += len(versions)
    done = time.perf_counter()
    return {
        **counts,
        "requests": counts["list"] + counts["delete"] + counts["verify"],
        "wall_s": done - started,
        "list_and_verify_s": done - started - _delete_share(counts, erased_at - started),
    }


def _delete_share(counts: Mapping[str, int], erase_seconds: float) -> float:
    # The erase phase interleaves listing and deleting; its listing share is estimated per request.
    requests = counts["list"] + counts["delete"]
    return erase_seconds * counts["delete"] / requests if requests else 0.0


def s3_naive_sample(client: Any, bucket: str, objects: int, versions: int) -> dict[str, Any]:
    """One DeleteObject call per version, timed on a sample bucket of ``objects`` x ``versions``."""
    for i in range(objects):
        for v in range(versions):
            client.put_object(Bucket=bucket, Key=f"documents/sample/{i}.txt", Body=f"v{v}".encode())
    found: list[dict[str, str]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="documents/"):
        found += _entries(page)
    started = time.perf_counter()
    for entry in found:
        client.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    wall = time.perf_counter() - started
    return {"sample": len(found), "sample_wall_s": wall}


# --------------------------------------------------------------------------- SFTP: OpenSSH and naive


def openssh_bound(
    spec: SftpSpec, root: str, paths: Sequence[str], workdir: Path, *, prune: bool = False
) -> dict[str, Any]:
    """OpenSSH's ``sftp -b`` removing the same files, one ``rm`` a file, host key pinned.

    With ``prune`` it also removes the directories left empty, as the engine does (an ``rmdir``
    per parent directory, deepest first, a failure ignored: the directory still holds files).
    """
    sftp = shutil.which("sftp")
    if sftp is None:
        raise RuntimeError("OpenSSH's sftp client is not installed")
    lines = [f'rm "{root}/{p}"\n' for p in paths]
    if prune:
        parents = {"/".join(p.split("/")[:n]) for p in paths for n in range(1, p.count("/") + 1)}
        lines += [f'-rmdir "{root}/{d}"\n' for d in sorted(parents, key=lambda d: (-d.count("/"), d))]
    batch = workdir / "sftp-bound.batch"
    batch.write_text("".join(lines))
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{spec.host}]:{spec.port} {spec.host_key_line}\n")
    argv = [sftp, "-b", str(batch), "-i", spec.key_file, "-P", str(spec.port)]
    argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    argv += ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{spec.user}@{spec.host}"]
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # noqa: S603
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"sftp -b exited with code {proc.returncode}")
    left = sum(1 for p in paths if os.path.lexists(f"{root}/{p}"))
    if left:
        raise RuntimeError(f"sftp -b left {left} file(s)")
    return {"wall_s": wall, "files": len(paths), "commands": len(lines)}


def sftp_naive_sample(spec: SftpSpec, root: str, paths: Sequence[str]) -> dict[str, Any]:
    """One SFTP connection (handshake, authentication, remove, close) per file, on a sample."""
    started = time.perf_counter()
    for p in paths:
        with sftp_session(spec) as sftp:
            sftp.remove(f"{root}/{p}")
    return {"sample": len(paths), "sample_wall_s": time.perf_counter() - started}
