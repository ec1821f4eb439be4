"""``retention_airflow.housekeeping``: the window, and the purge on Airflow's own tables.

The purge runs on the tables of Airflow's models (``create_all``) in SQLite (foreign keys enforced,
as on the ``airflow_metadata`` connection) and in PostgreSQL, filled with runs in every state that
matters: old finished runs of the per-customer DAG (purged), its running, queued and recent runs,
and an old run of another DAG (all kept), with their task instances, XCom, event log, a trigger
two runs share, an asset event and an archive table left by ``airflow db clean``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.errors import TerminalError
from retention.policy import AirflowMetadata
from retention_airflow.housekeeping import MetadataPurge, Window, log_folder, window

NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
DAG = "customer_erasure"
OTHER = "retention_nightly"
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=2)
SCOPE = Window(dags=(DAG, "customer_access_report"), cutoff=NOW - timedelta(days=30), keep="P30D")

RUNS = {
    # (dag, run_id): (state, end_date)
    (DAG, "purged_success"): ("success", OLD),
    (DAG, "purged_failed"): ("failed", OLD),
    (DAG, "running"): ("running", None),
    (DAG, "queued"): ("queued", None),
    (DAG, "recent"): ("success", RECENT),
    (OTHER, "purged_success"): ("success", OLD),  # same run id, another DAG
}
PURGED = {(DAG, "purged_success"), (DAG, "purged_failed")}


# -- the window -----------------------------------------------------------------------------------


def test_the_window_counts_back_the_policy_s_period_in_copenhagen_time() -> None:
    scope = window(AirflowMetadata(), NOW)
    assert scope.keep == "P30D" and scope.dags == ("customer_erasure", "customer_access_report")
    assert scope.cutoff == datetime(2026, 5, 16, 2, 0, tzinfo=UTC)  # 04:00 CEST, 30 days back
    assert window(AirflowMetadata(keep="P1M", dags=[DAG]), NOW).cutoff == datetime(
        2026, 5, 15, 2, 0, tzinfo=UTC
    )


def test_a_run_s_keep_only_shortens_the_window() -> None:
    policy = AirflowMetadata(keep="P30D")
    assert window(policy, NOW, "P7D").cutoff == datetime(2026, 6, 8, 2, 0, tzinfo=UTC)
    assert (window(policy, NOW, "P0D").cutoff, window(policy, NOW, "P0D").keep) == (NOW, "P0D")
    assert window(policy, NOW, "P1Y") == window(policy, NOW), "a longer window than the policy's is ignored"
    for bad in ("30 days", "P", "P-1D", "PT1H"):
        with pytest.raises(TerminalError, match="keep must be an ISO-8601 period"):
            window(policy, NOW, bad)
    with pytest.raises(TerminalError, match="timezone-aware"):
        window(policy, NOW.replace(tzinfo=None))


def test_the_log_folder_must_use_airflow_s_layout_by_run() -> None:
    default = (
        "dag_id={{ ti.dag_id }}/run_id={{ ti.run_id }}/task_id={{ ti.task_id }}/"
        "{% if ti.map_index >= 0 %}map_index={{ ti.map_index }}/{% endif %}attempt={{ try_number }}.log"
    )
    assert log_folder("/opt/airflow/logs", default) == Path("/opt/airflow/logs")
    assert log_folder(None, default) is None
    with pytest.raises(TerminalError, match="log_filename_template"):
        log_folder("/opt/airflow/logs", "{{ ti.dag_id }}/{{ ti.run_id }}/{{ ti.task_id }}.log")
    with pytest.raises(TerminalError, match="absolute"):
        log_folder("logs", default)


# -- the purge ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables() -> dict[str, sa.Table]:
    from airflow.models import import_all_models
    from airflow.models.base import Base

    import_all_models()
    return dict(Base.metadata.tables)


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata(
    request: pytest.FixtureRequest, tmp_path: Path, tables: dict[str, sa.Table]
) -> Iterator[sa.Engine]:
    """Airflow's tables (SQLite with foreign keys on, or PostgreSQL) holding the runs of ``RUNS``."""
    from airflow.models.base import Base

    if request.param == "postgresql":
        engine: sa.Engine = request.getfixturevalue("fresh_db")
    else:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
        sa.event.listen(engine, "connect", lambda conn, _rec: conn.execute("PRAGMA foreign_keys=ON"))
    Base.metadata.create_all(engine)
    with engine.begin() as c:
        _fill(c, tables)
    yield engine
    engine.dispose()


