"""The small reference world on real PostgreSQL, S3 (moto server) and SFTP (OpenSSH)."""

from __future__ import annotations

import hashlib
import posixpath
import stat
from collections import Counter
from typing import Any

import pytest
from paramiko import SFTPClient
from sqlalchemy import Engine, text

from harness.world_rules import NOW, RULES, TABLES
from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import Fate, World
from retention.holds import HoldRegistry


@pytest.fixture
def world(
    fresh_db: Engine, s3_client: Any, s3_bucket: str, sftp_client: SFTPClient, archive_root: str
) -> World:
    return generate(
        fresh_db,
        s3_client=s3_client,
        bucket=s3_bucket,
        sftp_client=sftp_client,
        archive_root=archive_root,
        size=WorldSize.small(),
    )


def _version_counts(s3_client: Any, bucket: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for page in s3_client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        assert not page.get("DeleteMarkers"), "a fresh world has no delete markers"
        counts.update(v["Key"] for v in page.get("Versions", []))
    return counts


def _archive_files(sftp: SFTPClient, root: str, rel: str = "") -> set[str]:
    found: set[str] = set()
    for entry in sftp.listdir_attr(posixpath.join(root, rel) if rel else root):
        child = posixpath.join(rel, entry.filename) if rel else entry.filename
        if stat.S_ISDIR(entry.st_mode or 0):
            found |= _archive_files(sftp, root, child)
        else:
            found.add(child)
    return found


def _latest_body(s3_client: Any, bucket: str, key: str) -> bytes:
    body: bytes = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def test_every_document_has_its_object_versions_and_archive_file(
    world: World, fresh_db: Engine, s3_client: Any, s3_bucket: str, sftp_client: SFTPClient, archive_root: str
) -> None:
    with fresh_db.connect() as conn:
        docs = conn.execute(text("SELECT s3_key, archive_path, content_sha256 FROM documents")).all()
    versions = _version_counts(s3_client, s3_bucket)

    assert len(docs) == world.size.documents
    assert dict(versions) == world.s3_objects() | world.unrelated_objects
    assert {1, 2, 3} <= set(versions.values())
    for key, archive_path, sha in docs:
        assert versions[key] == world.s3_objects()[key], key
        assert hashlib.sha256(_latest_body(s3_client, s3_bucket, key)).hexdigest() == sha, key
        if archive_path is not None:
            with sftp_client.open(posixpath.join(archive_root, archive_path), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == sha, archive_path
    archived = {p for _, p, _ in docs if p is not None}
    assert archived == world.archive_paths() == _archive_files(sftp_client, archive_root)
    assert len(archived) == world.files.archive_files == 40
    assert sum(versions[k] for k in world.s3_objects()) == world.files.versions


def test_document_texts_carry_their_customers_canaries(world: World, s3_client: Any, s3_bucket: str) -> None:
    bodies = {key: _latest_body(s3_client, s3_bucket, key).decode() for key in world.s3_objects()}
    for cid in range(1, world.size.customers + 1):
        canaries = world.canaries(cid)
        own = set(world.customer_inventory(cid).s3_objects)
        with_phrase = {key for key, body in bodies.items() if canaries.phrase in body}
        with_name = {key for key, body in bodies.items() if canaries.name in body}
        assert with_phrase == with_name == own, cid
    assert any(world.customer_inventory(c).s3_objects for c in range(1, world.size.customers + 1))


def test_row_counts_and_ids_match_the_ground_truth(world: World, fresh_db: Engine) -> None:
    with fresh_db.connect() as conn:
        for table in TABLES:
            ids = set(conn.execute(text(f"SELECT id FROM {table}")).scalars())  # noqa: S608 - fixed names
            assert len(ids) == world.counts(table).total == WorldSize.small().rows(table), table
            assert ids == world.ids(table), table


def _due_sql(table: str, anchor: str, op: str) -> str:
    """Due, not-due and NULL counts and the due ids, by a plain comparison with ``:cutoff``."""
    due = f"{anchor} {op} :cutoff"
    return (
        f"SELECT count(*) FILTER (WHERE {due}), count(*) FILTER (WHERE NOT ({due})), "  # noqa: S608 - fixed names
        f"count(*) FILTER (WHERE {anchor} IS NULL), array_agg(id) FILTER (WHERE {due}) FROM {table}"
    )


def test_due_rows_by_plain_sql_match_the_ground_truth(world: World, fresh_db: Engine) -> None:
    with fresh_db.connect() as conn:
        for rule in RULES:
            # invoices: the cutoff is the first invoice date that is not yet due
            op = "<" if rule.anchor_kind == "financial_year_end" else "<="
            query = text(_due_sql(rule.table, rule.anchor, op))
            due, not_due, null, due_ids = conn.execute(query, {"cutoff": rule.cutoff(NOW)}).one()
            counts = world.counts(rule.table)
            assert (due, not_due, null) == (counts.due, counts.not_due, counts.null), rule.table
            assert set(due_ids or ()) == world.ids(rule.table, Fate.DUE), rule.table


def test_held_customers_are_registered(world: World, fresh_db: Engine) -> None:
    held = HoldRegistry(fresh_db).current("correspondence", NOW)
    assert held.subjects == {str(c) for c in world.held_customers}
    assert len(held.subjects) == 5
