"""The ledger on SQLite files: the chain, tamper evidence, concurrent appenders, the personal-data guard."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.errors import TerminalError
from retention.ledger import GENESIS_HASH, ChainStatus, Ledger, LedgerEntry, entry_hash
from retention.pseudonym import is_pseudonym, pseudonymise

KEY = b"k" * 32
RUN = "scheduled__2026-05-01T02:00:00+00:00"


def make_entry(i: int, **overrides: Any) -> LedgerEntry:
    """An entry with every field filled, so that editing any column changes something hashed."""
    fields: dict[str, Any] = dict(
        run_id=RUN,
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
        policy_set_hash=hashlib.sha256(b"policies").hexdigest(),
        detail={"batches": i, "code": "ok"},
    )
    fields.update(overrides)
    return LedgerEntry(**fields)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    ledger = Ledger(engine)
    ledger.ensure_schema()
    return ledger


def fill(ledger: Ledger, n: int) -> list[str]:
    return [ledger.append(make_entry(i)).entry_hash for i in range(1, n + 1)]


def sql(engine: Engine, statement: str, **params: Any) -> None:
    """Tamper the way an intruder would: raw SQL, bypassing the ledger API."""
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


# --- the chain ----------------------------------------------------------------------------------


def test_an_empty_ledger_verifies(ledger: Ledger) -> None:
    assert ledger.verify_chain() == ChainStatus(True, 0, GENESIS_HASH, None, None)


def test_appends_form_one_chain_that_verifies(ledger: Ledger) -> None:
    hashes = fill(ledger, 5)
    status = ledger.verify_chain()
    assert (status.ok, status.checked, status.head_hash) == (True, 5, hashes[-1])
    rows = ledger.entries(limit=10)
    assert [r["seq"] for r in rows] == [5, 4, 3, 2, 1]
    assert rows[-1]["prev_hash"] == GENESIS_HASH
    assert [r["prev_hash"] for r in rows[:-1]] == [r["entry_hash"] for r in rows[1:]]


@pytest.mark.parametrize("key_period", [None, "2026"])
def test_entry_hash_is_sha256_of_the_canonical_json_of_every_stored_field(
    ledger: Ledger, engine: Engine, key_period: str | None
) -> None:
    appended = ledger.append(dataclasses.replace(make_entry(1), key_period=key_period))
    with engine.connect() as conn:
        row = dict(conn.execute(sa.text("SELECT * FROM retention_ledger")).mappings().one())
    stored_hash = row.pop("entry_hash")
    assert row["key_period"] == key_period
    if key_period is None:
        del row["key_period"]  # hashed only when set: entries from before the field keep their hashes
    assert (row["seq"], row["prev_hash"], row["count"]) == (1, GENESIS_HASH, 1)
    row["recorded_at"] = datetime.fromisoformat(row["recorded_at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert stored_hash == appended.entry_hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_append_many_is_one_transaction(ledger: Ledger) -> None:
    fill(ledger, 2)
    same = make_entry(3)
    with pytest.raises(TerminalError):
        ledger.append_many([make_entry(4), same, same])  # duplicate entry_id: the database refuses
    assert ledger.count() == 2
    assert ledger.verify_chain().ok
    appended = ledger.append_many([make_entry(3), make_entry(4)])
    assert [a.seq for a in appended] == [3, 4]
    assert ledger.verify_chain().checked == 4


@pytest.mark.parametrize("batch_size", [1, 3, 10_000])
def test_verification_streams_in_any_batch_size(ledger: Ledger, engine: Engine, batch_size: int) -> None:
    fill(ledger, 10)
    assert ledger.verify_chain(batch_size=batch_size).checked == 10
    sql(engine, "DELETE FROM retention_ledger WHERE seq = 7")
    status = ledger.verify_chain(batch_size=batch_size)
    assert (status.ok, status.first_bad_seq, status.checked) == (False, 7, 6)


# --- tamper evidence ----------------------------------------------------------------------------

EDITS: dict[str, Any] = {
    "seq": 1000,
    "entry_id": "00000000-0000-4000-8000-000000000000",
    "recorded_at": "2020-01-01 00:00:00.000000",
    "run_id": "manual__2026-05-02T00:00:00+00:00",
    "category": "invoices",
    "store": "database",
    "location": "elsewhere/",
    "action": "anonymise",
    "outcome": "kept",
    "count": 999,
    "items_digest": "0" * 64,
    "subject_ref": "psn:" + "0" * 32,
    "reason": "legal_hold",
    "until": "2099-01-01",
    "policy_set_hash": "1" * 64,
    "detail": '{"batches":3,"code":"changed"}',
    "prev_hash": "2" * 64,
    "entry_hash": "3" * 64,
}


@pytest.mark.parametrize("column", sorted(EDITS))
def test_editing_any_field_of_an_entry_is_detected(ledger: Ledger, engine: Engine, column: str) -> None:
    fill(ledger, 5)
    sql(engine, f'UPDATE retention_ledger SET "{column}" = :v WHERE seq = 3', v=EDITS[column])  # noqa: S608
    status = ledger.verify_chain()
    assert not status.ok
    assert status.first_bad_seq == 3
    assert status.checked == 2


@pytest.mark.parametrize("column", ["run_id", "location", "detail", "reason", "until", "subject_ref"])
def test_setting_a_field_to_null_is_detected(ledger: Ledger, engine: Engine, column: str) -> None:
    fill(ledger, 3)
    sql(engine, f'UPDATE retention_ledger SET "{column}" = NULL WHERE seq = 2')  # noqa: S608
    assert ledger.verify_chain().first_bad_seq == 2


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(ledger: Ledger, engine: Engine) -> None:
    fill(ledger, 5)
    forged = {**ledger.entries(offset=2, limit=1)[0], "count": 0, "detail": '{"batches":3,"code":"ok"}'}
    sql(engine, "UPDATE retention_ledger SET count = 0, entry_hash = :h WHERE seq = 3", h=entry_hash(forged))
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq) == (False, 4)
    assert "does not follow" in (status.problem or "")


def test_deleting_a_middle_entry_is_detected(ledger: Ledger, engine: Engine) -> None:
    hashes = fill(ledger, 5)
    sql(engine, "DELETE FROM retention_ledger WHERE seq = 3")
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq, status.checked, status.head_hash) == (False, 3, 2, hashes[1])
    assert "missing" in (status.problem or "")


def test_deleting_a_middle_entry_and_renumbering_is_detected(ledger: Ledger, engine: Engine) -> None:
    fill(ledger, 5)
    sql(engine, "DELETE FROM retention_ledger WHERE seq = 3")
    sql(engine, "UPDATE retention_ledger SET seq = seq - 1 WHERE seq > 3")
    sql(engine, "UPDATE retention_ledger_head SET last_seq = 4")
    assert ledger.verify_chain().first_bad_seq == 3


@pytest.mark.parametrize("deleted", [1, 2])
def test_deleting_the_last_entries_is_detected(ledger: Ledger, engine: Engine, deleted: int) -> None:
    fill(ledger, 5)
    sql(engine, "DELETE FROM retention_ledger WHERE seq > :n", n=5 - deleted)
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq, status.checked) == (False, 6 - deleted, 5 - deleted)


def test_deleting_everything_is_detected(ledger: Ledger, engine: Engine) -> None:
    fill(ledger, 3)
    sql(engine, "DELETE FROM retention_ledger")
    assert ledger.verify_chain().first_bad_seq == 1


def test_rolling_the_head_back_is_detected(ledger: Ledger, engine: Engine) -> None:
    hashes = fill(ledger, 3)
    sql(engine, "UPDATE retention_ledger_head SET last_seq = 2, last_hash = :h", h=hashes[1])
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq) == (False, 3)


def test_editing_the_head_hash_is_detected(ledger: Ledger, engine: Engine) -> None:
    fill(ledger, 3)
    sql(engine, "UPDATE retention_ledger_head SET last_hash = :h", h="f" * 64)
    assert ledger.verify_chain().first_bad_seq == 3


def test_swapping_the_contents_of_two_entries_is_detected(ledger: Ledger, engine: Engine) -> None:
    fill(ledger, 5)
    sql(engine, "UPDATE retention_ledger SET seq = -2 WHERE seq = 2")
    sql(engine, "UPDATE retention_ledger SET seq = 2 WHERE seq = 3")
    sql(engine, "UPDATE retention_ledger SET seq = 3 WHERE seq = -2")
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq) == (False, 2)


def test_an_entry_inserted_after_the_head_is_detected(ledger: Ledger, engine: Engine) -> None:
    hashes = fill(ledger, 3)
    forged = {**ledger.entries(limit=1)[0], "seq": 4, "prev_hash": hashes[-1], "detail": None}
    forged["entry_id"] = "00000000-0000-4000-8000-000000000004"
    forged["entry_hash"] = entry_hash(forged)
    table = sa.Table("retention_ledger", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert().values({**forged, "recorded_at": forged["recorded_at"].replace(tzinfo=None)})
        )
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq, status.checked) == (False, 4, 3)


def test_an_entry_inserted_before_the_chain_is_detected(ledger: Ledger, engine: Engine) -> None:
    fill(ledger, 3)
    sql(engine, "UPDATE retention_ledger SET seq = 0 WHERE seq = 1")
    status = ledger.verify_chain()
    assert (status.ok, status.first_bad_seq) == (False, 0)


def test_a_missing_head_is_reported_and_not_silently_recreated(ledger: Ledger, engine: Engine) -> None:
    fill(ledger, 2)
    sql(engine, "DELETE FROM retention_ledger_head")
    assert ledger.verify_chain().problem == "the head row is missing"
    with pytest.raises(TerminalError, match="head row is missing"):
        ledger.ensure_schema()
    with pytest.raises(TerminalError, match="not initialised"):
        ledger.append(make_entry(3))


def test_ensure_schema_is_idempotent_and_keeps_entries(ledger: Ledger) -> None:
    fill(ledger, 2)
    ledger.ensure_schema()
    assert ledger.verify_chain().checked == 2


def test_appending_before_ensure_schema_fails_terminally(engine: Engine) -> None:
    with pytest.raises(TerminalError):
        Ledger(engine).append(make_entry(1))


def test_a_configured_table_name_is_used_and_checked(engine: Engine) -> None:
    other = Ledger(engine, table_name="audit_ledger")
    other.ensure_schema()
    other.append(make_entry(1))
    assert set(sa.inspect(engine).get_table_names()) == {"audit_ledger", "audit_ledger_head"}
    with pytest.raises(TerminalError):
        Ledger(engine, table_name="ledger; DROP TABLE x")


# --- concurrent appenders -----------------------------------------------------------------------

PER_WORKER = 200


def _append_worker(url: str, worker: int, start: Any) -> None:
    engine = sa.create_engine(url)
    ledger = Ledger(engine)
    start.wait()
    for i in range(PER_WORKER):
        ledger.append(make_entry(i, run_id=f"worker_{worker}"))
    engine.dispose()


def test_two_processes_appending_at_once_keep_one_chain(ledger: Ledger, engine: Engine) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_worker, args=(str(engine.url), w, start)) for w in (1, 2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    status = ledger.verify_chain()
    assert (status.ok, status.checked) == (True, 2 * PER_WORKER)
    assert ledger.count(run_id="worker_1") == ledger.count(run_id="worker_2") == PER_WORKER


# --- reading for the UI -------------------------------------------------------------------------


def test_entries_count_and_outcomes_filter_and_page(ledger: Ledger) -> None:
    ledger.append_many(
        [
            make_entry(3, outcome="erased"),
            make_entry(4, outcome="erased"),
            make_entry(2, outcome="kept", reason="legal_hold"),
            make_entry(5, outcome="erased", store="database"),
            make_entry(7, outcome="erased", category="invoices", run_id="manual__2026-05-02T10:00:00+00:00"),
        ]
    )
    assert ledger.count() == 5
    assert ledger.count(run_id=RUN) == 4
    assert ledger.count(category="invoices") == 1
    assert ledger.count(run_id=RUN, category="invoices") == 0
    assert [e["count"] for e in ledger.entries(run_id=RUN, offset=1, limit=2)] == [2, 4]
    assert ledger.entries(category="invoices")[0]["detail"] == {"batches": 7, "code": "ok"}
    assert ledger.outcomes_for_run(RUN) == {
        ("customer_documents", "s3", "erased"): 7,
        ("customer_documents", "s3", "kept"): 2,
        ("customer_documents", "database", "erased"): 5,
    }
    assert ledger.outcomes_for_run("no such run") == {}
    with pytest.raises(TerminalError):
        ledger.entries(limit=0)


def test_recorded_at_is_utc_aware_and_follows_append_order(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    fill(ledger, 3)
    times = [e["recorded_at"] for e in reversed(ledger.entries())]
    assert all(t.tzinfo == UTC for t in times)
    assert before <= times[0] <= times[1] <= times[2] <= datetime.now(UTC)


# --- the personal-data guard --------------------------------------------------------------------

REFUSED: list[tuple[str, Any, str]] = [
    ("reason", "kontakt jens.hansen@example.dk", "jens.hansen@example.dk"),
    ("location", "customers/+45 12 34 56 78/", "12 34 56 78"),
    ("run_id", "manual__ring 20304050", "20304050"),
    ("category", "cpr 010190-1234", "010190-1234"),
    ("store", "s3 (42) 12-34-56-78", "12-34-56-78"),
    ("detail", {"note": "ring +4512345678"}, "+4512345678"),
    ("detail", {"anna@example.com": 1}, "anna@example.com"),
    ("detail", {"errors": ["fine", ["nested 87654321"]]}, "87654321"),
    ("subject_ref", "customer-17", "customer-17"),
    ("subject_ref", "psn:" + "A" * 32, "A" * 32),
]


@pytest.mark.parametrize(("name", "value", "secret"), REFUSED)
def test_contact_data_is_refused_without_echoing_it(name: str, value: Any, secret: str) -> None:
    with pytest.raises(TerminalError) as refused:
        make_entry(1, **{name: value})
    assert secret not in str(refused.value)
    assert name in str(refused.value)


MALFORMED: list[tuple[str, Any]] = [
    ("outcome", "deleted"),
    ("action", "Delete now"),
    ("count", -1),
    ("count", True),
    ("items_digest", "not-hex"),
    ("policy_set_hash", "ABCDEF0123456789"),
    ("until", "31/12/2031"),
    ("until", "2031-02-30"),
    ("entry_id", "not-a-uuid"),
    ("entry_id", "00000000-0000-4000-8000-00000000000A"),
    ("reason", "line\nbreak"),
    ("location", "x" * 1001),
    ("detail", {"big": "x" * 5000}),
    ("detail", {"nan": float("nan")}),
    ("detail", {"obj": object()}),
    ("detail", {1: "int key"}),
    ("detail", ["not", "a", "dict"]),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED)
def test_malformed_fields_are_refused(name: str, value: Any) -> None:
    with pytest.raises(TerminalError):
        make_entry(1, **{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("run_id", "manual__2026-05-01T02:00:00.123456+00:00"),
        ("run_id", "scheduled__2026-05-01T02:00:00+00:00"),
        ("reason", "Bogføringsloven §10, stk. 1"),
        ("reason", "object_lock"),
        ("until", "2031-01-01T00:00:00+00:00"),
        ("location", "archive/2019/12/31/"),
        ("detail", {"erased": 12_345_678, "errors": ["AccessDenied"], "kept": 0}),
        ("detail", {}),
    ],
)
def test_ordinary_ledger_text_is_accepted(ledger: Ledger, name: str, value: Any) -> None:
    ledger.append(make_entry(1, **{name: value}))
    assert ledger.verify_chain().ok


# --- pseudonyms ---------------------------------------------------------------------------------


def test_a_pseudonym_is_the_truncated_hmac_of_namespace_and_value() -> None:
    expected = hmac.new(KEY, b"subject\x0017", hashlib.sha256).hexdigest()[:32]
    assert pseudonymise(KEY, "17") == "psn:" + expected
    assert is_pseudonym(pseudonymise(KEY, "17"))
    assert pseudonymise(KEY, "17") == pseudonymise(KEY, "17")
    assert pseudonymise(KEY, "17") != pseudonymise(KEY, "18")
    assert pseudonymise(KEY, "17") != pseudonymise(b"j" * 32, "17")
    assert pseudonymise(KEY, "17") != pseudonymise(KEY, "17", namespace="customers.email")


@pytest.mark.parametrize("key", [b"", b"k" * 15, "k" * 32])
def test_a_missing_or_short_key_is_refused(key: Any) -> None:
    with pytest.raises(TerminalError, match="key"):
        pseudonymise(key, "17")


def test_a_namespace_cannot_smuggle_the_separator() -> None:
    with pytest.raises(TerminalError):
        pseudonymise(KEY, "b", namespace="a\x00")
    with pytest.raises(TerminalError):
        pseudonymise(KEY, "b", namespace="")


def test_a_walk_resumed_after_a_good_entry_checks_only_the_newer_ones(ledger: Ledger, engine: Engine) -> None:
    hashes = fill(ledger, 4)
    assert ledger.verify_chain().head_hash == hashes[-1]
    more = [ledger.append(make_entry(i)).entry_hash for i in range(5, 8)]
    resumed = ledger.verify_chain(after=(4, hashes[-1]))
    assert (resumed.ok, resumed.checked, resumed.head_hash) == (True, 7, more[-1])
    # A resumed walk trusts what it is told about the old part, and still catches the new part.
    sql(engine, 'UPDATE retention_ledger SET "count" = 99 WHERE seq = 6')
    assert ledger.verify_chain(after=(4, hashes[-1])).first_bad_seq == 6
    assert ledger.verify_chain(after=(4, "f" * 64)).first_bad_seq == 5, "a wrong start breaks the link"