def _fill(c: sa.Connection, t: dict[str, sa.Table]) -> None:
    c.execute(
        sa.insert(t["trigger"]),
        [{"id": i, "classpath": "x.Trigger", "kwargs": "{}", "created_date": OLD} for i in (1, 2)],
    )
    c.execute(
        sa.insert(t["asset"]), [{"id": 1, "name": "ledger", "uri": "x-retention://ledger", "group": "g"}]
    )
    for pk, ((dag, run_id), (state, end)) in enumerate(RUNS.items(), start=1):
        # the purged success run's trigger is its own; the failed one shares trigger 2 with "running"
        trigger = {"purged_success": 1, "purged_failed": 2, "running": 2}.get(run_id) if dag == DAG else None
        for table, row in _run_rows(pk, dag, run_id, state, end, trigger):
            c.execute(sa.insert(t[table]).values(**row))
    events = [
        (DAG, None, OLD, '{"conf": {"customer_id": "K-00042"}}'),  # a refused trigger: purged
        (DAG, "purged_failed", OLD, "{}"),  # of a purged run: purged
        (DAG, "queued", OLD, "{}"),  # of a queued run: kept with it
        (DAG, "recent", OLD, "{}"),  # of a run within the window: kept with it
        (DAG, None, RECENT, "{}"),  # within the window
        (OTHER, None, OLD, "{}"),  # another DAG
        (None, None, OLD, f'{{"entities": [{{"dag_id": "{DAG}"}}]}}'),  # a bulk request naming the DAG
        ("~", None, OLD, f'{{"dag_id": "{DAG}"}}'),
        (None, None, OLD, '{"dag_id": "customerXerasure"}'),  # the name as a LIKE pattern would match
    ]
    c.execute(
        sa.insert(t["log"]),
        [{"event": "e", "dag_id": d, "run_id": r, "dttm": at, "extra": x} for d, r, at, x in events],
    )
    c.execute(
        sa.text('CREATE TABLE "_airflow_deleted__log__20260101000000" (id INTEGER, dag_id TEXT, extra TEXT)')
    )
    c.execute(
        sa.text('INSERT INTO "_airflow_deleted__log__20260101000000" VALUES (1, :d, :x), (2, :o, :y)'),
        {"d": DAG, "o": OTHER, "x": "K-00042", "y": "another DAG's row"},
    )


def _run_rows(
    pk: int, dag: str, run_id: str, state: str, end: datetime | None, trigger: int | None
) -> list[tuple[str, dict[str, Any]]]:
    """A run and a row in every table that hangs off it, each holding ``mark(dag, run_id)``."""
    text = mark(dag, run_id)
    ti_id, history_id, callback_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    key = {"dag_id": dag, "run_id": run_id, "task_id": "prepare_run", "map_index": -1}
    hitl = {"options": ["Approve", "Reject"], "subject": text, "params": {"customer_id": text}}
    return [
        ("dag_run", {"id": pk, "dag_id": dag, "run_id": run_id, "run_type": "manual", "state": state,
                     "end_date": end, "run_after": OLD, "conf": {"customer_id": text}}),
        ("dag_run_note", {"dag_run_id": pk, "content": text}),
        ("task_instance", {**key, "id": ti_id, "pool": "default_pool", "trigger_id": trigger,
                           "rendered_map_index": text}),
        ("task_instance_note", {"ti_id": ti_id, "content": text}),
        ("hitl_detail", {"ti_id": ti_id, **hitl}),
        ("task_instance_history", {**key, "task_instance_id": history_id, "try_number": 1,
                                   "pool": "default_pool", "rendered_map_index": text}),
        ("hitl_detail_history", {"ti_history_id": history_id, **hitl}),
        ("rendered_task_instance_fields", {**key, "rendered_fields": {"op_kwargs": text}}),
        ("xcom", {**key, "dag_run_id": pk, "key": "run", "value": {"subject": text}, "timestamp": OLD}),
        ("callback", {"id": callback_id, "type": "deadline", "fetch_method": "import_path",
                      "data": {"kwargs": {"context": text}}, "priority_weight": 1}),
        ("deadline", {"id": uuid.uuid4(), "dagrun_id": pk, "deadline_time": OLD, "missed": False,
                      "callback_id": callback_id}),
        ("asset_event", {"asset_id": 1, "source_dag_id": dag, "source_run_id": run_id,
                         "extra": {"customer": text}, "timestamp": OLD}),
    ]  # fmt: skip


