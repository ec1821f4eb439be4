"""Erasures replayed after a backup is restored (``replay_erasures``), on the real services.

A backup is taken as ops would take it (``pg_dump`` of the business database, every version of
every object of the documents bucket, a copy of the archive), a customer is erased through
``customer_erasure``, the backup is restored, and ``replay_erasures`` erases the customer again
from the tombstone the erasure left in the ledger's own database. Afterwards the stores must
be exactly as right after the original erasure: the customer's canaries gone everywhere, every
other row, object version and archive file as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from harness.world_rules import NOW
from harness.world_truth import Profile
from retention.ledger import Ledger
from retention.tombstones import Tombstones
from tests.integration import test_dags
from tests.integration.conftest import WorldEnv
from tests.integration.test_dags import _conn_json, _xcom, dag
from tests.ledger_entries import policy_set_approved

airflow_world = test_dags.airflow_world
"""The world wired into Airflow as in production (``test_dags``'s fixture)."""

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TOMBSTONE_SECRET = b"test-tombstone-key-0123456789abcdef"
RECEIPTS_TABLE = "erasure_receipts"


@dataclass
class Replayable:
    """The world wired into Airflow with the ledger (and its tombstones) in a database of its own."""

    env: WorldEnv
    ledger_db: sa.Engine
    receipts_bucket: str
    pg_port: int


@pytest.fixture
def replayable(
    request: pytest.FixtureRequest, pg_server: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Replayable]:
    world: WorldEnv = request.getfixturevalue("airflow_world")
    name = f"ledger_{uuid.uuid4().hex[:16]}"
    ledger_db = sa.create_engine(pg_server.create_database(name))
    monkeypatch.setenv("AIRFLOW_CONN_RETENTION_LEDGER", _conn_json(ledger_db))
    try:
        yield Replayable(world, ledger_db, world.receipts_bucket, pg_server.port)  # type: ignore[attr-defined]
    finally:
        ledger_db.dispose()
        pg_server.drop_database(name)


# -- backup and restore, as ops would do them --------------------------------------------------------


def _pg(tool: str, env: Replayable, *args: str) -> None:
    url = env.env.engine.url
    argv = [str(PG_BIN / tool), "-h", str(url.host), "-p", str(url.port), "-U", "postgres", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def _versions(env: WorldEnv) -> list[dict[str, Any]]:
    """Every version and delete marker of the documents bucket, per key oldest first and the current one
    last (S3 lists a key's versions newest first; versions of the same second keep that order)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    pos = 0
    for page in env.s3_client.get_paginator("list_object_versions").paginate(Bucket=env.bucket):
        for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
            for v in page.get(kind, []):
                pos += 1
                by_key.setdefault(v["Key"], []).append({**v, "marker": marker, "pos": pos})
    found: list[dict[str, Any]] = []
    for key in sorted(by_key):
        older = sorted(
            (v for v in by_key[key] if not v["IsLatest"]), key=lambda v: (v["LastModified"], -v["pos"])
        )
        found += older + [v for v in by_key[key] if v["IsLatest"]]
    return found


def backup(env: Replayable, folder: Path) -> datetime:
    """Dump the business database, copy every object version and the archive; return when it was taken."""
    taken = datetime.now(UTC)
    world = env.env
    _pg("pg_dump", env, "-Fc", "-d", str(world.engine.url.database), "-f", str(folder / "business.dump"))
    objects = []
    for v in _versions(world):
        body = None
        if not v["marker"]:
            got = world.s3_client.get_object(Bucket=world.bucket, Key=v["Key"], VersionId=v["VersionId"])
            body = got["Body"].read()
        objects.append((v["Key"], body))
    (folder / "objects.json").write_text(
        json.dumps([(k, b.hex() if b is not None else None) for k, b in objects])
    )
    shutil.copytree(world.archive_root, folder / "archive", symlinks=True)
    return taken


def restore(env: Replayable, folder: Path) -> None:
    """Put all three stores back to the backup: the database, every version in order, the archive."""
    world = env.env
    world.engine.dispose()
    _pg(
        "pg_restore",
        env,
        "--clean",
        "--if-exists",
        "-d",
        str(world.engine.url.database),
        str(folder / "business.dump"),
    )
    for v in _versions(world):
        world.s3_client.delete_object(Bucket=world.bucket, Key=v["Key"], VersionId=v["VersionId"])
    for key, body in json.loads((folder / "objects.json").read_text()):
        if body is None:
            world.s3_client.delete_object(Bucket=world.bucket, Key=key)  # a delete marker
        else:
            world.s3_client.put_object(Bucket=world.bucket, Key=key, Body=bytes.fromhex(body))
    shutil.rmtree(world.archive_root)
    shutil.copytree(folder / "archive", world.archive_root, symlinks=True)


# -- what the stores hold ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    tables: dict[str, frozenset[tuple[Any, ...]]]
    objects: dict[str, tuple[tuple[str, ...], str]]
    """Key -> the SHA-256 of every version's body (sorted; ``-`` for a delete marker), and the current's."""
    files: dict[str, str]
    """Archive path -> SHA-256 of its content."""

    def text(self, env: WorldEnv) -> bytes:
        """Everything as bytes, to search for canaries: rows, every object version's body, every file."""
        rows = repr(sorted((t, sorted(map(repr, r))) for t, r in self.tables.items())).encode()
        bodies = [
            env.s3_client.get_object(Bucket=env.bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            for v in _versions(env)
            if not v["marker"]
        ]
        files = [p.read_bytes() for p in sorted(Path(env.archive_root).rglob("*")) if p.is_file()]
        return b"\n".join([rows, *bodies, *files])


def snapshot(env: WorldEnv) -> Snapshot:
    meta = sa.MetaData()
    meta.reflect(env.engine)
    with env.engine.connect() as c:
        tables = {t.name: frozenset(tuple(r) for r in c.execute(sa.select(t))) for t in meta.sorted_tables}
    digests: dict[str, list[str]] = {}
    current: dict[str, str] = {}
    for v in _versions(env):
        digest = "-"
        if not v["marker"]:
            body = env.s3_client.get_object(Bucket=env.bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"]
            digest = hashlib.sha256(body.read()).hexdigest()
        digests.setdefault(v["Key"], []).append(digest)
        if v["IsLatest"]:
            current[v["Key"]] = digest
    objects = {k: (tuple(sorted(d)), current[k]) for k, d in digests.items()}
    root = Path(env.archive_root)
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }
    return Snapshot(tables, objects, files)


def _without_receipts(snap: Snapshot) -> dict[str, frozenset[tuple[Any, ...]]]:
    return {t: rows for t, rows in snap.tables.items() if t != RECEIPTS_TABLE}


def _canaries(env: WorldEnv, cid: int) -> list[bytes]:
    c = env.world.canaries(cid)
    return [v.encode() for v in (c.name, c.email, c.phone, c.phrase)]


# -- the tests ---------------------------------------------------------------------------------------


def test_a_restored_backup_is_erased_again_exactly_as_the_erasure_did(
    replayable: Replayable, tmp_path: Path
) -> None:
    env, world = replayable.env, replayable.env.world
    # Tonight's run first, so that what is due is gone before the backup: the replay's nightly run then
    # has nothing of its own to erase, and any difference below is the replay's.
    assert (
        dag("retention_nightly").test(run_conf={"dry_run": False, "as_of": NOW.isoformat()}).state
        == "success"
    )
    cid = next(
        c for c in world.customers_with(Profile.ACTIVE) if world.customer_inventory(c).rows["invoices"]
    )
    canaries = _canaries(env, cid)
    taken = backup(replayable, tmp_path)

    erasure = dag("customer_erasure").test(
        run_conf={
            "customer_id": str(cid),
            "request_ref": "PR-2026-00042",
            "reason": "erasure_request",
            "dry_run": False,
        }
    )
    assert erasure.state == "success"
    erased = snapshot(env)
    # What the law keeps (the invoices, with the name on them) stays; everything else is gone.
    gone = [c for c in canaries if c not in erased.text(env)]
    c = world.canaries(cid)
    assert {c.email.encode(), c.phone.encode(), c.phrase.encode()} <= set(gone)
    graves = Tombstones(replayable.ledger_db, TOMBSTONE_SECRET)
    (grave,) = graves.since(taken)
    assert graves.open(grave.id).subject == str(cid) and grave.request_ref == "PR-2026-00042"

    restore(replayable, tmp_path)
    restored = snapshot(env)
    assert all(c in restored.text(env) for c in gone), "the restore brought the customer back"
    assert restored.tables[RECEIPTS_TABLE] == frozenset(), "the receipt's row is younger than the backup"

    replay = dag("replay_erasures").test(
        run_conf={"restored_to": taken.isoformat(), "dry_run": False, "as_of": NOW.isoformat()}
    )
    assert replay.state == "success"
    after = snapshot(env)
    assert not any(c in after.text(env) for c in gone), "the customer is gone again everywhere"
    assert _without_receipts(after) == _without_receipts(erased), "every other row as after the erasure"
    assert after.objects == erased.objects, "every other object version as after the erasure"
    assert after.files == erased.files, "every other archive file as after the erasure"
    assert after != restored

    (row,) = after.tables[RECEIPTS_TABLE]
    assert str(cid) in map(str, row) and "PR-2026-00042" in row and any(".replay-" in str(v) for v in row)
    done = _xcom(replay, "replay_erasure")
    assert done["verified"] and done["request_ref"] == "PR-2026-00042"
    assert set(done) == {"tombstone", "request_ref", "verified", "totals", "location"}, (
        "no customer id in XCom"
    )
    s3 = env.s3_client
    receipt = json.loads(
        s3.get_object(Bucket=replayable.receipts_bucket, Key=done["location"]["json_key"])["Body"].read()
    )
    assert receipt["replay_after_restore"] == {
        "restored_to": taken.isoformat(),
        "original_run_id": erasure.run_id,
    }
    text = (
        s3.get_object(Bucket=replayable.receipts_bucket, Key=done["location"]["markdown_key"])["Body"]
        .read()
        .decode()
    )
    assert (
        "Gentaget efter gendannelse af en sikkerhedskopi" in text
        and "Replayed after restoring a backup" in text
    )
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=replayable.receipts_bucket, Prefix="receipts/PR-2026-00042/")[
            "Contents"
        ]
    ]
    assert len(keys) == 4, (
        "the original receipt and the replay's, each as JSON and Markdown, in the request's folder"
    )

    assert graves.count() == 1, "a replay leaves no tombstone of its own"
    ledger = Ledger(replayable.ledger_db)
    assert ledger.verify_chain().ok
    with replayable.ledger_db.connect() as c:
        entries = repr(c.execute(sa.text("SELECT * FROM retention_ledger")).all())
    assert not any(c.decode() in entries for c in canaries)


def test_a_restored_to_in_the_future_is_refused_before_anything_runs(replayable: Replayable) -> None:
    env = replayable.env
    graves = Tombstones(replayable.ledger_db, TOMBSTONE_SECRET)
    graves.ensure_schema()
    graves.record(
        run_id="manual__earlier",
        request_ref="PR-2026-00042",
        reason="erasure_request",
        subject="1",
        completed_at=datetime.now(UTC),
    )
    Ledger(replayable.ledger_db).ensure_schema()
    before = snapshot(env)
    ledger_before = Ledger(replayable.ledger_db).count()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    run = dag("replay_erasures").test(run_conf={"restored_to": future, "dry_run": False})
    assert run.state == "failed"
    assert _task_states(run) == {
        "find_tombstones": "failed",
        "replay_erasure": "upstream_failed",
        "replay_nightly": "upstream_failed",
    }
    assert snapshot(env) == before and Ledger(replayable.ledger_db).count() == ledger_before


def test_the_replays_nightly_part_erases_nothing_under_a_policy_set_not_yet_approved(
    replayable: Replayable,
) -> None:
    env = replayable.env
    # An earlier dry run leaves the ledger's database as runs do (and approves nothing).
    assert (
        dag("retention_nightly").test(run_conf={"dry_run": True, "as_of": NOW.isoformat()}).state == "success"
    )
    ledger = Ledger(replayable.ledger_db)
    ledger.ensure_schema()
    ledger.append(policy_set_approved("cd" * 32))
    before = snapshot(env)
    restored_to = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    run = dag("replay_erasures").test(run_conf={"restored_to": restored_to, "dry_run": False})
    assert run.state == "failed"
    assert _task_states(run)["replay_nightly"] == "failed"
    assert snapshot(env) == before, "nothing erased under the policy set no human approved"


def _task_states(run: Any) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return {ti.task_id: str(ti.state) for ti in rows}


@pytest.mark.long
def test_the_nightly_run_deletes_expired_tombstones_and_only_those(replayable: Replayable) -> None:
    graves = Tombstones(replayable.ledger_db, TOMBSTONE_SECRET)
    graves.ensure_schema()
    # The nightly run's clock is NOW (as_of); tombstones.keep is P90D by default.
    for n, age in ((1, 120), (2, 91), (3, 89), (4, 1)):
        graves.record(
            run_id=f"manual__old-{n}",
            request_ref=f"PR-2026-0000{n}",
            reason="erasure_request",
            subject=str(n),
            completed_at=NOW - timedelta(days=age),
        )
    run = dag("retention_nightly").test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    assert run.state == "success"
    assert [t.request_ref for t in graves.since(NOW - timedelta(days=365))] == [
        "PR-2026-00003",
        "PR-2026-00004",
    ]
    ledger = Ledger(replayable.ledger_db)
    purged = [e for e in ledger.entries(run_id=run.run_id) if e["action"] == "tombstone"]
    assert [(e["outcome"], e["count"]) for e in purged] == [("erased", 2)]
    summary = next(e for e in ledger.entries(run_id=run.run_id) if e["action"] == "run")
    assert summary["detail"]["tombstones_purged"] == 2
