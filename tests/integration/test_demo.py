"""The demo's pieces that need no running Airflow: summary, customer choice, wiring, process handling.

The whole demo (``make demo``) is the end-to-end check; these tests keep its parts honest.
The summary is checked against a ledger the engine filled on the reference world, and its
numbers against the generator's ground truth, never against the engine's own report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from harness.airflow_api import RunOutcome
from harness.airflow_setup import airflow_components, airflow_env, write_private
from harness.demo_config import SWEEP, DemoError, policy_stores
from harness.demo_stores import STRAY_FILES, UNCOVERED_TABLE, choose_customer, plant_unmanaged, sqlite_conn
from harness.demo_summary import ledger_cells, nightly_summary, render_table, run_entries, sweep_summary
from harness.processes import MARKER, ProcessRecord, State, prepare_demo_dir, stop_demo
from harness.world_truth import Fate
from retention.flow import run_all
from retention.policy import load_policies
from retention.results import CategoryPlan
from retention.serde import to_json
from tests.integration.conftest import POLICY_DIR, WorldEnv

TIGHT = "marketing_consents"
"""The category whose cap the summary test closes, so that it waits for approval."""


def _tight_policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    for f in POLICY_DIR.glob("*.yaml"):
        if f.name.startswith("_"):  # settings (the customer-id format), not a category
            (folder / f.name).write_text(f.read_text())
            continue
        doc = yaml.safe_load(f.read_text())
        doc["cap"] = (
            {"max_items": 1, "max_fraction": 1.0}
            if doc["id"] == TIGHT
            else {"max_items": 10_000_000, "max_fraction": 1.0}
        )
        (folder / f.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
    return folder


def test_summary_of_an_engine_run_matches_the_world(world_env: WorldEnv, tmp_path: Path) -> None:
    env, world = world_env, world_env.world
    ctx = env.context()
    ctx.policies = load_policies(_tight_policies(tmp_path))

    def approved(plan: CategoryPlan) -> bool:
        return plan.category != TIGHT

    outcome = run_all(ctx, approved=approved)
    stores = policy_stores()
    cells = ledger_cells(run_entries(env.engine, ctx.run_id), stores)

    assert set(cells) == {(c, s) for c, ss in stores.items() for s in ss}
    expected = world.expected_counts_after_nightly()
    tables = {p.id: p.records.table for p in ctx.policies.policies}
    blocked = {p.id for p in ctx.policies.policies if TIGHT in p.after}
    assert blocked, "a category that runs after the held-back one shows blocking"
    for category, table in tables.items():
        # The system's own tables (access reports) have no rows in a generated world: nothing due.
        none = {"deleted": 0, "anonymised": 0, "kept_hold": 0}
        cell, want = cells[(category, "database")], expected.get(table, none)
        if category == TIGHT or category in blocked:
            assert (cell.erased, cell.anonymised, cell.verified) == (0, 0, None)
            assert ("awaiting approval" if category == TIGHT else f"blocked by {TIGHT}") in cell.note
            continue
        assert (cell.erased, cell.anonymised) == (want["deleted"], want["anonymised"]), category
        assert cell.kept.get("legal_hold", 0) == want["kept_hold"], category
        assert cell.verified is True, category
    assert cells[("translation_documents", "s3")].erased == world.files.versions_gone
    assert cells[("translation_documents", "sftp")].erased == world.files.archive_files_gone
    assert (
        cells[("translation_documents", "s3")].verified and cells[("translation_documents", "sftp")].verified
    )

    text = render_table(cells)
    lines = text.splitlines()
    assert len(lines) == 2 + len(cells) + 2
    assert lines[-1].split()[:4] == [
        "total",
        str(sum(c.erased for c in cells.values())),
        str(sum(c.anonymised for c in cells.values())),
        str(sum(sum(c.kept.values()) for c in cells.values())),
    ]
    tight_row = next(line for line in lines if line.startswith(TIGHT))
    assert "awaiting approval" in tight_row

    # What the demo prints after the run: the table, then finish_nightly's summary as it comes from XCom.
    assert outcome.summary is not None
    printed = nightly_summary(
        env.engine, RunOutcome("retention_nightly", ctx.run_id, "success"), to_json(outcome.summary)
    )
    totals = outcome.summary.totals
    assert f"finish_nightly: erased {totals.erased}, anonymised {totals.anonymised}" in printed
    assert f"not erased: {TIGHT}: awaiting approval" in printed
    for cid in range(1, world.size.customers + 1):
        canary = world.canaries(cid)
        for value in (canary.name, canary.email, canary.phone):
            assert value not in text


def test_the_ledger_of_a_run_that_did_not_happen_gives_empty_cells(world_env: WorldEnv) -> None:
    from retention.ledger import Ledger

    Ledger(world_env.engine).ensure_schema()
    cells = ledger_cells(run_entries(world_env.engine, "no_such_run"), policy_stores())
    assert all(c.erased == c.anonymised == 0 and c.verified is None and not c.kept for c in cells.values())
    assert "total" in render_table(cells)


def test_the_demo_plants_what_no_policy_manages_and_prints_the_sweep_from_the_ledger(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from retention.coverage import database_coverage
    from retention.ledger import Ledger, LedgerEntry
    from retention.sweep import SweepRun
    from retention_airflow.sweep_tasks import coverage_entry

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'business.db'}")
    archive = tmp_path / "archive"
    archive.mkdir()
    plant_unmanaged(engine, archive)
    policies = load_policies(POLICY_DIR)
    findings = database_coverage(engine, policies)
    assert {f.place for f in findings} >= {UNCOVERED_TABLE, f"{UNCOVERED_TABLE}.email"}
    for rel in STRAY_FILES:  # older than the sweep's grace (7 days)
        assert (archive / rel).stat().st_mtime < time.time() - 29 * 86400

    ledger = Ledger(engine)
    ledger.ensure_schema()
    root = "sftp:*"
    counts = {"orphans": 2, "reported": 2, "erased": 0, "held": 0, "recent": 31}
    run = SweepRun("sweep_demo", datetime.now(UTC), False, 1000, policies.hash, (root,))
    ledger.append_many(
        [
            LedgerEntry(
                run_id=run.run_id,
                store="sftp",
                location=root,
                action="orphan_sweep",
                outcome="summary",
                count=2,
                detail=counts,
            ),
            coverage_entry(run, findings),
        ]
    )
    printed = sweep_summary(engine, RunOutcome(SWEEP, run.run_id, "failed"))
    assert "Orphan sweep sweep_demo: failed" in printed
    assert next(line for line in printed.splitlines() if root in line).split() == [
        root,
        "2",
        "2",
        "0",
        "0",
        "31",
    ]
    assert f"check_coverage: {len(findings)} finding(s)" in printed
    assert f"uncovered table {UNCOVERED_TABLE}: no policy names it" in printed
    assert "A red retention_sweep" in printed
    assert "@example.org" not in printed
    engine.dispose()


def test_the_erasure_customer_has_kept_invoices_archived_files_and_no_hold(world_env: WorldEnv) -> None:
    world = world_env.world
    cid = choose_customer(world)
    inventory = world.customer_inventory(cid)
    assert cid not in world.held_customers
    assert inventory.rows["invoices"] & world.ids("invoices", Fate.NOT_DUE)
    assert inventory.archive_paths and inventory.s3_objects


def test_prepare_demo_dir_empties_only_a_demo_dir(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    prepare_demo_dir(demo)
    (demo / "logs").mkdir()
    (demo / "logs" / "old.log").write_text("x")
    prepare_demo_dir(demo)
    assert sorted(p.name for p in demo.iterdir()) == [MARKER]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not the demo's")
    with pytest.raises(DemoError, match="not made by the demo"):
        prepare_demo_dir(foreign)
    assert (foreign / "keep.txt").read_text() == "not the demo's"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DemoError, match="not a directory"):
        prepare_demo_dir(a_file)


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``sleep`` processes (each in its own session) for the test; all are killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _sleep(started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "300"], start_new_session=True)
    started.append(proc)
    return proc


def test_stop_ends_the_recorded_processes_and_spares_a_reused_pid(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    demo = prepare_demo_dir(tmp_path / "demo")
    main, worker, stranger = _sleep(sleepers), _sleep(sleepers), _sleep(sleepers)
    real = ProcessRecord.of("worker", worker.pid)
    # Same pid, other start time: what the state file says after the pid went to another program.
    reused = ProcessRecord("stranger", stranger.pid, real.start_time - 1)
    State(main=ProcessRecord.of("demo", main.pid, group=False), processes=[real, reused]).save(demo)

    assert stop_demo(demo, timeout=10)
    assert main.wait(10) == -signal.SIGTERM
    assert worker.wait(10) == -signal.SIGTERM
    assert stranger.poll() is None, "a process the demo did not start was signalled"
    assert not stop_demo(demo, timeout=1), "nothing of the demo is left to stop"


def test_stop_without_a_demo_does_nothing(tmp_path: Path) -> None:
    assert not stop_demo(tmp_path / "nothing-here")
    demo = prepare_demo_dir(tmp_path / "demo")
    (demo / "state.json").write_text("{not json")
    assert not stop_demo(demo)


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    from harness.processes import terminate

    proc = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; sleep 300 & wait"],
        start_new_session=True,
    )
    try:
        time.sleep(0.3)
        record = ProcessRecord.of("stubborn", proc.pid)
        assert terminate([record], timeout=1) == ["stubborn"]
        assert proc.wait(10) == -signal.SIGKILL
        assert not record.alive()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_airflow_runs_on_loopback_and_reaches_the_sqlite_file_through_its_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention_airflow import clients

    path = tmp_path / "business.sqlite"
    env = airflow_env(
        tmp_path / "airflow",
        8123,
        {"jwt_secret": "j" * 40, "fernet_key": "f" * 44},
        {"business_db": sqlite_conn(path)},
        {"archive_root": "/srv/archive"},
    )
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "False"
    assert json.loads(env["AIRFLOW_VAR_RETENTION_SETTINGS"]) == {"archive_root": "/srv/archive"}
    components = airflow_components(8123)
    assert components["api-server"][1:] == ["--host", "127.0.0.1", "--port", "8123"]
    assert "--skip-serve-logs" in components["scheduler"] and "--skip-serve-logs" in components["triggerer"]
    assert not any("0.0.0.0" in v for v in env.values())  # noqa: S104 - asserting its absence

    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", env["AIRFLOW_CONN_BUSINESS_DB"])
    engine = clients.business_engine()
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (x INTEGER)"))
            busy_ms = conn.execute(sa.text("PRAGMA busy_timeout")).scalar_one()
    finally:
        engine.dispose()
    assert Path(str(engine.url.database)) == path and path.exists()
    assert busy_ms == 30_000


def test_state_survives_a_round_trip(tmp_path: Path) -> None:
    me = ProcessRecord.of("demo", os.getpid(), group=False)
    state = State(main=me, processes=[me], postgres_cluster=None, url="http://127.0.0.1:1", phase="running")
    state.save(tmp_path)
    assert State.load(tmp_path) == state
    assert me.alive()


def test_keys_are_written_for_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    write_private(path, "{}")
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_private(path, "{}")