def mark(dag: str, run_id: str) -> str:
    return f"<{dag}:{run_id}>"


def dump(engine: sa.Engine) -> str:
    """Every column of every row of every table."""
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as c:
        return "\n".join(
            repr(tuple(row)) for table in meta.sorted_tables for row in c.execute(sa.select(table))
        )


def _state(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as c:
        return {
            "runs": set(c.execute(sa.text("SELECT dag_id, run_id FROM dag_run")).all()),
            "tis": set(c.execute(sa.text("SELECT dag_id, run_id FROM task_instance")).all()),
            "xcom": set(c.execute(sa.text("SELECT dag_id, run_id FROM xcom")).all()),
            "triggers": set(c.execute(sa.text("SELECT id FROM trigger")).scalars()),
            "events": c.execute(sa.text("SELECT source_run_id, source_dag_id, extra FROM asset_event")).all(),
            "log": c.execute(sa.text("SELECT dag_id, run_id, extra FROM log ORDER BY id")).all(),
            "archive": set(
                c.execute(sa.text('SELECT dag_id FROM "_airflow_deleted__log__20260101000000"')).scalars()
            ),
        }


def _logs(folder: Path) -> dict[str, Path]:
    """A task-log file per run, and two orphan folders (a run no longer in the DB): old and new."""
    paths = {f"{d}/{r}": folder / f"dag_id={d}/run_id={r}/task_id=t/attempt=1.log" for d, r in RUNS}
    paths["orphan_old"] = folder / f"dag_id={DAG}/run_id=gone_long_ago/task_id=t/attempt=1.log"
    paths["orphan_new"] = folder / f"dag_id={DAG}/run_id=gone_today/task_id=t/attempt=1.log"
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("customer_id=K-00042\n")
    long_ago = OLD.timestamp()
    for p in (paths["orphan_old"], paths["orphan_old"].parent, paths["orphan_old"].parents[1]):
        os.utime(p, (long_ago, long_ago))
    return paths


def test_a_dry_run_counts_what_the_purge_removes_and_changes_nothing(
    metadata: sa.Engine, tmp_path: Path
) -> None:
    paths = _logs(tmp_path / "logs")
    before = _state(metadata)

    counted = MetadataPurge(metadata, SCOPE, tmp_path / "logs").run(dry_run=True)

    assert _state(metadata) == before and all(p.exists() for p in paths.values())
    assert counted.verified is None and counted.runs == 2
    purged = MetadataPurge(metadata, SCOPE, tmp_path / "logs").run(dry_run=False)
    assert purged.verified is True and purged.left == {}
    assert (counted.rows, counted.log_files, counted.log_dirs) == (
        purged.rows,
        purged.log_files,
        purged.log_dirs,
    )


def test_the_purge_removes_old_finished_runs_of_the_dags_and_nothing_else(
    metadata: sa.Engine, tmp_path: Path
) -> None:
    paths = _logs(tmp_path / "logs")

    report = MetadataPurge(metadata, SCOPE, tmp_path / "logs").run(dry_run=False)

    state = _state(metadata)
    kept = set(RUNS) - PURGED
    assert state["runs"] == state["tis"] == state["xcom"] == kept
    # trigger 1 served only a purged run; trigger 2 is shared with the running run
    assert state["triggers"] == {2}
    emptied = {(r, d): x for r, d, x in state["events"]}
    assert len(emptied) == len(RUNS), "asset events stay: other DAGs' runs name them"
    assert {k for k, x in emptied.items() if x in ({}, "{}")} == {(r, d) for d, r in PURGED}
    assert state["log"] == [
        (DAG, "queued", "{}"),
        (DAG, "recent", "{}"),
        (DAG, None, "{}"),
        (OTHER, None, "{}"),
        (None, None, '{"dag_id": "customerXerasure"}'),
    ]
    assert state["archive"] == {OTHER}
    each = (
        "dag_run", "dag_run_note", "task_instance", "task_instance_note", "hitl_detail",
        "task_instance_history", "hitl_detail_history", "rendered_task_instance_fields", "xcom", "callback",
        "deadline", "asset_event",
    )  # fmt: skip
    assert report.rows == {**dict.fromkeys(each, 2), "trigger": 1, "log": 4, "archive_tables": 1}
    everything = dump(metadata)
    assert [run for run in RUNS if mark(*run) in everything] == [run for run in RUNS if run not in PURGED]
    assert "K-00042" not in everything
    assert report.runs == 2 and report.verified is True
    gone = {name for name, p in paths.items() if not p.exists()}
    assert gone == {f"{d}/{r}" for d, r in PURGED} | {"orphan_old"}
    assert (report.log_dirs, report.log_files) == (3, 3)
    assert not paths["orphan_old"].parents[1].exists()

    again = MetadataPurge(metadata, SCOPE, tmp_path / "logs").run(dry_run=False)
    assert (again.runs, again.rows, again.log_files, again.verified) == (0, {}, 0, True)


def test_links_in_the_log_folder_are_removed_never_followed(metadata: sa.Engine, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not Airflow's")
    run_dir = folder / f"dag_id={DAG}/run_id=purged_success"
    run_dir.mkdir(parents=True)
    (run_dir / "task_id=t").symlink_to(outside, target_is_directory=True)
    (folder / f"dag_id={DAG}/run_id=purged_failed").symlink_to(outside, target_is_directory=True)

    MetadataPurge(metadata, SCOPE, folder).run(dry_run=False)

    assert not run_dir.exists() and not (folder / f"dag_id={DAG}/run_id=purged_failed").is_symlink()
    assert (outside / "keep.txt").read_text() == "not Airflow's"


def test_a_dag_s_log_folder_that_is_a_link_stops_the_purge_before_the_database(
    metadata: sa.Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "run_id=purged_success").mkdir(parents=True)
    (folder / f"dag_id={DAG}").symlink_to(elsewhere, target_is_directory=True)
    before = _state(metadata)

    with pytest.raises(TerminalError, match="symbolic link: not followed"):
        MetadataPurge(metadata, SCOPE, folder).run(dry_run=False)

    assert _state(metadata) == before and (elsewhere / "run_id=purged_success").exists()


def test_a_run_that_is_queued_again_after_it_was_listed_stays(metadata: sa.Engine, tmp_path: Path) -> None:
    """Between listing the old runs and deleting them, a run may be cleared (queued again) in the UI:
    each batch takes its runs again, locked, and only those still finished and old go."""

    class StaleList(MetadataPurge):
        def _old_runs(self, dag_id: str) -> list[tuple[int, str]]:
            return [(pk, run_id) for pk, (dag, run_id) in enumerate(RUNS, start=1) if dag == dag_id]

    StaleList(metadata, SCOPE, None).run(dry_run=False)

    assert _state(metadata)["runs"] == set(RUNS) - PURGED
