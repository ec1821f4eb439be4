"""Pseudonym keys that expire (#13), on real PostgreSQL.

Customers' erasures are written to the ledger by the engine under two clocks, 2020 and 2026, each
run pseudonymising with its year's key (``retention.keyring``), as ``clients.open_context`` sets
it up. Then housekeeping's pass destroys 2020's key (``keep`` P5Y: due on 2026-01-01). Afterwards
every customer id of the world, and a thousand more, is pseudonymised with every key that is left
and with the master key: no 2020 entry's customer reference is among them, every 2026 one is,
and names the right customer. Before the destruction the 2020 entries did link (the enumeration
works). Several processes asking for a year's first key at once get one key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from harness.world_truth import Profile
from retention.engine import RunContext, execute_step
from retention.errors import TerminalError
from retention.keyring import Keyring, period_of, shred_expired
from retention.ledger import Ledger, LedgerEntry
from retention.pseudonym import pseudonymise
from tests.integration.conftest import PSEUDONYM_KEY, WorldEnv
from tests.unit.test_ledger_key_period import old_ledger

MASTER = b"the-master-key-of-retention-pseudonym-01"
CLOCKS = {"2020": datetime(2020, 6, 15, 2, 0, tzinfo=UTC), "2026": datetime(2026, 6, 15, 2, 0, tzinfo=UTC)}
CATEGORY = "marketing_consents"


def period_context(env: WorldEnv, keyring: Keyring, subject: int, now: datetime) -> RunContext:
    """A customer's erasure as of ``now``, keyed as ``clients.open_context`` keys it: the year's key."""
    ctx = env.context(mode="subject", subject=str(subject))
    period = period_of(now)
    ctx.now, ctx.key_period, ctx.pseudonym_key = now, period, keyring.key(period)
    ctx.ledger = Ledger(env.engine, key_period=period)
    return ctx


def refs_by_period(engine: sa.Engine, run_ids: dict[str, str]) -> dict[str, dict[str, str]]:
    """Period -> {subject_ref: the run's customer}, from the ledger's entries of ``run_ids`` (run -> id)."""
    out: dict[str, dict[str, str]] = {}
    for entry in Ledger(engine).entries(limit=1000):
        if entry["run_id"] in run_ids and entry["subject_ref"]:
            out.setdefault(entry["key_period"], {})[entry["subject_ref"]] = run_ids[entry["run_id"]]
    return out


def enumerate_ids(keys: Iterable[bytes], ids: Iterable[str]) -> dict[str, str]:
    """Pseudonym -> id, for every id under every key: what someone holding the keys can link."""
    ids = list(ids)
    return {pseudonymise(key, i): i for key in keys for i in ids}


def test_after_a_year_s_key_is_destroyed_none_of_its_entries_links_to_a_customer(world_env: WorldEnv) -> None:
    env = world_env
    keyring = Keyring(env.engine, MASTER)
    keyring.ensure_schema()
    customers = [
        c for c in env.world.customers_with(Profile.ACTIVE) if env.world.customer_inventory(c).rows[CATEGORY]
    ][:6]
    assert len(customers) == 6
    policy = next(p for p in env.policies.policies if p.id == CATEGORY)
    run_ids: dict[str, str] = {}
    for i, customer in enumerate(customers):
        ctx = period_context(env, keyring, customer, CLOCKS["2020" if i % 2 else "2026"])
        result = execute_step(policy, "database", ctx)
        assert result.erased > 0
        run_ids[ctx.run_id] = str(customer)

    refs = refs_by_period(env.engine, run_ids)
    assert set(refs) == {"2020", "2026"} and all(len(r) == 3 for r in refs.values())
    every_id = [str(i) for i in range(0, env.world.size.customers + 1000)]
    before = enumerate_ids([keyring.key("2020")], every_id)
    assert {ref: before.get(ref) for ref in refs["2020"]} == refs["2020"], "the enumeration links, until..."

    done = shred_expired(keyring, now=CLOCKS["2026"], keep="P5Y", run_id="housekeeping_x", dry_run=False)
    assert (done.destroyed, done.left) == (("2020",), ())

    remaining = [keyring.key(p.period) for p in keyring.periods() if p.linkable]
    assert len(remaining) == 1
    linkable = enumerate_ids([*remaining, MASTER, PSEUDONYM_KEY], every_id)
    assert [ref for ref in refs["2020"] if ref in linkable] == []
    assert {ref: linkable.get(ref) for ref in refs["2026"]} == refs["2026"]
    with pytest.raises(TerminalError, match="2020 was destroyed"):
        keyring.key("2020")


def test_an_old_postgresql_ledger_gains_the_column_keeps_its_trigger_and_verifies(
    fresh_db: sa.Engine,
) -> None:
    old_ledger(fresh_db, 3)
    ledger = Ledger(fresh_db, key_period="2026")
    assert ledger.verify_chain().ok
    ledger.ensure_schema()
    ledger.append(LedgerEntry(action="run", outcome="summary", run_id="new_run"))
    status = Ledger(fresh_db).verify_chain()
    assert (status.ok, status.checked) == (True, 4), status.problem
    assert [e["key_period"] for e in ledger.entries()] == ["2026", None, None, None]
    with pytest.raises(sa.exc.ProgrammingError, match="append-only"), fresh_db.begin() as conn:
        conn.execute(sa.text("UPDATE retention_ledger SET key_period = '2020'"))


def test_processes_asking_for_a_year_s_first_key_at_once_get_one_key(fresh_db: sa.Engine) -> None:
    Keyring(fresh_db, MASTER).ensure_schema()
    start, keys, errors = threading.Barrier(8), [], []

    def ask() -> None:
        engine = sa.create_engine(fresh_db.url)  # an engine of its own, as another process has
        try:
            ring = Keyring(engine, MASTER)
            start.wait()
            keys.append(ring.key("2031"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(keys) == 8 and len(set(keys)) == 1
    assert [p.period for p in Keyring(fresh_db).periods()] == ["2031"]


# -- retention_housekeeping destroys the expired years under dag.test() ---------------------------


def housekeeping_run(**conf: Any) -> tuple[Any, dict[str, Any]]:
    from tests.integration.test_dags import _xcom, dag

    hk = dag("retention_housekeeping")
    for t in hk.tasks:
        t.retries = 0
    run = hk.test(run_conf=conf)
    return run, _xcom(run, "destroy_pseudonym_keys") if run.state == "success" else {}


@pytest.mark.long  # three DAG runs' worth of time; test_housekeeping runs this task too, unmarked
def test_housekeeping_destroys_the_expired_years_keys_and_records_it(
    fresh_db: sa.Engine, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_dags import _conn_json
    from tests.integration.test_subject_deployment import FIXTURE

    policies = tmp_path / "policies"
    policies.mkdir()
    for f in (FIXTURE / "policies").glob("*.yaml"):
        (policies / f.name).write_text(f.read_text())
    (policies / "_accountability.yaml").write_text("pseudonym_keys:\n  period: year\n  keep: P5Y\n")
    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(fresh_db))
    monkeypatch.setenv("RETENTION_POLICY_DIR", str(policies))
    monkeypatch.delenv("AIRFLOW_VAR_RETENTION_SETTINGS", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIRFLOW_METADATA",
        json.dumps({"conn_type": "sqlite", "host": str(airflow_db / "airflow.db")}),
    )
    keyring = Keyring(fresh_db, MASTER)
    keyring.ensure_schema()
    current = period_of(datetime.now(UTC))
    years = sorted({"2019", "2020", str(int(current) - 5), current})  # the year five before now is not due
    for year in years:
        keyring.key(year)
    due = [y for y in years if int(y) < int(current) - 5]
    ledger = Ledger(fresh_db)

    dry, planned = housekeeping_run(dry_run=True)
    assert dry.state == "success"
    assert (planned["due"], planned["destroyed"], planned["dry_run"]) == (due, [], True)
    assert all(p.linkable for p in keyring.periods()), "a dry run destroys nothing"

    real, done = housekeeping_run(dry_run=False)
    assert real.state == "success"
    assert (done["due"], done["destroyed"], done["left"]) == (due, due, [])
    assert {p.period: p.linkable for p in keyring.periods()} == {y: y not in due for y in years}
    for year in due:
        with pytest.raises(TerminalError, match=f"{year} was destroyed"):
            keyring.key(year)
    assert keyring.key(current)

    entries = [e for e in ledger.entries(limit=50) if e["action"] == "pseudonym_key"]
    assert sorted((e["run_id"], e["outcome"], e["detail"]["destroyed_period"]) for e in entries) == sorted(
        [(dry.run_id, "planned", y) for y in due] + [(real.run_id, "erased", y) for y in due]
    )
    assert ledger.verify_chain().ok
