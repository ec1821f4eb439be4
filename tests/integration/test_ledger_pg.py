"""The ledger on real PostgreSQL: append-only trigger, concurrent appenders, a long chain in flat memory."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.ledger import Ledger, LedgerEntry
from retention.pseudonym import pseudonymise

KEY = b"k" * 32
POLICIES = hashlib.sha256(b"policies").hexdigest()


def make_entry(i: int, run_id: str = "scheduled__2026-05-01T02:00:00+00:00") -> LedgerEntry:
    return LedgerEntry(
        run_id=run_id,
        category="customer_documents",
        store="s3",
        location="documents/{customer_id}/",
        action="delete",
        outcome="erased",
        count=i,
        items_digest=hashlib.sha256(f"keys {i}".encode()).hexdigest(),
        subject_ref=pseudonymise(KEY, f"customer-{i}"),
        reason="Bogføringsloven §10",
        until="2031-12-31",
        policy_set_hash=POLICIES,
        detail={"batches": i, "code": "ok"},
    )


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def sql(engine: Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement))


@pytest.fixture
def ledger(fresh_db: Engine) -> Ledger:
    ledger = Ledger(fresh_db)
    ledger.ensure_schema()
    ledger.append_many([make_entry(i) for i in range(1, 6)])
    return ledger


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE retention_ledger SET count = 0 WHERE seq = 3",
        "UPDATE retention_ledger SET reason = NULL",
        "DELETE FROM retention_ledger WHERE seq = 5",
        "DELETE FROM retention_ledger",
        "TRUNCATE retention_ledger",
    ],
)
def test_the_database_refuses_to_change_or_remove_entries(
    ledger: Ledger, fresh_db: Engine, statement: str
) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        sql(fresh_db, statement)
    status = ledger.verify_chain()
    assert (status.ok, status.checked) == (True, 5)
    assert [e["count"] for e in ledger.entries()] == [5, 4, 3, 2, 1]


def test_ensure_schema_is_idempotent_and_re_enables_a_disabled_trigger(
    ledger: Ledger, fresh_db: Engine
) -> None:
    sql(fresh_db, "ALTER TABLE retention_ledger DISABLE TRIGGER retention_ledger_append_only")
    sql(fresh_db, "DELETE FROM retention_ledger WHERE seq = 5")
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq) == (False, 5)
    ledger.ensure_schema()
    ledger.ensure_schema()
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        sql(fresh_db, "DELETE FROM retention_ledger WHERE seq = 4")
    assert ledger.count() == 4


def test_an_edit_made_with_the_trigger_off_is_still_detected(ledger: Ledger, fresh_db: Engine) -> None:
    sql(fresh_db, "ALTER TABLE retention_ledger DISABLE TRIGGER retention_ledger_append_only")
    sql(
        fresh_db,
        "UPDATE retention_ledger SET recorded_at = recorded_at + interval '1 microsecond' WHERE seq = 2",
    )
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq, status.checked) == (False, 2, 1)


# --- concurrent appenders -----------------------------------------------------------------------

WORKERS = 4
PER_WORKER = 150


def _append_worker(url: str, worker: int, start: Any) -> None:
    engine = sa.create_engine(url)
    ledger = Ledger(engine)
    start.wait()
    ledger.ensure_schema()  # racing the other workers: schema creation must be safe too
    for i in range(PER_WORKER):
        if i % 10 == 0:
            ledger.append_many([make_entry(i, f"worker_{worker}"), make_entry(i, f"worker_{worker}")])
        else:
            ledger.append(make_entry(i, f"worker_{worker}"))
    engine.dispose()


def test_concurrent_appenders_in_several_processes_keep_one_chain(fresh_db: Engine) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_worker, args=(url_of(fresh_db), w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    per_worker = PER_WORKER + PER_WORKER // 10
    ledger = Ledger(fresh_db)
    status = ledger.verify_chain()
    assert (status.ok, status.checked) == (True, WORKERS * per_worker)
    assert [ledger.count(run_id=f"worker_{w}") for w in range(WORKERS)] == [per_worker] * WORKERS


# --- a long chain -------------------------------------------------------------------------------

LONG = 100_000
MAX_GROWTH_MB = 64


def _memory_mb(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM) in MB: this process's own memory, not its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"{field} not in /proc/self/status")


def _verify_in_fresh_process(url: str, results: Any) -> None:
    engine = sa.create_engine(url)
    ledger = Ledger(engine)
    ledger.entries(limit=1000)  # connect, import and set up row processing; not measured
    baseline = _memory_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM, the peak, to the current RSS
    began = time.perf_counter()
    status = ledger.verify_chain()
    seconds = time.perf_counter() - began
    peak = _memory_mb("VmHWM")
    engine.dispose()
    results.put((status.ok, status.checked, seconds, baseline, peak))


def test_verify_chain_walks_100000_entries_in_flat_memory(fresh_db: Engine) -> None:
    ledger = Ledger(fresh_db)
    ledger.ensure_schema()
    began = time.perf_counter()
    for chunk in range(0, LONG, 10_000):
        ledger.append_many([make_entry(i) for i in range(chunk, chunk + 10_000)])
    appended = time.perf_counter() - began

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_verify_in_fresh_process, args=(url_of(fresh_db), results))
    proc.start()
    ok, checked, seconds, baseline_mb, peak_mb = results.get(timeout=600)
    proc.join(timeout=60)

    print(
        f"\nledger: appended {LONG} entries in {appended:.1f} s; verify_chain took {seconds:.1f} s, "
        f"peak RSS {peak_mb} MB (baseline {baseline_mb} MB, growth {peak_mb - baseline_mb} MB)"
    )
    assert (ok, checked) == (True, LONG)
    assert peak_mb - baseline_mb < MAX_GROWTH_MB
